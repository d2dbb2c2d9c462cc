"""The first screens an admin and a visitor meet, in headless Chromium: porter's error pages
(404, 429, 502, 503) look like its login page (its stylesheet, title, logo and footer), the
login page follows `login_title` and `login_logo_file`, "Forgot your password?" gets OMERO
to mail a new password, and an OpenID button whose provider cannot be reached is disabled.
Screenshots of each page are saved in the test's directory."""

from __future__ import annotations

import asyncio
import io
from collections.abc import Callable
from dataclasses import dataclass, replace
from http import HTTPStatus
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from PIL import Image
from playwright.sync_api import Page

from auth.oidc_settings import OidcProviderSettings, OidcSettings
from proxy.settings import LoginSettings
from tests.gateway_fixtures import GatewayFactory
from tests.omero_sim.fixture import OmeroSim
from tests.porter_fixtures import PorterFactory, Upstream, free_port
from tests.session_fixtures import omero
from tests.test_browser import session_cookie, url_of
from tests.test_overload import storm_sections

if TYPE_CHECKING:
    from tests.browser_fixtures import Browser

SITE = "Example Imaging Facility"
FOOTER = f"{SITE} · served by omero-porter"


@pytest.fixture
def logo_file(tmp_path: Path) -> Path:
    path = tmp_path / "logo.png"
    out = io.BytesIO()
    Image.new("RGB", (120, 40), (31, 95, 174)).save(out, "PNG")
    path.write_bytes(out.getvalue())
    return path


def login_settings(logo: Path, **more: Any) -> LoginSettings:
    return LoginSettings(login_title=SITE, login_logo_file=str(logo), **more)


@dataclass(frozen=True)
class Screen:
    status: int
    title: str
    heading: str
    body: str
    footer: str
    card_radius: str  # from porter.css: the stylesheet was applied
    logo_width: int  # the logo image, loaded (0: broken)


def look(page: Page, status: int) -> Screen:
    return Screen(
        status=status,
        title=page.title(),
        heading=page.get_by_role("heading", level=1).inner_text(),
        body=page.inner_text("body"),
        footer=page.inner_text("footer"),
        card_radius=page.eval_on_selector("main.card", "e => getComputedStyle(e).borderRadius"),
        logo_width=page.eval_on_selector("img.logo", "e => e.complete ? e.naturalWidth : 0"),
    )


def visit(
    url: str, shot: Path, cookie: tuple[str, str] | None = None, times: int = 1
) -> Callable[[Page], Screen]:
    """Steps: open `url` (`times` times, the last one is seen), screenshot, what it shows."""

    def steps(page: Page) -> Screen:
        if cookie is not None:
            page.context.add_cookies([{"name": cookie[0], "value": cookie[1], "url": url}])
        response = None
        for _ in range(times):
            response = page.goto(url)
        assert response is not None
        page.screenshot(path=str(shot), full_page=True)
        return look(page, response.status)

    return steps


def assert_dressed(screen: Screen, status: int) -> None:
    phrase = HTTPStatus(status).phrase
    assert screen.status == status
    assert screen.title == f"{status} {phrase} — {SITE}"
    assert screen.heading == f"{status} {phrase}"
    assert screen.footer == FOOTER
    assert screen.card_radius == "10px"
    assert screen.logo_width == 120
    assert "Request id: " in screen.body


