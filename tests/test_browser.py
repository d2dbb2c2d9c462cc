"""What a person sees in a real browser: porter's login page, logout and error pages.

Headless Chromium (tests/browser_fixtures.py) in front of porter, the real OMERO.web and the
OMERO test server. Each test drives the page as a person would (fields, buttons, visible text)
and checks what the browser ended up holding.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from playwright.sync_api import Page

from proxy.csrf import COOKIE as CSRF_COOKIE
from tests.gateway_fixtures import Gateway, GatewayFactory
from tests.omero_sim.fixture import OmeroSim
from tests.porter_fixtures import PorterFactory, free_port
from tests.smtp_fixture import SmtpServer, settings_for

if TYPE_CHECKING:  # loaded by tests/conftest.py's pytest_plugins, so that pytest rewrites it
    from tests.browser_fixtures import Browser

SESSION_COOKIE = "porter_session"
PING = "/webclient/keepalive_ping/"


def url_of(client: Gateway, path: str) -> str:
    return str(client.make_url(path))


def path_of(page: Page) -> str:
    """The page's path and query, as the address bar shows them after the host."""
    parts = urlsplit(page.url)
    return f"{parts.path}?{parts.query}" if parts.query else parts.path


def log_in_on_form(page: Page, user: str, password: str) -> None:
    """Type into porter's login form, already open, and press the button."""
    page.get_by_label("User name").fill(user)
    page.get_by_label("Password").fill(password)
    with page.expect_navigation():
        page.get_by_role("button", name="Log in").click()


@dataclass(frozen=True)
class AfterLogin:
    title: str
    heading: str
    landed: str
    body: str
    cookies: list[dict[str, Any]]
    document_cookie: str
    urls: list[str]


async def test_login_form_in_a_browser_lands_on_the_page_asked_for_with_only_porters_cookies(
    gateway: GatewayFactory, omero_sim: OmeroSim, browser: Browser, tmp_path: Path
) -> None:
    client = await gateway()

    def steps(page: Page) -> AfterLogin:
        urls: list[str] = []
        page.on("request", lambda request: urls.append(request.url))
        page.goto(url_of(client, PING))
        # Not logged in: porter's login page, remembering where the person wanted to go.
        assert path_of(page) == "/porter/login?url=%2Fwebclient%2Fkeepalive_ping%2F"
        title, heading = page.title(), page.get_by_role("heading", level=1).inner_text()
        assert page.get_by_label("User name").is_editable()
        assert page.get_by_label("Password").get_attribute("type") == "password"
        log_in_on_form(page, "alice", omero_sim.users["alice"])
        return AfterLogin(
            title=title,
            heading=heading,
            landed=path_of(page),
            body=page.inner_text("body"),
            cookies=[dict(c) for c in page.context.cookies()],
            document_cookie=page.evaluate("document.cookie"),
            urls=urls,
        )

    seen = await browser.run(steps, failure_shot=tmp_path / "failure.png")
    assert seen.title == "OMERO — log in"
    assert seen.heading == "OMERO"
    # OMERO.web itself answers, as alice: her OMERO session was handed over behind the scenes.
    assert seen.landed == PING
    assert seen.body.strip() == "OK"
    [alice] = [s for s in omero_sim.sessions() if s["user"] == "alice"]
    omero_key = alice["key"]

    cookies = {c["name"]: c for c in seen.cookies}
    assert set(cookies) <= {SESSION_COOKIE, CSRF_COOKIE, "csrftoken"}
    assert cookies[SESSION_COOKIE]["httpOnly"] is True
    assert cookies[SESSION_COOKIE]["sameSite"] == "Lax"
    assert cookies[SESSION_COOKIE]["expires"] == -1  # gone when the browser closes
    assert "sessionid" not in cookies  # OMERO.web's session cookie stays with porter
    assert all(omero_key not in c["value"] for c in seen.cookies)
    # Page scripts cannot read porter's cookie; the key never was in any address loaded.
    assert SESSION_COOKIE not in seen.document_cookie
    assert omero_key not in seen.document_cookie
    assert seen.urls
    assert not any(omero_key in u or "bsession" in u for u in seen.urls)


@dataclass(frozen=True)
class FormState:
    alert: str
    username: str
    password: str
    landed: str
    cookies: list[str]


async def test_wrong_password_shows_the_error_keeps_the_name_and_empties_the_password(
    gateway: GatewayFactory, omero_sim: OmeroSim, browser: Browser, tmp_path: Path
) -> None:
    client = await gateway()

    def steps(page: Page) -> FormState:
        page.goto(url_of(client, "/porter/login"))
        log_in_on_form(page, "alice", "not-her-password-42")
        return FormState(
            alert=page.get_by_role("alert").inner_text(),
            username=page.get_by_label("User name").input_value(),
            password=page.get_by_label("Password").input_value(),
            landed=path_of(page),
            cookies=[c["name"] for c in page.context.cookies()],
        )

    seen = await browser.run(steps, failure_shot=tmp_path / "failure.png")
    assert seen.alert == "Wrong user name or password."
    assert seen.username == "alice"
    assert seen.password == ""
    assert seen.landed.startswith("/porter/login")
    assert SESSION_COOKIE not in seen.cookies
    assert [s for s in omero_sim.sessions() if s["user"] == "alice"] == []


