"""`authenticate(request)` on its own: who a request is, without forwarding anything.

A test-only route asks the chain and answers the principal; the echo upstream (standing in
for OMERO.web) must receive nothing. The OMERO test server makes the token user's and the
public user's sessions."""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

from auth.public_settings import PublicSessionSettings
from proxy.app import authenticators
from proxy.identity.chain import authenticate
from proxy.identity.public import public_user
from proxy.identity.session import porter_session
from proxy.identity.tokens import bearer, sso_cookie
from proxy.keys import DECISION, PUBLIC_RULES
from proxy.principal import Principal
from proxy.settings import ProxySettings, Settings
from tests.omero_sim.fixture import OmeroSim
from tests.porter_fixtures import PorterFactory, Upstream
from tests.session_fixtures import public_sections
from tests.test_sso import Idp, sso_sections
from tests.test_sso import bearer as bearer_header


async def who(request: web.Request) -> web.Response:
    path = request.query.get("path", "/private/")
    request[DECISION] = await request.app[PUBLIC_RULES].decide(request.method, path)
    principal = await authenticate(request)
    if principal is None:
        return web.json_response(None)
    return web.json_response(
        {"kind": principal.kind, "user": principal.user, "server": principal.server_id}
    )


def add_who(app: web.Application) -> None:
    app.router.add_get("/test-only/who", who)


async def test_the_chain_answers_who_without_forwarding(
    echo_upstream: Upstream, porter: PorterFactory, omero_sim: OmeroSim, tmp_path: Path
) -> None:
    idp = Idp(tmp_path)
    sections = {**sso_sections(omero_sim, idp), **public_sections(omero_sim)}
    sections["omero"] = sso_sections(omero_sim, idp)["omero"]
    client = await porter(logged_in=False, configure=add_who, sections=sections)

    assert await (await client.get("/test-only/who")).json() is None  # nobody: not me x4
    public = await (await client.get("/test-only/who?path=/public/x")).json()
    assert public == {"kind": "public", "user": "public", "server": 1}
    token = await (
        await client.get("/test-only/who?path=/public/x", headers=bearer_header(idp.token("bob")))
    ).json()
    assert token == {"kind": "token", "user": "bob", "server": 1}  # before the public user
    # OMERO.web saw the handoffs of the two sessions made, and nothing was forwarded
    assert [r.raw_path.split("?")[0] for r in echo_upstream.state.received] == [
        "/webclient/keepalive_ping/"
    ] * 2
    assert all("bsession=" in r.raw_path for r in echo_upstream.state.received)


async def test_a_porter_session_is_its_user_and_comes_before_the_public_user(
    echo_upstream: Upstream, porter: PorterFactory, omero_sim: OmeroSim
) -> None:
    client = await porter(configure=add_who, sections=public_sections(omero_sim))
    found = await (await client.get("/test-only/who?path=/public/x")).json()
    assert found == {"kind": "user", "user": "alice", "server": 1}
    assert echo_upstream.state.received == []


def test_the_chain_is_composed_from_the_settings_in_order() -> None:
    plain = Settings(proxy=ProxySettings())
    assert authenticators(plain) == (porter_session,)
    from auth.sso_settings import SsoSettings

    everything = Settings(
        proxy=ProxySettings(),
        sso=SsoSettings(enabled=True, token_cookie="sso_token"),
        public_session=PublicSessionSettings(enabled=True, user="public", password="x"),
    )
    assert authenticators(everything) == (bearer, porter_session, sso_cookie, public_user)


def test_a_principal_never_shows_its_secrets() -> None:
    principal = Principal(
        "user", "alice", 1, {"sessionid": "held-cookie"}, frozenset({"omero-key", "held-cookie"})
    )
    assert "held-cookie" not in repr(principal)
    assert "omero-key" not in repr(principal)
    assert principal.authenticated


def test_porters_cookie_is_read_as_aiohttp_parses_it() -> None:
    from aiohttp.test_utils import make_mocked_request

    from proxy.identity.session import cookie_value

    for header in (
        "a=1; porter_session=abc; b=2",
        "porter_session=first; porter_session=second",
        'porter_session="quoted"',
        "xporter_session=no; porter_sessionx=no",
        "porter_session=",
        "",
    ):
        # aiohttp's own parser is the reference (a bare request stands in for porter's)
        request = make_mocked_request("GET", "/", headers={"Cookie": header})
        assert cookie_value(request, "porter_session") == request.cookies.get("porter_session")