async def test_error_pages_wear_the_login_pages_stylesheet_title_logo_and_footer(
    porter: PorterFactory,
    echo_upstream: Upstream,
    omero_sim: OmeroSim,
    browser: Browser,
    logo_file: Path,
    tmp_path: Path,
) -> None:
    login = login_settings(logo_file)

    # 404: nothing at a /porter/ address
    client = await porter(sections={"login": login}, logged_in=False)
    seen = await browser.run(visit(url_of(client, "/porter/nothing"), tmp_path / "404.png"))
    assert_dressed(seen, 404)
    assert "There is nothing at this address." in seen.body

    # 429: a crawler past its network's public rate
    sections = {**storm_sections(omero_sim, public_rate=0.01, public_burst=1), "login": login}
    client = await porter(sections=sections, logged_in=False)
    seen = await browser.run(visit(url_of(client, "/busy/x"), tmp_path / "429.png", times=2))
    assert_dressed(seen, 429)
    assert "Try again in " in seen.body  # from Retry-After

    # 502: OMERO.web down, for a logged-in user
    client = await porter(sections={"login": login}, upstream=f"http://127.0.0.1:{free_port()}")
    steps = visit(url_of(client, "/webclient/"), tmp_path / "502.png", session_cookie(client))
    seen = await browser.run(steps)
    assert_dressed(seen, 502)
    assert "OMERO.web could not be reached." in seen.body

    # 503: every slot to OMERO.web busy past queue_timeout
    echo_upstream.state.threads, echo_upstream.state.service_time = 1, 1.0
    sections = {
        **storm_sections(omero_sim, upstream_slots=1, queue_timeout=0.05, public_rate=0),
        "login": login,
    }
    client = await porter(sections=sections, logged_in=False)
    holder = asyncio.create_task(client.get("/busy/holder"))
    await asyncio.sleep(0.2)
    seen = await browser.run(visit(url_of(client, "/busy/y"), tmp_path / "503.png"))
    (await holder).release()
    assert_dressed(seen, 503)
    assert "Try again in 1 second." in seen.body

    for status in (404, 429, 502, 503):
        assert (tmp_path / f"{status}.png").stat().st_size > 1000


async def test_the_login_page_follows_the_title_and_serves_its_logo_file(
    porter: PorterFactory, browser: Browser, logo_file: Path, tmp_path: Path
) -> None:
    client = await porter(sections={"login": login_settings(logo_file)}, logged_in=False)
    seen = await browser.run(visit(url_of(client, "/porter/login"), tmp_path / "login.png"))
    assert (seen.status, seen.title, seen.heading) == (200, f"{SITE} — log in", SITE)
    assert (seen.footer, seen.card_radius, seen.logo_width) == (FOOTER, "10px", 120)
    logo = await client.get("/porter/assets/logo")  # anonymous: porter serves it itself
    assert (logo.status, logo.content_type) == (200, "image/png")
    assert await logo.read() == logo_file.read_bytes()
    assert "sandbox" in logo.headers["Content-Security-Policy"]


@dataclass(frozen=True)
class Reset:
    link_text: str
    form_title: str
    notice: str
    path: str


def forgotten_password(login_url: str, user: str, email: str) -> Callable[[Page], Reset]:
    def steps(page: Page) -> Reset:
        page.goto(login_url)
        link = page.get_by_role("link", name="Forgot your password?")
        text = link.inner_text()
        with page.expect_navigation():
            link.click()
        title = page.title()
        page.get_by_label("User name").fill(user)
        page.get_by_label("E-mail address of your account").fill(email)
        with page.expect_navigation():
            page.get_by_role("button", name="Mail me a new password").click()
        notice = page.get_by_role("status").inner_text()
        return Reset(text, title, notice, page.url)

    return steps


async def test_forgot_your_password_gets_omero_to_mail_a_new_one_and_says_the_same_always(
    gateway: GatewayFactory, omero_sim: OmeroSim, browser: Browser, logo_file: Path
) -> None:
    client = await gateway(sections={"login": login_settings(logo_file)})
    login_url = url_of(client, "/porter/login")
    done = await browser.run(forgotten_password(login_url, "alice", "alice@example.org"))
    assert done.link_text == "Forgot your password?"
    assert done.form_title == f"Forgotten password — {SITE}"
    assert "has mailed a new password" in done.notice
    assert done.path.endswith("/porter/forgot-password")
    assert omero_sim.stats()["password_resets"] == 1  # OMERO was asked, with the right pair

    wrong = await browser.run(forgotten_password(login_url, "alice", "mallory@example.org"))
    assert wrong.notice == done.notice  # nothing to learn about who has an account
    stats = omero_sim.stats()
    assert (stats["password_resets"], stats["password_reset_refusals"]) == (1, 1)
    assert stats["sessions_active"] == 0  # the guest sessions were closed


