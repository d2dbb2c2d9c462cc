"""OpenID Connect login and logout against a real OpenID provider (panva's oidc-provider),
real OMERO.web and the OMERO test server.

The refusals a certified provider never produces (an ID token of another audience or issuer,
an expired one, alg none) come from `Rogue`: a hostile provider made for these tests, which
speaks the protocol and signs what the test asks for.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import logging
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import jwt
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm
from yarl import URL

from auth.oidc import BACKCHANNEL_EVENT, PreLogin, PreLoginSealer, parse_discovery
from auth.oidc_settings import OidcProviderSettings, OidcSettings
from auth.omero_settings import OmeroSettings
from auth.sso_settings import SsoSettings
from proxy.app import create_app
from proxy.keys import OIDC_PROVIDERS, SESSION_STORE
from proxy.settings import LoginSettings, ProxySettings, Settings
from tests.gateway_fixtures import Gateway
from tests.oidc_fixture import TestProvider, log_in_at_provider
from tests.omero_sim.fixture import OmeroSim
from tests.web_fixture import OmeroWeb

SESSION_COOKIE = "porter_session"
PING = "/webclient/keepalive_ping/"
ClientMaker = Callable[..., Awaitable[TestClient[Any, Any]]]


def porter_settings(
    sim: OmeroSim,
    web_: OmeroWeb,
    oidc: OidcSettings,
    *,
    sso: SsoSettings | None = None,
    login: LoginSettings | None = None,
    **sections: Any,
) -> Settings:
    entry = sim.server_list_entry()
    sections.setdefault("proxy", ProxySettings(upstream=web_.base_url))
    return Settings(
        omero=OmeroSettings(
            server_list=((entry[0], entry[1], entry[2]),),
            admin_user="root",
            admin_password=sim.users["root"],
            call_timeout=5.0,
        ),
        login=login or LoginSettings(),
        sso=sso or SsoSettings(),
        oidc=oidc,
        **sections,
    )


@pytest.fixture
def oidc_porter(
    aiohttp_client: ClientMaker,
    omero_sim: OmeroSim,
    omero_web: OmeroWeb,
    oidc_provider: TestProvider,
) -> Callable[..., Awaitable[Gateway]]:
    """Porter on port A of the provider's registration (its callback URL is registered)."""

    async def make(
        oidc: OidcSettings | None = None,
        configure: Callable[[web.Application], None] | None = None,
        **settings: Any,
    ) -> Gateway:
        config = porter_settings(omero_sim, omero_web, oidc or oidc_provider.oidc(), **settings)
        app = create_app(config)
        if configure is not None:
            configure(app)
        client: Gateway = await aiohttp_client(app, server_kwargs={"port": oidc_provider.ports[0]})
        return client

    return make


def user_sessions(sim: OmeroSim, user: str) -> dict[str, str]:
    """The live OMERO sessions of `user`: key -> group."""
    return {s["key"]: s["group"] for s in sim.sessions() if s["user"] == user}


async def start_login(
    client: Gateway, provider: str = "idp", url: str = PING, browser: Any = None
) -> URL:
    """Porter's button: the provider's authorization URL porter redirects to."""
    browser = browser or client.session
    async with browser.get(
        client.make_url(f"/porter/oidc/{provider}/login"),
        params={"url": url},
        allow_redirects=False,
    ) as resp:
        assert resp.status == 302, await resp.text()
        return URL(resp.headers["Location"])


async def callback(
    client: Gateway, url: URL, browser: Any = None
) -> tuple[int, str, str | None, str]:
    """Porter's callback: status, Location, the porter session cookie set (if any), body."""
    async with (browser or client.session).get(url, allow_redirects=False) as resp:
        cookie = resp.cookies.get(SESSION_COOKIE)
        value = cookie.value if cookie is not None and cookie.value else None
        return resp.status, resp.headers.get("Location", ""), value, await resp.text()


async def full_login(
    client: Gateway, login: str, browser: Any = None
) -> tuple[int, str, str | None, str]:
    """A whole login at the provider through `browser` (default: the client's session)."""
    browser = browser or client.session
    authorization = await start_login(client, browser=browser)
    back = await log_in_at_provider(browser, str(authorization), login)
    return await callback(client, back, browser)


# -- the whole flow in a browser --------------------------------------------------------------


@dataclass
class Journey:
    login_page_buttons: list[str]
    provider_host: str
    landed: str
    body: str
    committed: list[str]
    after_logout: str
    logout_notice: str
    cookies: list[dict[str, Any]] = field(default_factory=list)


