"""The public lane: a cache hit for a request that can be nobody's but the public user's is
answered before the identity chain (gate.py, forwarding/cached.public_hit).

What makes it safe is tested here shape by shape: a request that carries any credential the
chain reads (an Authorization header of any scheme, porter's cookie or the SSO token cookie,
alone, among others, empty, or in a second Cookie header), asks for a websocket, or is not a
GET or HEAD always walks the whole chain, and a logged-in user still gets their own answer.
The cache's own poisoning and deception tests and the gateway's bypass corpus run unchanged
(tests/test_cache.py, tests/test_bypass_corpus.py).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from multidict import CIMultiDict
from yarl import URL

from auth.sso_settings import SsoSettings
from proxy.identity.chain import AUTHENTICATORS
from proxy.principal import Principal
from tests.omero_sim.fixture import OmeroSim
from tests.porter_fixtures import PorterFactory, Upstream
from tests.test_cache import TILE, cache_sections, upstream_tiles
from tests.test_sso import Idp, sso_sections
from tests.test_sso import bearer as bearer_header

URL_ = TILE + "?tile=7"


class Chain:
    """Counts the requests the identity chain is asked about (then lets it answer)."""

    def __init__(self) -> None:
        self.asked = 0

    def install(self, app: web.Application) -> None:
        async def count(request: web.Request) -> Principal | None:
            self.asked += 1
            return None  # "not me": the real authenticators answer

        app[AUTHENTICATORS] = (count, *app[AUTHENTICATORS])


async def send(client: Any, method: str = "GET", headers: Any = None) -> tuple[int, bytes, Any]:
    """`URL_` with exactly `headers` (no cookie jar)."""
    url = URL(f"http://{client.server.host}:{client.server.port}{URL_}", encoded=True)
    async with (
        aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as session,
        session.request(method, url, headers=headers, allow_redirects=False) as resp,
    ):
        return resp.status, await resp.read(), resp.headers


@pytest.fixture
async def lane(
    porter: PorterFactory, omero_sim: OmeroSim, tmp_path: Path
) -> tuple[Any, Chain, Idp, str]:
    """Porter with the public cache, bearer tokens and an SSO token cookie; alice logged in
    (her cookie value returned); the chain counted; `URL_` stored in the cache."""
    idp = Idp(tmp_path)
    sections = {**cache_sections(omero_sim), **sso_sections(omero_sim, idp)}
    sections["public"] = cache_sections(omero_sim)["public"]
    sections["sso"] = SsoSettings(**{**vars(sections["sso"]), "token_cookie": "sso_token"})
    chain = Chain()
    client = await porter(logged_in=True, sections=sections, configure=chain.install)
    [cookie] = [c for c in client.session.cookie_jar if c.key == "porter_session"]
    status, _, headers = await send(client)
    assert (status, headers["X-Cache"]) == (200, "MISS")
    return client, chain, idp, cookie.value


async def test_a_credentialless_hit_never_asks_the_identity_chain(
    lane: tuple[Any, Chain, Idp, str], echo_upstream: Upstream, caplog: pytest.LogCaptureFixture
) -> None:
    client, chain, _, _ = lane
    caplog.set_level(logging.INFO, "porter.access")
    asked = chain.asked
    for method, headers in (
        ("GET", None),
        ("HEAD", None),
        ("GET", {"Cookie": "csrftoken=abc; _ga=GA1.2.3"}),  # a visitor's other cookies
        ("GET", {"Accept": "image/*", "User-Agent": "crawler/1.0"}),
    ):
        status, _, answer = await send(client, method, headers)
        assert (status, answer["X-Cache"]) == (200, "HIT"), (method, headers)
    assert chain.asked == asked  # answered from the entry: no session looked up
    assert upstream_tiles(echo_upstream) == 1
    lines = [r.getMessage() for r in caplog.records if "GET " + TILE in r.getMessage()]
    assert lines
    assert all("kind=public" in line and "cache=HIT" in line for line in lines[-3:])


def _shapes(cookie: str, token: str) -> list[tuple[str, str, Any, bool]]:
    """(name, method, headers, the user's own answer expected)."""
    both = CIMultiDict([("Cookie", "a=1"), ("Cookie", f"porter_session={cookie}")])
    return [
        ("bearer token", "GET", {"Authorization": f"Bearer {token}"}, True),
        ("another Authorization scheme", "GET", {"Authorization": "Basic Zm9vOmJhcg=="}, False),
        ("an empty Authorization", "GET", {"Authorization": ""}, False),
        ("porter's cookie", "GET", {"Cookie": f"porter_session={cookie}"}, True),
        (
            "porter's cookie among others",
            "GET",
            {"Cookie": f"a=1; porter_session={cookie}; b=2"},
            True,
        ),
        ("porter's cookie, empty", "GET", {"Cookie": "porter_session="}, False),
        ("porter's cookie, quoted", "GET", {"Cookie": f'porter_session="{cookie}"'}, True),
        # one Cookie header is all a browser sends (RFC 6265 5.4), and porter reads the first,
        # as aiohttp does: a second one is not a login, but it still keeps off the lane
        ("porter's cookie in a second Cookie header", "GET", both, False),
        ("the SSO token cookie", "GET", {"Cookie": f"sso_token={token}"}, True),
        ("the SSO token cookie, empty", "GET", {"Cookie": "x=1; sso_token="}, False),
        ("a websocket", "GET", {"Connection": "Upgrade", "Upgrade": "websocket"}, False),
        ("a POST", "POST", None, False),
    ]


SHAPES = [s[0] for s in _shapes("c", "t")]


@pytest.mark.parametrize("shape", SHAPES)
async def test_a_request_with_any_credential_walks_the_whole_chain(
    lane: tuple[Any, Chain, Idp, str], shape: str
) -> None:
    client, chain, idp, cookie = lane
    [(_, method, headers, own)] = [s for s in _shapes(cookie, idp.token("bob")) if s[0] == shape]
    if "Bearer" in str(headers):
        headers = bearer_header(idp.token("bob"))
    asked = chain.asked
    status, body, answer = await send(client, method, headers)
    assert chain.asked == asked + 1, shape  # never the lane
    if own:  # the user's own answer from OMERO.web, never the public copy
        assert status == 200
        assert "X-Cache" not in answer
        assert answer["Cache-Control"] == "private"
        assert b"#1|" not in body