async def test_forgotten_password_requests_are_throttled_apart_from_logins(
    gateway: GatewayFactory, omero_sim: OmeroSim, logo_file: Path
) -> None:
    client = await gateway(sections={"login": login_settings(logo_file, max_failures_per_user=2)})
    statuses = []
    for _ in range(3):
        page = await (await client.get("/porter/forgot-password")).text()
        token = page.split('name="csrf_token" value="', 1)[1].split('"', 1)[0]
        form = {"csrf_token": token, "username": "bob", "email": "bob@example.org"}
        statuses.append((await client.post("/porter/forgot-password", data=form)).status)
    assert statuses == [200, 200, 429]
    assert omero_sim.stats()["password_reset_refusals"] == 2  # bob has no e-mail address
    # bob's login is not locked by someone asking for his password
    page = await (await client.get("/porter/login")).text()
    token = page.split('name="csrf_token" value="', 1)[1].split('"', 1)[0]
    form = {"csrf_token": token, "username": "bob", "password": omero_sim.users["bob"]}
    assert (await client.post("/porter/login", data=form, allow_redirects=False)).status == 303


async def test_no_forgot_link_or_page_when_turned_off_or_without_passwords(
    porter: PorterFactory, logo_file: Path
) -> None:
    for login in (
        login_settings(logo_file, show_forgot_password=False),
        replace(login_settings(logo_file), password_login=False),
    ):
        sections: dict[str, Any] = {"login": login}
        if not login.password_login:
            sections["oidc"] = OidcSettings(
                providers=(
                    OidcProviderSettings(
                        id="idp",
                        display_name="Example ID",
                        issuer=f"http://127.0.0.1:{free_port()}",
                        client_id="porter",
                        client_secret="x" * 32,
                    ),
                )
            )
        client = await porter(sections=sections, logged_in=False)
        page = await (await client.get("/porter/login")).text()
        assert "Forgot your password?" not in page
        assert (await client.get("/porter/forgot-password")).status == 404


async def test_an_openid_button_whose_provider_cannot_be_reached_is_disabled_with_a_note(
    porter: PorterFactory, browser: Browser, logo_file: Path, tmp_path: Path
) -> None:
    provider = OidcProviderSettings(
        id="idp",
        display_name="Example ID",
        issuer=f"http://127.0.0.1:{free_port()}",  # nobody there
        client_id="porter",
        client_secret="x" * 32,
    )
    client = await porter(
        sections={"login": login_settings(logo_file), "oidc": OidcSettings(providers=(provider,))},
        logged_in=False,
    )
    await asyncio.sleep(0.5)  # the start-up discovery fails (connection refused)

    def steps(page: Page) -> tuple[str | None, str | None, str, bool]:
        page.goto(url_of(client, "/porter/login"))
        page.screenshot(path=str(tmp_path / "login-oidc-down.png"), full_page=True)
        button = page.locator("a.provider")
        note = page.locator(".provider-note").inner_text()
        return (
            button.get_attribute("aria-disabled"),
            button.get_attribute("href"),
            note,
            page.get_by_label("User name").is_visible(),
        )

    disabled, href, note, form = await browser.run(steps)
    assert (disabled, href) == ("true", None)
    assert note == "Example ID cannot be reached at the moment; reload this page in a minute."
    assert form  # the password form still works


async def test_bad_forgotten_password_requests_get_clear_answers(
    porter: PorterFactory, omero_sim: OmeroSim, logo_file: Path
) -> None:
    sections = {"login": login_settings(logo_file), "omero": omero(omero_sim)}
    client = await porter(sections=sections, logged_in=False)

    async def post(**form: str) -> tuple[int, str]:
        page = await (await client.get("/porter/forgot-password")).text()
        token = page.split('name="csrf_token" value="', 1)[1].split('"', 1)[0]
        resp = await client.post("/porter/forgot-password", data={"csrf_token": token, **form})
        return resp.status, await resp.text()

    status, page = await post(username="alice")  # no e-mail address
    assert (status, "Please enter your user name and the e-mail" in page) == (400, True)
    forged = await client.post(
        "/porter/forgot-password",
        data={"csrf_token": "forged", "username": "alice", "email": "alice@example.org"},
    )
    assert forged.status == 403
    assert "The form had expired" in await forged.text()
    status, page = await post(username="alice", email="alice@example.org", server="9")
    assert (status, "Please choose a server from the list." in page) == (400, True)
    omero_sim.down()
    try:
        status, page = await post(username="alice", email="alice@example.org")
    finally:
        omero_sim.up()
    assert (status, "The OMERO server is not responding" in page) == (503, True)
    assert omero_sim.stats()["password_resets"] == 0