@dataclass(frozen=True)
class AfterLogout:
    question: str
    notice: str
    landed: str
    cookies: list[str]
    ping_path: str


async def test_logout_button_ends_the_omero_session_and_the_login_page_says_so(
    gateway: GatewayFactory, omero_sim: OmeroSim, browser: Browser, tmp_path: Path
) -> None:
    client = await gateway()

    def steps(page: Page) -> AfterLogout:
        page.goto(url_of(client, "/porter/login"))
        log_in_on_form(page, "alice", omero_sim.users["alice"])
        assert [s["user"] for s in omero_sim.sessions()] == ["alice"]
        page.goto(url_of(client, "/porter/logout"))
        question = page.inner_text("body")
        with page.expect_navigation():
            page.get_by_role("button", name="Log out").click()
        notice = page.inner_text("body")
        landed = path_of(page)
        cookies = [c["name"] for c in page.context.cookies()]
        # Back to an OMERO.web page: the browser is sent to log in again.
        page.goto(url_of(client, PING))
        return AfterLogout(question, notice, landed, cookies, path_of(page))

    seen = await browser.run(steps, failure_shot=tmp_path / "failure.png")
    assert "Log out alice from OMERO?" in seen.question
    assert "You have been logged out." in seen.notice
    assert seen.landed == "/porter/login?logged_out=1"
    assert SESSION_COOKIE not in seen.cookies
    assert seen.ping_path.startswith("/porter/login?url=")
    # Closed on the OMERO server, not only forgotten by porter.
    assert omero_sim.sessions() == []
    assert omero_sim.stats()["sessions_closed"] == 1


@dataclass(frozen=True)
class ErrorPage:
    status: int
    request_id: str
    title: str
    heading: str
    body: str


def open_error_page(cookie: tuple[str, str], url: str) -> Callable[[Page], ErrorPage]:
    """Steps: open `url` holding porter's session cookie; what the error page shows."""

    def steps(page: Page) -> ErrorPage:
        page.context.add_cookies([{"name": cookie[0], "value": cookie[1], "url": url}])
        response = page.goto(url)
        assert response is not None
        return ErrorPage(
            status=response.status,
            request_id=response.headers["x-request-id"],
            title=page.title(),
            heading=page.get_by_role("heading", level=1).inner_text(),
            body=page.inner_text("body"),
        )

    return steps


def session_cookie(client: Gateway) -> tuple[str, str]:
    [value] = [c.value for c in client.session.cookie_jar if c.key == SESSION_COOKIE]
    return SESSION_COOKIE, value


async def test_unreachable_omero_web_shows_a_502_page_with_status_message_and_request_id(
    porter: PorterFactory, browser: Browser, tmp_path: Path
) -> None:
    # The porter fixture's logged-in session (porter's real store, as a login leaves it): a
    # login itself needs OMERO.web, which is the part that is down here.
    client = await porter(upstream=f"http://127.0.0.1:{free_port()}")
    steps = open_error_page(session_cookie(client), url_of(client, "/webclient/"))
    seen = await browser.run(steps, failure_shot=tmp_path / "failure.png")
    assert seen.status == 502
    assert seen.title == "502 Bad Gateway — OMERO"  # the login page's title (login_title)
    assert seen.heading == "502 Bad Gateway"
    assert "OMERO.web could not be reached." in seen.body
    assert f"Request id: {seen.request_id}." in seen.body
    assert re.fullmatch(r"[A-Za-z0-9._-]{8,64}", seen.request_id)
    assert "Traceback" not in seen.body


@dataclass(frozen=True)
class AfterFeedback:
    error_body: str
    request_id: str
    thanks_title: str
    thanks_body: str


async def test_500_page_feedback_form_reaches_the_admins_and_thanks_the_person(
    smtp_server: SmtpServer, porter: PorterFactory, browser: Browser, tmp_path: Path
) -> None:
    # The echo upstream stands in for OMERO.web answering 500 (the real one cannot be made
    # to fail on demand); porter replaces that page with its own, which has the form.
    client = await porter(sections={"mail": settings_for(smtp_server)})
    url = url_of(client, "/django-500/webclient/api/")
    comment = "I clicked on image 12 in the lab's dataset."

    def steps(page: Page) -> AfterFeedback:
        error = open_error_page(session_cookie(client), url)(page)
        assert error.status == 500
        page.get_by_label("What were you doing").fill(comment)
        with page.expect_navigation():
            page.get_by_role("button", name="Send to the administrators").click()
        return AfterFeedback(error.body, error.request_id, page.title(), page.inner_text("body"))

    seen = await browser.run(steps, failure_shot=tmp_path / "failure.png")
    assert "Something went wrong on our side." in seen.error_body
    assert f"Request id: {seen.request_id}." in seen.error_body
    assert seen.thanks_title == "Thank you — OMERO"
    assert "Your comment has been passed to the administrators." in seen.thanks_body
    # The OMERO.web error mail first, then the person's comment, quoting the request id.
    received = await smtp_server.inbox.wait_for(2)
    [feedback] = [m for m in received if comment in m.text]
    assert seen.request_id in feedback.text