async def test_browser_logs_in_at_the_provider_lands_in_omero_web_and_logs_out_everywhere(
    oidc_porter: Callable[..., Awaitable[Gateway]],
    oidc_provider: TestProvider,
    omero_sim: OmeroSim,
    browser: Any,
    tmp_path: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    client = await oidc_porter()
    before = user_sessions(omero_sim, "alice")
    base = str(client.make_url(""))
    provider_host = URL(oidc_provider.issuer).authority

    def steps(page: Any) -> Journey:
        committed: list[str] = []
        page.on("framenavigated", lambda frame: committed.append(frame.url))
        page.goto(base + PING)
        buttons = [b.inner_text() for b in page.locator("a.provider").all()]
        page.get_by_role("link", name="Log in with Test Institution").click()
        page.wait_for_selector("input[name=login]")
        host = URL(page.url).authority
        page.fill("input[name=login]", "alice")
        page.fill("input[name=password]", "whatever")
        page.get_by_role("button", name="Sign-in").click()
        page.get_by_role("button", name="Continue").click()
        page.wait_for_url(base + PING)
        landed, body = URL(page.url).path, page.inner_text("body")
        cookies = [dict(c) for c in page.context.cookies()]
        page.goto(base + "/porter/logout")
        page.get_by_role("button", name="Log out").click()
        page.get_by_role("button", name="Yes, sign me out").click()
        page.wait_for_url(base + "/porter/login?logged_out=1")
        return Journey(
            buttons,
            host,
            landed,
            body,
            committed,
            URL(page.url).path_qs,
            page.get_by_role("status").inner_text(),
            cookies,
        )

    seen = await browser.run(steps, failure_shot=tmp_path / "failure.png")
    assert seen.login_page_buttons == ["Log in with Test Institution"]
    assert seen.provider_host == provider_host  # the provider's own login page
    # Back in OMERO.web as alice, in the group her claim maps to (lab-staff -> lab).
    assert seen.landed == PING
    assert seen.body.strip() == "OK"
    # The code and state only ever passed in a redirect: no page the browser kept has them.
    assert seen.committed
    assert not [u for u in seen.committed if "code=" in u or "state=" in u]
    porter_cookies = {c["name"] for c in seen.cookies if c["domain"] == "127.0.0.1"}
    assert "porter_oidc" not in porter_cookies
    assert "sessionid" not in porter_cookies
    # Logged out of porter, of OMERO (the session closed) and of the provider.
    assert seen.after_logout == "/porter/login?logged_out=1"
    assert seen.logout_notice == "You have been logged out."
    assert user_sessions(omero_sim, "alice") == before
    # porter's own log (aiohttp's access log, which prints whole URLs, is off in porter)
    text = "\n".join(r.getMessage() for r in caplog.records if r.name.startswith("porter"))
    assert "OIDC login user=alice provider=idp group=lab" in text
    assert "code=" not in text
    assert "eyJ" not in text
    assert "porter-client-secret" not in text


async def test_login_goes_to_the_group_the_claims_name(
    oidc_porter: Callable[..., Awaitable[Gateway]], omero_sim: OmeroSim
) -> None:
    client = await oidc_porter()
    before = user_sessions(omero_sim, "carol")
    status, location, cookie, _ = await full_login(client, "carol")
    assert (status, location) == (303, PING)
    assert cookie
    made = {k: g for k, g in user_sessions(omero_sim, "carol").items() if k not in before}
    assert list(made.values()) == ["other-lab"]  # not carol's default group, lab
    async with client.get(PING, allow_redirects=False) as resp:
        assert resp.status == 200
        assert (await resp.text()).strip() == "OK"


# -- refusals: each a clear status, and nobody logged in --------------------------------------


async def refused(client: Gateway, url: URL, status: int, words: str) -> str:
    """The callback at `url` refuses: a 303 to porter's login page that carries only a short
    code (never the provider's code or state), which says `words` with `status`. Returns the
    code."""
    got, location, cookie, body = await callback(client, url)
    assert got == 303, body
    assert cookie is None
    landed = URL(location)
    assert landed.path == "/porter/login"
    assert set(landed.query) <= {"oidc_error", "provider", "url"}
    assert "code=" not in location
    assert "state=" not in location
    assert url.query.get("code", "-") not in location
    async with client.get(location, allow_redirects=False) as resp:
        assert resp.status == status
        body = await resp.text()
    alert = re.search(r'role="alert">([^<]*)<', body)
    assert alert is not None, body
    assert words in alert.group(1)
    async with client.get(PING, allow_redirects=False) as resp:
        assert resp.status == 302  # still not logged in: to porter's login page
    return landed.query["oidc_error"]


async def test_a_tampered_or_missing_state_is_refused(
    oidc_porter: Callable[..., Awaitable[Gateway]], omero_sim: OmeroSim
) -> None:
    client = await oidc_porter()
    before = user_sessions(omero_sim, "alice")
    back = await log_in_at_provider(client.session, str(await start_login(client)), "alice")
    await refused(client, back.update_query(state=back.query["state"][:-2] + "xx"), 400, "again")
    back = await log_in_at_provider(client.session, str(await start_login(client)), "alice")
    missing = back.with_query({k: v for k, v in back.query.items() if k != "state"})
    await refused(client, missing, 400, "again")
    # Without the pre-login cookie (another browser, or an attacker's link): refused as well.
    back = await log_in_at_provider(client.session, str(await start_login(client)), "alice")
    client.session.cookie_jar.clear(lambda c: c.key == "porter_oidc")
    await refused(client, back, 400, "too long or was started in another window")
    assert user_sessions(omero_sim, "alice") == before


async def test_a_replayed_code_is_refused(
    oidc_porter: Callable[..., Awaitable[Gateway]], omero_sim: OmeroSim
) -> None:
    client = await oidc_porter()
    authorization = await start_login(client)
    sealed = client.session.cookie_jar.filter_cookies(client.make_url("/porter/oidc/idp/callback"))
    back = await log_in_at_provider(client.session, str(authorization), "bob")
    status, _, cookie, _ = await callback(client, back)
    assert status == 303
    assert cookie
    # The same callback again, with the pre-login cookie an attacker kept: porter has seen
    # this login come back already and logs nobody in (before the provider is asked; the
    # provider would refuse the used code too).
    attacker = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))
    async with attacker:
        attacker.cookie_jar.update_cookies(
            {"porter_oidc": sealed["porter_oidc"].value},
            client.make_url("/porter/oidc/idp/callback"),
        )
        async with attacker.get(back, allow_redirects=False) as resp:
            assert resp.status == 303
            assert SESSION_COOKIE not in resp.cookies or not resp.cookies[SESSION_COOKIE].value
            assert URL(resp.headers["Location"]).query["oidc_error"] == "replayed"
        async with attacker.get(client.make_url(resp.headers["Location"])) as resp:
            assert resp.status == 400
            assert "too long or was started in another window" in await resp.text()


async def test_a_wrong_nonce_is_refused(
    oidc_porter: Callable[..., Awaitable[Gateway]], omero_sim: OmeroSim
) -> None:
    client = await oidc_porter()
    before = user_sessions(omero_sim, "alice")
    authorization = await start_login(client)
    # The provider signs the nonce it was sent: not the one porter sealed for this browser.
    swapped = authorization.update_query(nonce="an-attackers-nonce-" + "x" * 24)
    back = await log_in_at_provider(client.session, str(swapped), "alice")
    await refused(client, back, 401, "could not be verified")
    assert user_sessions(omero_sim, "alice") == before


async def test_an_id_token_signed_with_another_algorithm_is_refused(
    oidc_porter: Callable[..., Awaitable[Gateway]], oidc_provider: TestProvider
) -> None:
    # The provider signs this client's ID tokens with HS256 (the client secret); porter pins
    # RS256: an algorithm switch, refused before any key is tried.
    client = await oidc_porter(oidc_provider.oidc(oidc_provider.settings(client="porter-hs")))
    back = await log_in_at_provider(client.session, str(await start_login(client)), "alice")
    await refused(client, back, 401, "could not be verified")


@pytest.mark.parametrize(
    ("login", "status", "words"),
    [
        ("mallory", 403, "not known to OMERO"),  # at the provider, not in OMERO
        ("sysop", 403, "administrators cannot sign in"),  # an OMERO admin
        ("root", 403, "admin"),  # never reachable, whatever the configuration
        ("nogroup", 403, "None of your groups at Test Institution"),  # group_required
        ("bob", 403, "may not sign in"),  # deny_users
    ],
)
async def test_users_porter_may_not_log_in_get_a_clear_page(
    oidc_porter: Callable[..., Awaitable[Gateway]],
    oidc_provider: TestProvider,
    omero_sim: OmeroSim,
    login: str,
    status: int,
    words: str,
) -> None:
    settings = oidc_provider.settings()
    if login == "nogroup":
        settings = oidc_provider.settings(group_required=True, group_map=())
    sso = SsoSettings(deny_users=("bob",) if login == "bob" else ())
    client = await oidc_porter(oidc_provider.oidc(settings), sso=sso)
    before = {s["key"] for s in omero_sim.sessions()}
    back = await log_in_at_provider(client.session, str(await start_login(client)), login)
    await refused(client, back, status, words)
    # no OMERO session left open (porter's own admin session, held to make them, aside)
    left = {s["user"] for s in omero_sim.sessions() if s["key"] not in before}
    assert left <= {"root"}


async def test_a_group_the_user_is_not_in_is_refused_and_its_session_closed(
    oidc_porter: Callable[..., Awaitable[Gateway]], oidc_provider: TestProvider, omero_sim: OmeroSim
) -> None:
    settings = oidc_provider.settings(group_map=(("lab-staff", "other-lab"),))
    client = await oidc_porter(oidc_provider.oidc(settings))
    before = user_sessions(omero_sim, "alice")
    back = await log_in_at_provider(client.session, str(await start_login(client)), "alice")
    await refused(client, back, 403, "not a member of the OMERO group")
    assert user_sessions(omero_sim, "alice") == before


