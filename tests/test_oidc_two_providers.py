"""The same OpenID flows in a browser against two independent providers: panva's
oidc-provider on Node, and django-oauth-toolkit from the Python registry
(tests/dot_provider/). Each provider's own pages differ (Provider.sign_in and
Provider.confirm_logout); porter's side is the same."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import pytest
from yarl import URL

from auth.oidc_settings import OidcSettings
from proxy.settings import LoginSettings, ProxySettings
from tests.dot_fixture import DotProvider
from tests.gateway_fixtures import Gateway
from tests.oidc_fixture import TestProvider
from tests.omero_sim.fixture import OmeroSim
from tests.porter_fixtures import OPERATOR, OPERATOR_TOKEN
from tests.test_oidc import PING, full_login, oidc_porter, user_sessions
from tests.web_fixture import OmeroWeb

__all__ = ["oidc_porter"]


@dataclass
class Provider:
    """One provider as a browser meets it."""

    name: str
    label: str
    oidc: Callable[..., OidcSettings]
    settings: Callable[..., Any]
    host: str

    def sign_in(self, page: Any, login: str) -> None:
        if self.name == "node":  # oidc-provider's development pages, then its consent
            page.fill("input[name=login]", login)
            page.fill("input[name=password]", "whatever")
            page.get_by_role("button", name="Sign-in").click()
            page.get_by_role("button", name="Continue").click()
        else:  # Django's login form; the client skips consent
            page.fill("input[name=username]", login)
            page.fill("input[name=password]", f"{login}-pass")
            page.get_by_role("button", name="Log in").click()

    def confirm_logout(self, page: Any) -> None:
        name = "Yes, sign me out" if self.name == "node" else "Logout"
        page.get_by_role("button", name=name).click()


@pytest.fixture(params=["node", "dot"])
def provider(request: pytest.FixtureRequest) -> Provider:
    if request.param == "node":
        node: TestProvider = request.getfixturevalue("oidc_provider")
        return Provider("node", "Test Institution", node.oidc, node.settings, node.issuer)
    dot: DotProvider = request.getfixturevalue("dot_provider")
    return Provider("dot", "Django Institution", dot.oidc, dot.settings, dot.issuer)


@dataclass
class Journey:
    buttons: list[str]
    provider_origin: str
    landed: str
    body: str
    after_logout: str
    notice: str
    committed: list[str]


async def test_log_in_and_out_in_a_browser_at_each_provider(
    oidc_porter: Callable[..., Awaitable[Gateway]],
    provider: Provider,
    omero_sim: OmeroSim,
    browser: Any,
    tmp_path: Any,
) -> None:
    client = await oidc_porter(provider.oidc())
    before = user_sessions(omero_sim, "alice")
    base = str(client.make_url(""))

    def steps(page: Any) -> Journey:
        committed: list[str] = []
        page.on("framenavigated", lambda frame: committed.append(frame.url))
        page.goto(base + PING)
        buttons = [b.inner_text() for b in page.locator("a.provider").all()]
        page.get_by_role("link", name=f"Log in with {provider.label}").click()
        page.wait_for_selector("input[type=password]")
        origin = str(URL(page.url).origin())
        provider.sign_in(page, "alice")
        page.wait_for_url(base + PING)
        landed, body = URL(page.url).path, page.inner_text("body")
        page.goto(base + "/porter/logout")
        page.get_by_role("button", name="Log out").click()
        provider.confirm_logout(page)
        page.wait_for_url(base + "/porter/login?logged_out=1")
        notice = page.get_by_role("status").inner_text()
        return Journey(buttons, origin, landed, body, URL(page.url).path_qs, notice, committed)

    seen = await browser.run(steps, failure_shot=tmp_path / "failure.png")
    assert seen.buttons == [f"Log in with {provider.label}"]
    assert seen.provider_origin == str(URL(provider.host).origin())
    assert (seen.landed, seen.body.strip()) == (PING, "OK")
    assert (seen.after_logout, seen.notice) == (
        "/porter/login?logged_out=1",
        "You have been logged out.",
    )
    assert not [u for u in seen.committed if "code=" in u or "state=" in u]
    assert user_sessions(omero_sim, "alice") == before  # her OMERO session closed


@dataclass
class Switch:
    refusal: str
    committed: list[str]
    landed: str
    body: str


async def test_a_refused_user_switches_accounts_at_each_provider(
    oidc_porter: Callable[..., Awaitable[Gateway]],
    provider: Provider,
    omero_sim: OmeroSim,
    browser: Any,
    tmp_path: Any,
) -> None:
    """SSO only: "nogroup" is refused; "Log in as someone else" ends the provider's session
    and comes back to a login that asks (prompt=login); alice gets in."""
    settings = provider.settings(group_required=True)
    client = await oidc_porter(provider.oidc(settings), login=LoginSettings(password_login=False))
    base = str(client.make_url(""))

    def steps(page: Any) -> Switch:
        committed: list[str] = []
        page.on("framenavigated", lambda frame: committed.append(frame.url))
        page.goto(base + PING)
        provider.sign_in(page, "nogroup")
        page.wait_for_selector("[role=alert]")
        refusal = page.inner_text("[role=alert]")
        page.get_by_role("link", name="Log in as someone else").click()
        provider.confirm_logout(page)
        provider.sign_in(page, "alice")
        page.wait_for_url(base + PING)
        return Switch(refusal, committed, URL(page.url).path, page.inner_text("body"))

    seen = await browser.run(steps, failure_shot=tmp_path / "failure.png")
    assert f"None of your groups at {provider.label}" in seen.refusal
    assert (seen.landed, seen.body.strip()) == (PING, "OK")
    assert not [u for u in seen.committed if "code=" in u or "state=" in u]


async def test_logins_pass_across_key_rotations_at_django_oauth_toolkit(
    oidc_porter: Callable[..., Awaitable[Gateway]],
    dot_provider: DotProvider,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, "porter")
    client = await oidc_porter(dot_provider.oidc())
    status, _, cookie, _ = await full_login(client, "alice")
    assert (status, bool(cookie)) == (303, True)
    dot_provider.rotate()  # twice within a second: each new key signs the next ID tokens
    dot_provider.rotate()
    for login in ("bob", "carol"):
        status, location, cookie, _ = await full_login(client, login)
        assert (status, location, bool(cookie)) == (303, PING, True), login
    assert "ID token refused" not in caplog.text
    # the keys porter loaded: one at the first login, then all three after the rotations
    # (the ID token named a kid porter had not seen: one refetch, not a 401)
    loaded = [r.getMessage() for r in caplog.records if "key(s) loaded" in r.getMessage()]
    assert [m.rsplit(": ", 1)[1] for m in loaded] == ["1 key(s) loaded", "3 key(s) loaded"]


async def test_django_oauth_toolkit_sends_no_back_channel_logout_and_porter_says_so(
    oidc_porter: Callable[..., Awaitable[Gateway]],
    dot_provider: DotProvider,
    omero_web: OmeroWeb,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, "porter")
    proxy = ProxySettings(upstream=omero_web.base_url, operator_token=OPERATOR_TOKEN)
    client = await oidc_porter(dot_provider.oidc(), proxy=proxy)
    status, _, cookie, _ = await full_login(client, "alice")
    assert (status, bool(cookie)) == (303, True)
    assert "does not support back-channel logout" in caplog.text
    async with client.get("/porter/readyz", headers=OPERATOR) as resp:
        detail = (await resp.json())["checks"]["oidc"]["detail"]
    assert detail == "ok; no back-channel logout from idp"