async def test_a_user_in_several_groups_gets_the_first_mapped_group_they_are_a_member_of(
    oidc_porter: Callable[..., Awaitable[Gateway]],
    oidc_provider: TestProvider,
    omero_sim: OmeroSim,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # alice is in lab in OMERO, not in other-lab or public-data: the first two pairs are
    # tried and passed over, and she lands in lab, with no OMERO session left behind
    caplog.set_level(logging.INFO, "porter")
    mapping = (
        ("imaging-core", "other-lab"),
        ("public-readers", "public-data"),
        ("lab-staff", "lab"),
    )
    client = await oidc_porter(oidc_provider.oidc(oidc_provider.settings(group_map=mapping)))
    before = user_sessions(omero_sim, "alice")
    status, location, cookie, _ = await full_login(client, "alice-many")
    assert (status, location) == (303, PING)
    assert cookie
    made = {k: g for k, g in user_sessions(omero_sim, "alice").items() if k not in before}
    assert list(made.values()) == ["lab"]
    assert "OIDC login user=alice provider=idp group=lab" in caplog.text


async def test_a_user_in_none_of_several_mapped_groups_is_told_so_plainly(
    oidc_porter: Callable[..., Awaitable[Gateway]],
    oidc_provider: TestProvider,
    omero_sim: OmeroSim,
) -> None:
    mapping = (("imaging-core", "other-lab"), ("public-readers", "public-data"))
    client = await oidc_porter(oidc_provider.oidc(oidc_provider.settings(group_map=mapping)))
    before = user_sessions(omero_sim, "alice")
    back = await log_in_at_provider(client.session, str(await start_login(client)), "alice-many")
    code = await refused(
        client, back, 403, "None of your groups at Test Institution gives access to OMERO here"
    )
    assert code == "no_group"
    assert user_sessions(omero_sim, "alice") == before


@dataclass
class Switch:
    refusal: str
    buttons: list[str]
    authorizations: list[str]
    landed: str
    body: str
    committed: list[str]


async def test_a_refused_user_logs_in_as_someone_else_through_the_providers_logout(
    oidc_porter: Callable[..., Awaitable[Gateway]],
    oidc_provider: TestProvider,
    omero_sim: OmeroSim,
    browser: Any,
    tmp_path: Any,
) -> None:
    """SSO only, one provider: "nogroup" is refused; without a way out, every try would go
    through the provider's live session and back to the same refusal."""
    settings = oidc_provider.settings(group_required=True)
    client = await oidc_porter(
        oidc_provider.oidc(settings), login=LoginSettings(password_login=False)
    )
    base = str(client.make_url(""))
    authorize = oidc_provider.issuer + "/auth"

    def steps(page: Any) -> Switch:
        committed: list[str] = []
        authorizations: list[str] = []
        page.on("framenavigated", lambda frame: committed.append(frame.url))
        page.on(
            "request",
            lambda r: authorizations.append(r.url) if r.url.startswith(authorize + "?") else None,
        )
        page.goto(base + PING)  # straight to the provider: nothing to choose
        page.fill("input[name=login]", "nogroup")
        page.fill("input[name=password]", "whatever")
        page.get_by_role("button", name="Sign-in").click()
        page.get_by_role("button", name="Continue").click()
        page.wait_for_selector("[role=alert]")
        refusal = page.inner_text("[role=alert]")
        buttons = [b.inner_text() for b in page.locator("a.provider").all()]
        page.get_by_role("link", name="Log in as someone else").click()
        page.get_by_role("button", name="Yes, sign me out").click()
        # back from the provider's logout: a login there that asks who it is
        page.fill("input[name=login]", "alice")
        page.fill("input[name=password]", "whatever")
        page.get_by_role("button", name="Sign-in").click()
        page.get_by_role("button", name="Continue").click()
        page.wait_for_url(base + PING)
        return Switch(
            refusal,
            buttons,
            authorizations,
            URL(page.url).path,
            page.inner_text("body"),
            committed,
        )

    seen = await browser.run(steps, failure_shot=tmp_path / "failure.png")
    assert "None of your groups at Test Institution" in seen.refusal
    assert "Log in as someone else" in seen.buttons
    # the first login as usual; the one after the switch must ask (prompt=login)
    assert len(seen.authorizations) == 2, "\n".join(seen.authorizations)
    assert "prompt" not in URL(seen.authorizations[0]).query
    assert URL(seen.authorizations[1]).query["prompt"] == "login"
    assert (seen.landed, seen.body.strip()) == (PING, "OK")
    assert not [u for u in seen.committed if "code=" in u or "state=" in u]
    assert [s for s in omero_sim.sessions() if s["user"] == "bob"] == []  # nogroup is bob


async def test_switching_accounts_without_a_provider_logout_asks_the_provider_to_ask(
    oidc_porter: Callable[..., Awaitable[Gateway]], oidc_provider: TestProvider
) -> None:
    settings = oidc_provider.settings(end_session=False, group_required=True)
    client = await oidc_porter(oidc_provider.oidc(settings))
    back = await log_in_at_provider(client.session, str(await start_login(client)), "nogroup")
    await refused(client, back, 403, "None of your groups")
    # the provider's session is live: a plain login goes straight back, no login form
    async with client.session.get(await start_login(client), allow_redirects=True) as resp:
        assert 'name="login"' not in await resp.text()
    async with client.get(
        "/porter/oidc/idp/switch", params={"url": "/webclient/x"}, allow_redirects=False
    ) as resp:
        assert resp.status == 302
        authorization = URL(resp.headers["Location"])
    assert authorization.query["prompt"] == "login"
    async with client.session.get(authorization) as resp:
        assert 'name="login"' in await resp.text()  # the provider asks who it is
    back = await log_in_at_provider(client.session, str(authorization), "alice")
    status, location, cookie, _ = await callback(client, back)
    assert (status, location, bool(cookie)) == (303, "/webclient/x", True)
    # a browser logged in to porter confirms its logout first: a link logs nobody out
    async with client.get("/porter/oidc/idp/switch", allow_redirects=False) as resp:
        assert (resp.status, resp.headers["Location"]) == (303, "/porter/logout")
    async with client.get(PING, allow_redirects=False) as resp:
        assert resp.status == 200
    async with client.get("/porter/oidc/nosuch/switch", allow_redirects=False) as resp:
        assert resp.status == 404


@pytest.mark.parametrize("password_login", [False, True])
async def test_logout_without_a_porter_session_ends_the_providers_session(
    oidc_porter: Callable[..., Awaitable[Gateway]],
    oidc_provider: TestProvider,
    password_login: bool,
) -> None:
    client = await oidc_porter(login=LoginSettings(password_login=password_login))
    async with client.get("/porter/logout", allow_redirects=False) as resp:
        assert resp.status == 303
        location = resp.headers["Location"]
    if not password_login:  # SSO only: the account switch, to a login that asks
        assert location == "/porter/oidc/idp/switch"
        async with client.get(location, allow_redirects=False) as resp:
            location = resp.headers["Location"]
            assert "porter_relogin" in resp.cookies
        back = URL(location).query["post_logout_redirect_uri"]
        assert back == str(client.make_url("/porter/oidc/idp/relogin"))
    else:  # password logins too: out at the provider, then porter's own login page
        back = URL(location).query["post_logout_redirect_uri"]
        assert back == str(client.make_url("/porter/login?logged_out=1"))
    assert location.startswith(oidc_provider.issuer + "/session/end")
    assert "state" not in URL(location).query


# -- a hostile provider ------------------------------------------------------------------------


class Rogue:
    """A hostile OpenID provider: it answers the protocol, and its ID tokens carry `claims`
    over the usual ones, made by `sign` (RS256 with its own key unless a test says). A test
    may also replace `token`, its token endpoint."""

    def __init__(self) -> None:
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.issuer = ""
        self.claims: dict[str, Any] = {}
        self.sign: Callable[[dict[str, Any]], str] = self.rs256
        self.nonces: dict[str, str] = {}
        self.token: Callable[[web.Request], Awaitable[web.StreamResponse]] = self.id_token
        self.redeemed: list[str] = []  # every code sent to its token endpoint
        self.access_token: str | None = None  # sent with the ID token when set
        self.error: str | None = None  # its authorization answer: error= instead of a code
        self.userinfo: Callable[[web.Request], Awaitable[web.StreamResponse]] | None = None

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/.well-known/openid-configuration", self.discovery)
        app.router.add_get("/jwks", self.jwks)
        app.router.add_get("/auth", self.auth)
        app.router.add_post("/token", self.token_endpoint)
        app.router.add_get("/userinfo", self.userinfo_endpoint)
        return app

    async def userinfo_endpoint(self, request: web.Request) -> web.StreamResponse:
        if self.userinfo is None:
            raise web.HTTPNotFound()
        return await self.userinfo(request)

    async def token_endpoint(self, request: web.Request) -> web.StreamResponse:
        self.redeemed.append(str((await request.post()).get("code")))
        return await self.token(request)  # looked up now: a test may have replaced it

    def oidc(
        self, userinfo: bool = False, provider: dict[str, Any] | None = None, **settings: Any
    ) -> OidcSettings:
        """Porter's [oidc] for this provider (client "porter"); `provider`: more of its
        [[oidc.providers]] settings."""
        made = OidcProviderSettings(
            id="idp",
            issuer=self.issuer,
            client_id="porter",
            client_secret="x" * 32,
            userinfo=userinfo,
            **(provider or {}),
        )
        return OidcSettings(providers=(made,), **settings)

    def rs256(self, claims: dict[str, Any]) -> str:
        return jwt.encode(claims, self.key, algorithm="RS256", headers={"kid": "rogue"})

    async def discovery(self, request: web.Request) -> web.Response:
        return web.json_response(
            {
                "issuer": self.issuer,
                "authorization_endpoint": self.issuer + "/auth",
                "token_endpoint": self.issuer + "/token",
                "jwks_uri": self.issuer + "/jwks",
                "userinfo_endpoint": self.issuer + "/userinfo",
            }
        )

    async def jwks(self, request: web.Request) -> web.Response:
        jwk = json.loads(RSAAlgorithm.to_jwk(self.key.public_key()))
        return web.json_response({"keys": [{**jwk, "kid": "rogue", "alg": "RS256"}]})

    async def auth(self, request: web.Request) -> web.Response:
        code = f"code-{len(self.nonces)}"
        self.nonces[code] = request.query["nonce"]
        answer = {"code": code} if self.error is None else {"error": self.error}
        target = URL(request.query["redirect_uri"]).with_query(
            **answer, state=request.query["state"]
        )
        raise web.HTTPFound(str(target))

    async def id_token(self, request: web.Request) -> web.StreamResponse:
        form = await request.post()
        now = int(time.time())
        claims = {
            "iss": self.issuer,
            "aud": "porter",
            "sub": "alice",
            "preferred_username": "alice",
            "iat": now,
            "exp": now + 300,
            "nonce": self.nonces[str(form["code"])],
            **self.claims,
        }
        claims = {k: v for k, v in claims.items() if v is not None}
        answer = {"id_token": self.sign(claims), "token_type": "Bearer"}
        if self.access_token is not None:
            answer["access_token"] = self.access_token
        return web.json_response(answer)


@pytest.fixture
async def rogue(aiohttp_server: Callable[..., Awaitable[TestServer]]) -> Rogue:
    provider = Rogue()
    server = await aiohttp_server(provider.app())
    provider.issuer = str(server.make_url("")).rstrip("/")
    return provider


async def rogue_callback(client: Gateway, rogue: Rogue) -> URL:
    """Porter's redirect to the rogue and the rogue's redirect back (not yet followed)."""
    authorization = await start_login(client)
    async with client.session.get(authorization, allow_redirects=False) as resp:
        return URL(resp.headers["Location"])


def hs256(claims: dict[str, Any], secret: bytes) -> str:
    def part(value: bytes) -> str:
        return base64.urlsafe_b64encode(value).rstrip(b"=").decode()

    head = part(json.dumps({"alg": "HS256", "kid": "rogue"}).encode())
    body = part(json.dumps(claims).encode())
    mac = hmac.new(secret, f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{part(mac)}"


def unsigned(claims: dict[str, Any]) -> str:
    def part(value: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()

    return f"{part({'alg': 'none', 'kid': 'rogue'})}.{part(claims)}."


@pytest.mark.parametrize(
    ("case", "change", "words"),
    [
        ("another audience", {"aud": "some-other-client"}, "could not be verified"),
        ("another party (azp)", {"aud": ["porter", "x"], "azp": "x"}, "not meant for this site"),
        ("another issuer", {"iss": "https://evil.example"}, "could not be verified"),
        ("expired", {"exp": int(time.time()) - 3600}, "could not be verified"),
        ("no nonce", {"nonce": None}, "could not be verified"),
        ("HS256 with the public key as secret", "hs256", "could not be verified"),
        ("alg none", "unsigned", "could not be verified"),
    ],
)
async def test_id_tokens_a_hostile_provider_makes_are_refused(
    aiohttp_client: ClientMaker,
    rogue: Rogue,
    omero_sim: OmeroSim,
    omero_web: OmeroWeb,
    case: str,
    change: Any,
    words: str,
) -> None:
    if change == "hs256":
        public = RSAAlgorithm.to_jwk(rogue.key.public_key()).encode()
        rogue.sign = lambda claims: hs256(claims, public)
    elif change == "unsigned":
        rogue.sign = unsigned
    else:
        rogue.claims = change
    app = create_app(porter_settings(omero_sim, omero_web, rogue.oidc()))
    client: Gateway = await aiohttp_client(app)
    before = user_sessions(omero_sim, "alice")
    await refused(client, await rogue_callback(client, rogue), 401, words)
    assert user_sessions(omero_sim, "alice") == before, case


# -- the login page ----------------------------------------------------------------------------


async def test_password_login_off_hides_the_form_and_refuses_passwords(
    oidc_porter: Callable[..., Awaitable[Gateway]], oidc_provider: TestProvider, omero_sim: OmeroSim
) -> None:
    client = await oidc_porter(login=LoginSettings(password_login=False))
    # One provider and no form: the login page goes straight to it.
    async with client.get("/porter/login", params={"url": PING}, allow_redirects=False) as resp:
        assert resp.status == 303
        assert resp.headers["Location"] == "/porter/oidc/idp/login?url=/webclient/keepalive_ping/"
    async with client.get("/porter/login?logged_out=1") as resp:
        page = await resp.text()
        assert "Log in with Test Institution" in page
        assert 'name="password"' not in page
    async with client.post(
        "/porter/login", data={"username": "alice", "password": omero_sim.users["alice"]}
    ) as resp:
        assert resp.status == 403
    async with client.get("/api/v0/token/") as resp:
        csrf = (await resp.json())["data"]
    async with client.post(
        "/api/v0/login/",
        data={"username": "alice", "password": omero_sim.users["alice"], "server": "1"},
        headers={"X-CSRFToken": csrf},
    ) as resp:
        assert resp.status == 403
        assert "turned off" in (await resp.json())["message"]


async def test_a_provider_that_cannot_be_reached_gets_a_503_page_not_a_500(
    oidc_porter: Callable[..., Awaitable[Gateway]], oidc_provider: TestProvider
) -> None:
    # The discovery document names the issuer without the slash: it is not this issuer.
    wrong = oidc_provider.settings(issuer=oidc_provider.issuer + "/")
    client = await oidc_porter(oidc_provider.oidc(wrong))
    async with client.get("/porter/oidc/idp/login", allow_redirects=False) as resp:
        assert resp.status == 503
        assert "not available at the moment" in await resp.text()
    async with client.get("/porter/readyz") as resp:
        assert resp.status == 200  # advisory: password login and sessions work without it
        assert (await resp.json())["degraded"] == ["oidc"]
    async with client.get("/porter/oidc/nosuch/login", allow_redirects=False) as resp:
        assert resp.status == 404


def test_discovery_must_name_the_configured_issuer_and_support_s256() -> None:
    doc = {
        "issuer": "https://idp.example",
        "authorization_endpoint": "https://idp.example/auth",
        "token_endpoint": "https://idp.example/token",
        "jwks_uri": "https://idp.example/jwks",
    }
    assert (
        parse_discovery(json.dumps(doc).encode(), "https://idp.example").end_session_endpoint
        is None
    )
    with pytest.raises(ValueError, match="names issuer"):
        parse_discovery(json.dumps(doc).encode(), "https://other.example")
    with pytest.raises(ValueError, match="S256"):
        parse_discovery(
            json.dumps({**doc, "code_challenge_methods_supported": ["plain"]}).encode(),
            "https://idp.example",
        )


def test_the_pre_login_cookie_cannot_be_read_changed_or_kept() -> None:
    sealer = PreLoginSealer("s" * 32)
    pre = PreLogin.start("idp", "/webclient/", 600)
    sealed = sealer.seal(pre)
    assert sealer.open(sealed) == pre
    assert pre.verifier not in sealed
    assert pre.nonce not in sealed
    flipped = sealed[:20] + ("A" if sealed[20] != "A" else "B") + sealed[21:]
    assert sealer.open(flipped) is None
    assert PreLoginSealer("t" * 32).open(sealed) is None  # another secret
    assert sealer.open(sealed, now=time.time() + 601) is None  # expired
    assert sealer.open("") is None
    assert sealer.open("x" * 5000) is None


# -- back-channel logout ----------------------------------------------------------------------


def logout_token(provider: TestProvider, **claims: Any) -> str:
    now = int(time.time())
    values = {
        "iss": provider.issuer,
        "aud": "porter",
        "iat": now,
        "exp": now + 120,
        "jti": f"jti-{time.monotonic_ns()}",
        "sub": "bob",
        "events": {BACKCHANNEL_EVENT: {}},
        **claims,
    }
    return provider.sign({k: v for k, v in values.items() if v is not None})


async def test_backchannel_logout_tokens_are_verified(
    oidc_porter: Callable[..., Awaitable[Gateway]], oidc_provider: TestProvider, omero_sim: OmeroSim
) -> None:
    client = await oidc_porter()
    status, _, cookie, _ = await full_login(client, "bob")
    assert status == 303
    assert cookie

    async def post(token: str | None) -> int:
        data = {} if token is None else {"logout_token": token}
        async with client.post("/porter/oidc/backchannel", data=data) as resp:
            assert resp.headers["Cache-Control"].startswith("no-store")
            return resp.status

    bad = {
        "no token": None,
        "garbage": "not-a-jwt",
        "another audience": logout_token(oidc_provider, aud="someone-else"),
        "no event": logout_token(oidc_provider, events=None),
        "an ID token (nonce)": logout_token(oidc_provider, nonce="n"),
        "neither sid nor sub": logout_token(oidc_provider, sub=None),
        "issued long ago": logout_token(oidc_provider, iat=int(time.time()) - 3600),
        "expired": logout_token(oidc_provider, exp=int(time.time()) - 3600),
        "no jti": logout_token(oidc_provider, jti=None),
        "forged signature": logout_token(oidc_provider)[:-6] + "AAAAAA",
        "too large": logout_token(oidc_provider, padding="x" * 9000),
    }
    for case, token in bad.items():
        assert await post(token) == 400, case
    async with client.get(PING, allow_redirects=False) as resp:
        assert resp.status == 200  # none of them ended bob's session
    token = logout_token(oidc_provider)  # by sub: every session of bob at this provider
    assert await post(token) == 200
    assert await post(token) == 400  # the same jti again: a replay
    async with client.get(PING, allow_redirects=False) as resp:
        assert resp.status == 302


async def test_provider_logout_reaches_a_session_made_by_another_porter_process(
    oidc_porter: Callable[..., Awaitable[Gateway]],
    oidc_provider: TestProvider,
    omero_sim: OmeroSim,
    omero_web: OmeroWeb,
    redis_server: Any,
    porter_process: Callable[..., Any],
) -> None:
    from tests.redis_fixture import redis_sessions

    store = redis_sessions(redis_server)
    secret = "shared-secret-" + "k" * 32
    client = await oidc_porter(
        session=store, proxy=ProxySettings(upstream=omero_web.base_url, secret_key=secret)
    )
    entry = omero_sim.server_list_entry()
    provider = {k: v for k, v in vars(oidc_provider.settings()).items() if v is not None}
    provider["group_map"] = [list(pair) for pair in provider["group_map"]]
    other = porter_process(
        {
            "omero": {
                "server_list": [list(entry[:3])],
                "admin_user": "root",
                "admin_password": omero_sim.users["root"],
            },
            "session": {
                "store": "redis",
                "redis_url": store.redis_url,
                "redis_password": store.redis_password,
                "redis_key_prefix": store.redis_key_prefix,
            },
            # B sends its users back to A: a login B starts, A must be able to finish
            "oidc": {"providers": [provider], "public_url": str(client.make_url("/"))},
        },
        port=oidc_provider.ports[1],
        upstream=omero_web.base_url,
        secret_key=secret,
    )
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as browser:
        async with browser.get(
            f"{other.url}/porter/oidc/idp/login", params={"url": PING}, allow_redirects=False
        ) as resp:
            assert resp.status == 302
            authorization = URL(resp.headers["Location"])
        callback_a = str(client.make_url("/porter/oidc/idp/callback"))
        assert authorization.query["redirect_uri"] == callback_a
        back = await log_in_at_provider(browser, str(authorization), "carol")
        # on A, with the state B sealed (the cookie names the host, not the port)
        status, location, cookie, _ = await callback(client, back, browser)
        assert (status, location) == (303, PING)
        assert cookie
    before = user_sessions(omero_sim, "alice")
    status, _, cookie, _ = await full_login(client, "alice")
    assert status == 303
    assert cookie
    assert len(user_sessions(omero_sim, "alice")) == len(before) + 1
    # The user logs out at the provider (its own end-session page, confirmed): the provider
    # tells porter B by back-channel; the session porter A made ends.
    async with client.session.get(oidc_provider.issuer + "/session/end") as resp:
        page = await resp.text()
    action, xsrf = _logout_form(page, oidc_provider.issuer)
    async with client.session.post(
        action, data={"xsrf": xsrf, "logout": "yes"}, allow_redirects=False
    ) as resp:
        assert resp.status in (302, 303)
    async with client.get(PING, allow_redirects=False) as resp:
        assert resp.status == 302  # logged out: on to porter's login page
    assert user_sessions(omero_sim, "alice") == before  # and the OMERO session closed
    assert "OIDC back-channel logout provider=idp by=sid sessions=1" in other.log()
    assert "backchannel logout to porter sent" in oidc_provider.log()


def _logout_form(page: str, issuer: str) -> tuple[str, str]:
    """The provider's "Yes, sign me out" form: its action and its xsrf token."""
    form = re.search(r'<form[^>]*id="op.logoutForm"[^>]*>', page)
    assert form is not None, page
    action = re.search(r'action="([^"]+)"', form.group(0))
    xsrf = re.search(r'name="xsrf" value="([^"]+)"', page)
    assert action is not None, page
    assert xsrf is not None, page
    return str(URL(issuer).join(URL(action.group(1)))), xsrf.group(1)


async def test_one_backchannel_logout_by_sub_ends_every_browser_of_that_user(
    oidc_porter: Callable[..., Awaitable[Gateway]], oidc_provider: TestProvider
) -> None:
    client = await oidc_porter()
    store = client.app[SESSION_STORE]
    jars = [aiohttp.CookieJar(unsafe=True) for _ in range(3)]
    browsers = [aiohttp.ClientSession(cookie_jar=jar) for jar in jars]
    try:
        for browser, login in zip(browsers, ("bob", "bob", "carol"), strict=True):
            status, _, cookie, _ = await full_login(client, login, browser)
            assert status == 303
            assert cookie
        assert await store.count() == 3
        async with client.post(
            "/porter/oidc/backchannel", data={"logout_token": logout_token(oidc_provider)}
        ) as resp:
            assert resp.status == 200
        statuses = []
        for browser in browsers:
            async with browser.get(client.make_url(PING), allow_redirects=False) as resp:
                statuses.append(resp.status)
        assert statuses == [302, 302, 200]  # bob's two sessions ended, carol's kept
    finally:
        for browser in browsers:
            await browser.close()


@dataclass
class Shots:
    plain: bytes
    error: bytes
    card_radius: str
    button_background: str
    alert: str
    alert_color: str


async def test_login_page_screenshots_with_and_without_an_error(
    oidc_porter: Callable[..., Awaitable[Gateway]],
    oidc_provider: TestProvider,
    browser: Any,
    tmp_path: Any,
) -> None:
    login = LoginSettings(login_title="Imaging Facility")
    client = await oidc_porter(login=login)
    base = str(client.make_url(""))

    def steps(page: Any) -> Shots:
        page.set_viewport_size({"width": 900, "height": 760})
        page.goto(base + "/porter/login")
        plain = page.screenshot(path=str(tmp_path / "login.png"), full_page=True)
        radius = page.eval_on_selector("main.card", "e => getComputedStyle(e).borderRadius")
        background = page.eval_on_selector(
            "button.primary", "e => getComputedStyle(e).backgroundColor"
        )
        page.get_by_label("User name").fill("alice")
        page.get_by_label("Password").fill("not-her-password")
        with page.expect_navigation():
            page.get_by_role("button", name="Log in", exact=True).click()
        error = page.screenshot(path=str(tmp_path / "login-error.png"), full_page=True)
        alert = page.get_by_role("alert")
        color = alert.evaluate("e => getComputedStyle(e).color")
        return Shots(plain, error, radius, background, alert.inner_text(), color)

    shots = await browser.run(steps, failure_shot=tmp_path / "failure.png")
    for png in (shots.plain, shots.error):
        assert png.startswith(b"\x89PNG\r\n\x1a\n")
        width = int.from_bytes(png[16:20], "big")
        assert width == 900
    assert shots.plain != shots.error
    # porter's stylesheet is applied (a CSP-allowed file, not inline styles)
    assert shots.card_radius == "10px"
    assert shots.button_background == "rgb(31, 95, 174)"
    assert shots.alert == "Wrong user name or password."
    assert shots.alert_color == "rgb(179, 38, 30)"


async def test_a_dead_session_store_gives_503_never_500(
    oidc_porter: Callable[..., Awaitable[Gateway]],
    oidc_provider: TestProvider,
    omero_sim: OmeroSim,
    omero_web: OmeroWeb,
    redis_server_factory: Callable[[], Any],
) -> None:
    from tests.redis_fixture import redis_sessions, stopped

    server = redis_server_factory()
    client = await oidc_porter(session=redis_sessions(server))
    status, _, cookie, _ = await full_login(client, "bob")
    assert status == 303
    assert cookie
    before = user_sessions(omero_sim, "alice")
    back = await log_in_at_provider(client.session, str(await start_login(client)), "alice")
    with stopped(server):
        got, location, cookie, body = await callback(client, back)
        assert got == 303, body
        assert cookie is None
        assert URL(location).query["oidc_error"] == "store_unavailable"
        async with client.get(location) as resp:
            assert resp.status == 503  # the login page cannot tell who is logged in either
        async with client.post(
            "/porter/oidc/backchannel", data={"logout_token": logout_token(oidc_provider)}
        ) as resp:
            assert resp.status == 503
    assert user_sessions(omero_sim, "alice") == before  # the session made was closed
    # Redis back: the provider's retry of the same logout is accepted
    async with client.post(
        "/porter/oidc/backchannel", data={"logout_token": logout_token(oidc_provider)}
    ) as resp:
        assert resp.status == 200
    async with client.get(PING, allow_redirects=False) as resp:
        assert resp.status == 302


class Broken:
    """An identity mapper with a bug: porter fails after the code and token are known."""

    def map(self, verified: Any) -> Any:
        raise RuntimeError("the mapper broke")


async def test_a_crash_in_the_callback_mails_no_code_token_or_secret(
    oidc_porter: Callable[..., Awaitable[Gateway]], smtp_server: Any
) -> None:
    from proxy.keys import SSO_MAPPER
    from tests.smtp_fixture import settings_for

    def break_mapper(app: web.Application) -> None:
        app[SSO_MAPPER] = Broken()  # type: ignore[misc]

    client = await oidc_porter(mail=settings_for(smtp_server), configure=break_mapper)
    authorization = await start_login(client)
    sealed = client.session.cookie_jar.filter_cookies(client.make_url("/porter/oidc/idp/callback"))
    back = await log_in_at_provider(client.session, str(authorization), "alice")
    got, _, cookie, body = await callback(client, back)
    assert got == 500
    assert cookie is None
    [received] = await smtp_server.inbox.wait_for(1)
    assert "the mapper broke" in received.text
    for secret in (
        back.query["code"],
        back.query["state"],
        sealed["porter_oidc"].value,
        "porter-client-secret",
        "eyJ",
    ):
        assert secret not in received.text
        assert secret not in body


@pytest.mark.parametrize(
    ("fault", "status", "words"),
    [
        ("hangs", 503, "not available at the moment"),  # past [oidc] timeout
        ("500", 503, "not available at the moment"),
        ("400", 401, "could not be completed"),  # e.g. invalid_grant
        ("no id_token", 401, "sent no ID token"),
        ("not json", 401, "sent no ID token"),
        ("huge", 503, "not available at the moment"),  # past porter's size limit
    ],
)
async def test_a_token_endpoint_that_fails_gets_a_defined_answer(
    aiohttp_client: ClientMaker,
    rogue: Rogue,
    omero_sim: OmeroSim,
    omero_web: OmeroWeb,
    fault: str,
    status: int,
    words: str,
) -> None:
    async def token(request: web.Request) -> web.StreamResponse:
        await request.post()
        if fault == "hangs":
            await asyncio.sleep(5)
        if fault in ("500", "400"):
            return web.json_response({"error": "invalid_grant"}, status=int(fault))
        if fault == "no id_token":
            return web.json_response({"access_token": "a", "token_type": "Bearer"})
        if fault == "huge":
            return web.Response(body=b"{" + b" " * (300 * 1024) + b"}")
        return web.Response(text="<html>not json</html>")

    rogue.token = token
    app = create_app(porter_settings(omero_sim, omero_web, rogue.oidc(timeout=0.5)))
    client: Gateway = await aiohttp_client(app)
    before = user_sessions(omero_sim, "alice")
    await refused(client, await rogue_callback(client, rogue), status, words)
    assert user_sessions(omero_sim, "alice") == before


async def test_an_openid_login_under_a_prefix_keeps_every_url_and_cookie_under_it(
    porter: Any,
    echo_upstream: Any,
    rogue: Rogue,
    omero_sim: OmeroSim,
) -> None:
    entry = omero_sim.server_list_entry()
    sections = {
        "omero": OmeroSettings(
            server_list=((entry[0], entry[1], entry[2]),),
            admin_user="root",
            admin_password=omero_sim.users["root"],
        ),
        "oidc": rogue.oidc(),
    }
    client = await porter(prefix="/omero", logged_in=False, sections=sections)
    async with client.get("/omero/porter/login") as resp:
        assert 'href="/omero/porter/oidc/idp/login?url=/omero/webclient/"' in await resp.text()
    async with client.get(
        "/omero/porter/oidc/idp/login", params={"url": "/omero/echo/x"}, allow_redirects=False
    ) as resp:
        assert resp.status == 302
        authorization = URL(resp.headers["Location"])
        assert resp.cookies["porter_oidc"]["path"] == "/omero/porter/oidc/idp/callback"
    assert authorization.query["redirect_uri"] == str(
        client.make_url("/omero/porter/oidc/idp/callback")
    )
    async with client.session.get(authorization, allow_redirects=False) as resp:
        back = URL(resp.headers["Location"])
    status, location, cookie, _ = await callback(client, back)
    assert (status, location) == (303, "/omero/echo/x")
    assert cookie
    async with client.get("/omero/echo/x") as resp:
        assert resp.status == 200
        # forwarded as alice, with the OMERO.web session porter holds for her
        assert "sessionid=echo-session-" in await resp.text()


async def test_logins_as_porter_starts_wait_for_the_first_discovery_instead_of_failing(
    oidc_porter: Callable[..., Awaitable[Gateway]],
) -> None:
    # discovery runs at start-up without delaying it: logins that come meanwhile share it
    client = await oidc_porter()
    urls = await asyncio.gather(*(start_login(client) for _ in range(5)))
    assert len({url.query["state"] for url in urls}) == 5  # five logins, each its own state


async def test_omero_down_at_the_callback_ends_on_a_503_page_and_the_next_login_works(
    oidc_porter: Callable[..., Awaitable[Gateway]],
    oidc_provider: TestProvider,
    omero_sim: OmeroSim,
) -> None:
    client = await oidc_porter()
    status, _, cookie, _ = await full_login(client, "bob")  # the admin session is held
    assert status == 303
    assert cookie
    before = user_sessions(omero_sim, "alice")
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as browser:
        authorization = await start_login(client, browser=browser)
        back = await log_in_at_provider(browser, str(authorization), "alice")
        omero_sim.down()
        try:
            got, location, cookie, body = await callback(client, back, browser)
            assert got == 303, body
            assert cookie is None
            assert URL(location).query["oidc_error"] == "omero_unavailable"
            async with browser.get(client.make_url(location)) as resp:
                assert resp.status == 503
                assert "OMERO server is not responding" in await resp.text()
            # a back-channel logout still ends bob's porter session (his OMERO session
            # ends by OMERO's own timeout: porter cannot reach it), never a 500
            async with client.post(
                "/porter/oidc/backchannel", data={"logout_token": logout_token(oidc_provider)}
            ) as resp:
                assert resp.status == 200
        finally:
            omero_sim.up()
        async with client.get(PING, allow_redirects=False) as resp:
            assert resp.status == 302  # bob's session ended
        status, location, cookie, _ = await full_login(client, "alice", browser)
        assert (status, location) == (303, PING)
        assert cookie
    assert len(user_sessions(omero_sim, "alice")) == len(before) + 1


# -- mix-up (RFC 9700 4.4) --------------------------------------------------------------------


async def test_a_code_comes_back_only_to_the_provider_the_login_started_at(
    oidc_porter: Callable[..., Awaitable[Gateway]],
    oidc_provider: TestProvider,
    rogue: Rogue,
    omero_sim: OmeroSim,
) -> None:
    """A hostile provider B sends "Log in with B" on to provider A with porter's parameters:
    A's code must never reach B's token endpoint, and nobody is logged in."""
    hostile = OidcProviderSettings(
        id="rogue", issuer=rogue.issuer, client_id="porter", client_secret="x" * 32
    )
    client = await oidc_porter(oidc_provider.oidc(oidc_provider.settings(), hostile))
    before = user_sessions(omero_sim, "alice")
    to_b = await start_login(client, provider="rogue")
    assert to_b.query["redirect_uri"] == str(client.make_url("/porter/oidc/rogue/callback"))
    sealed = client.session.cookie_jar.filter_cookies(
        client.make_url("/porter/oidc/rogue/callback")
    )["porter_oidc"].value
    async with client.session.get(f"{oidc_provider.issuer}/.well-known/openid-configuration") as r:
        a_authorize = URL((await r.json())["authorization_endpoint"])
    # B's redirect to A, as it is: A knows no such redirect URI for porter and stops there
    async with client.session.get(
        a_authorize.with_query(to_b.query), allow_redirects=False
    ) as resp:
        assert resp.status == 400
    # B's redirect to A with A's own callback URL of porter's: the code comes back to the
    # callback of A, which the sealed state (B's) does not name, even when the browser
    # sends B's pre-login cookie there and A's iss is left out
    back = await log_in_at_provider(
        client.session,
        str(
            a_authorize.with_query(to_b.query).update_query(
                redirect_uri=str(client.make_url("/porter/oidc/idp/callback"))
            )
        ),
        "alice",
    )
    assert back.path == "/porter/oidc/idp/callback"
    client.session.cookie_jar.update_cookies(
        {"porter_oidc": sealed}, client.make_url("/porter/oidc/idp/callback")
    )
    without_iss = back.with_query({k: v for k, v in back.query.items() if k != "iss"})
    for url in (back, without_iss):
        await refused(client, url, 400, "again")
        client.session.cookie_jar.update_cookies(
            {"porter_oidc": sealed}, client.make_url("/porter/oidc/idp/callback")
        )
    assert rogue.redeemed == []  # B never saw A's code
    assert user_sessions(omero_sim, "alice") == before


async def test_a_provider_that_names_itself_must_do_so_in_every_callback(
    oidc_porter: Callable[..., Awaitable[Gateway]],
    oidc_provider: TestProvider,
    omero_sim: OmeroSim,
) -> None:
    client = await oidc_porter()
    found = await client.app[OIDC_PROVIDERS]["idp"].discovery()
    assert found.iss_parameter  # oidc-provider says authorization_response_iss_parameter_supported
    before = user_sessions(omero_sim, "bob")
    back = await log_in_at_provider(client.session, str(await start_login(client)), "bob")
    assert back.query["iss"] == oidc_provider.issuer
    without_iss = back.with_query({k: v for k, v in back.query.items() if k != "iss"})
    await refused(client, without_iss, 400, "again")
    back = await log_in_at_provider(client.session, str(await start_login(client)), "bob")
    await refused(client, back.update_query(iss="https://evil.example"), 400, "again")
    assert user_sessions(omero_sim, "bob") == before


async def test_the_shared_callback_url_of_before_is_kept_for_one_provider(
    oidc_porter: Callable[..., Awaitable[Gateway]],
    oidc_provider: TestProvider,
    omero_sim: OmeroSim,
) -> None:
    legacy = oidc_provider.settings(shared_callback=True)
    second = oidc_provider.settings(id="mixup", display_name="Second")
    client = await oidc_porter(oidc_provider.oidc(legacy, second))
    # the second provider has its own URL; a login of the first never completes there
    assert (await start_login(client, provider="mixup")).query["redirect_uri"] == str(
        client.make_url("/porter/oidc/mixup/callback")
    )
    client.session.cookie_jar.clear(lambda c: c.key == "porter_oidc")
    back = await log_in_at_provider(client.session, str(await start_login(client)), "bob")
    sealed = client.session.cookie_jar.filter_cookies(client.make_url("/porter/oidc/callback"))
    client.session.cookie_jar.update_cookies(
        {"porter_oidc": sealed["porter_oidc"].value},
        client.make_url("/porter/oidc/mixup/callback"),
    )
    await refused(client, back.with_path("/porter/oidc/mixup/callback"), 400, "again")
    # the first keeps the URL every provider shared before
    authorization = await start_login(client)
    assert authorization.query["redirect_uri"] == str(client.make_url("/porter/oidc/callback"))
    back = await log_in_at_provider(client.session, str(authorization), "bob")
    status, location, cookie, _ = await callback(client, back)
    assert (status, location) == (303, PING)
    assert cookie


def test_two_providers_cannot_share_the_callback_url() -> None:
    both = OidcSettings(
        providers=tuple(
            OidcProviderSettings(
                id=name, issuer="https://idp.example", client_id="c", shared_callback=True
            )
            for name in ("a", "b")
        )
    )
    assert [key for key, _ in both.problems()] == ["providers"]
    assert "shared_callback" in both.problems()[0][1]


async def test_a_callback_replayed_with_its_cookie_makes_no_second_session(
    porter: Any, echo_upstream: Any, rogue: Rogue, omero_sim: OmeroSim
) -> None:
    """The rogue provider redeems a code as often as it is sent: porter's own state is what
    makes the second callback fail."""
    entry = omero_sim.server_list_entry()
    sections = {
        "omero": OmeroSettings(
            server_list=((entry[0], entry[1], entry[2]),),
            admin_user="root",
            admin_password=omero_sim.users["root"],
        ),
        "oidc": rogue.oidc(),
    }
    client = await porter(logged_in=False, sections=sections)
    back = await rogue_callback(client, rogue)
    path = client.make_url("/porter/oidc/idp/callback")
    sealed = client.session.cookie_jar.filter_cookies(path)["porter_oidc"].value
    status, _, cookie, _ = await callback(client, back)
    assert (status, bool(cookie)) == (303, True)
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as attacker:
        attacker.cookie_jar.update_cookies({"porter_oidc": sealed}, path)
        async with attacker.get(back, allow_redirects=False) as resp:
            assert resp.status == 303
            assert SESSION_COOKIE not in resp.cookies or not resp.cookies[SESSION_COOKIE].value
            assert URL(resp.headers["Location"]).query["oidc_error"] == "replayed"
        async with attacker.get(client.make_url(resp.headers["Location"])) as resp:
            assert resp.status == 400
            assert "too long or was started in another window" in await resp.text()
    assert len(rogue.redeemed) == 1  # the replay never reached the provider


def test_every_reason_a_login_can_be_refused_for_has_words_and_a_defined_status() -> None:
    """The login page says why from the code alone: every reason porter's OpenID and SSO
    code raises is in the table (the back-channel's own reasons answer the provider, not a
    browser), and each answer is a defined 4xx/5xx."""
    from pathlib import Path

    from proxy.pages.oidc_refusals import REFUSALS

    root = Path(__file__).parent.parent
    raised: set[str] = set()
    for path in [*root.glob("auth/*.py"), *root.glob("proxy/**/*.py")]:
        text = path.read_text()
        raised |= set(re.findall(r'(?:OidcError|IdentityRefused|SsoError)\(\s*"([a-z_]+)"', text))
        raised |= set(re.findall(r'code="([a-z_]+)"', text))
    assert len(raised) > 20
    missing = raised - set(REFUSALS) - {"bad_logout_token"}
    assert not missing
    assert {r.status for r in REFUSALS.values()} <= {400, 401, 403, 502, 503}


async def test_only_a_page_is_sent_straight_to_the_one_provider(
    oidc_porter: Callable[..., Awaitable[Gateway]],
) -> None:
    # a favicon's request must not start a second login (its pre-login cookie would replace
    # the page's, and the page's login would come back "expired")
    client = await oidc_porter(login=LoginSettings(password_login=False))
    for dest, status in (("document", 303), (None, 303), ("image", 200), ("script", 200)):
        headers = {"Sec-Fetch-Dest": dest} if dest else {}
        async with client.get("/porter/login", headers=headers, allow_redirects=False) as resp:
            assert resp.status == status, dest
            assert ("porter_oidc" in resp.cookies) is False
