"""The public answer cache in front of the echo upstream (standing in for OMERO.web, counting
what it receives) with the public session on the OMERO test server.

The rule: only the public principal's answers are stored or served from the cache; a hit
never reaches OMERO.web; N concurrent misses make one request; a stale copy answers while
OMERO.web fails."""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient
from yarl import URL

from cache.entry import Entry
from cache.key import cache_key, key_path
from cache.settings import CacheRule, CacheSettings
from proxy.keys import PUBLIC_CACHE
from tests.bypass_corpus import CASES
from tests.omero_sim.fixture import OmeroSim
from tests.porter_fixtures import OPERATOR, OPERATOR_TOKEN, PorterFactory, Upstream
from tests.session_fixtures import public_sections
from tests.test_public_gateway import public_sections as corpus_sections
from tests.test_public_gateway import raw_request
from tests.test_sso import Idp, sso_sections
from tests.test_sso import bearer as bearer_header

TILE = "/webgateway/render_image_region/12/0/0/"
Client = TestClient[Any, Any]


def cache_sections(sim: OmeroSim, **cache: Any) -> dict[str, Any]:
    sections = public_sections(sim, url_filter="^/(webgateway|webclient|static)/.*")
    sections["cache"] = CacheSettings(enabled=True, **cache)
    return sections


async def anonymous(
    client: Client, path: str, method: str = "GET", **kwargs: Any
) -> tuple[int, bytes, dict[str, str]]:
    """`path` as a visitor without any cookie (a crawler, a first visit), sent as written."""
    url = URL(f"http://{client.server.host}:{client.server.port}{path}", encoded=True)
    async with (
        aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as session,
        session.request(method, url, allow_redirects=False, **kwargs) as resp,
    ):
        return resp.status, await resp.read(), dict(resp.headers)


def upstream_tiles(upstream: Upstream, path: str = TILE) -> int:
    return upstream.state.count(path)


async def test_public_hits_never_reach_omero_web_and_say_so(
    echo_upstream: Upstream, porter: PorterFactory, omero_sim: OmeroSim
) -> None:
    client = await porter(logged_in=False, sections=cache_sections(omero_sim))
    status, first, headers = await anonymous(client, TILE + "?tile=1")
    assert (status, headers["X-Cache"]) == (200, "MISS")
    assert headers["Cache-Control"] == "public, max-age=86400"
    assert headers["Age"] == "0"
    assert headers["Vary"] == "Cookie, Authorization"
    assert headers["Content-Type"] == "image/jpeg"
    assert headers["Cache-Status"] == "omero-porter; fwd=uri-miss; stored"
    for _ in range(5):
        status, body, headers = await anonymous(client, TILE + "?tile=1")
        assert (status, body, headers["X-Cache"]) == (200, first, "HIT")
        assert headers["Cache-Status"].startswith("omero-porter; hit; ttl=")
    assert upstream_tiles(echo_upstream) == 1
    # a HEAD is answered from the GET's entry: same headers, no body
    status, body, headers = await anonymous(client, TILE + "?tile=1", method="HEAD")
    assert (status, body, headers["X-Cache"]) == (200, b"", "HIT")
    assert headers["Content-Length"] == str(len(first))
    assert upstream_tiles(echo_upstream) == 1


async def test_the_fetch_carries_porters_headers_not_the_visitors(
    echo_upstream: Upstream, porter: PorterFactory, omero_sim: OmeroSim
) -> None:
    client = await porter(logged_in=False, sections=cache_sections(omero_sim))
    visitor = {
        "Accept-Language": "fr",
        "If-None-Match": '"abc"',
        "Accept-Encoding": "gzip",
        "Cookie": "sessionid=forged; other=1",
        "X-Requested-With": "XMLHttpRequest",
    }
    status, _, _ = await anonymous(client, TILE + "?tile=1", headers=visitor)
    assert status == 200
    sent = next(r for r in echo_upstream.state.received if r.raw_path.startswith(TILE))
    assert sent.headers["Accept-Encoding"] == "identity"
    for name in ("Accept-Language", "If-None-Match", "X-Requested-With"):
        assert name not in sent.headers
    # the public session's cookie, never the visitor's forged one
    assert sent.headers["Cookie"].startswith("sessionid=echo-session-")
    assert "forged" not in sent.headers["Cookie"]
    assert "other" not in sent.headers["Cookie"]


async def test_a_logged_in_user_never_gets_nor_fills_the_cache_on_the_same_url(
    echo_upstream: Upstream, porter: PorterFactory, omero_sim: OmeroSim
) -> None:
    client = await porter(logged_in=True, sections=cache_sections(omero_sim))
    url = TILE + "?tile=1"
    for expected in (1, 2):  # the user first: nothing is stored
        resp = await client.get(url)
        assert resp.status == 200
        assert "X-Cache" not in resp.headers
        assert resp.headers["Cache-Control"] == "private"
        assert (await resp.read()).startswith(f"tile {TILE} #{expected}|".encode())
    cache = client.app[PUBLIC_CACHE]
    assert (await cache.stats())["memory"]["entries"] == 0
    _, public, headers = await anonymous(client, url)
    assert headers["X-Cache"] == "MISS"
    assert public.startswith(f"tile {TILE} #3|".encode())
    _status, _, headers = await anonymous(client, url)
    assert headers["X-Cache"] == "HIT"
    # the user on the URL the public cache holds: still OMERO.web, still private
    resp = await client.get(url)
    body = await resp.read()
    assert body.startswith(f"tile {TILE} #4|".encode())
    assert body != public
    assert "X-Cache" not in resp.headers
    assert resp.headers["Cache-Control"] == "private"
    assert upstream_tiles(echo_upstream) == 4


async def test_a_bearer_token_user_never_gets_nor_fills_the_cache(
    echo_upstream: Upstream, porter: PorterFactory, omero_sim: OmeroSim, tmp_path: Path
) -> None:
    idp = Idp(tmp_path)
    sections = {**cache_sections(omero_sim), **sso_sections(omero_sim, idp)}
    sections["public"] = cache_sections(omero_sim)["public"]
    client = await porter(logged_in=False, sections=sections)
    url = TILE + "?tile=1"
    token = bearer_header(idp.token("bob"))
    resp = await client.get(url, headers=token)
    assert resp.status == 200
    assert "X-Cache" not in resp.headers
    assert resp.headers["Cache-Control"] == "private"
    assert (await client.app[PUBLIC_CACHE].stats())["memory"]["entries"] == 0
    _, _, headers = await anonymous(client, url)
    assert headers["X-Cache"] == "MISS"
    _, _, headers = await anonymous(client, url)
    assert headers["X-Cache"] == "HIT"
    resp = await client.get(url, headers=token)
    assert (await resp.read()).startswith(f"tile {TILE} #3|".encode())
    assert "X-Cache" not in resp.headers
    assert resp.headers["Cache-Control"] == "private"
    assert upstream_tiles(echo_upstream) == 3


@pytest.mark.parametrize(
    "query",
    [
        "set_cookie=sessionid",
        "set_cookie=csrftoken",
        "cache_control=private",
        "cache_control=no-store",
        "cache_control=max-age%3D0%2C%20no-cache",
        "vary=Accept-Language",
        "vary=*",
        "status=404",
        "status=302",
    ],
)
async def test_answers_that_must_not_be_shared_are_never_stored(
    query: str, echo_upstream: Upstream, porter: PorterFactory, omero_sim: OmeroSim
) -> None:
    client = await porter(logged_in=False, sections=cache_sections(omero_sim))
    url = f"{TILE}?tile=1&{query}"
    for _ in range(3):
        _status, _, headers = await anonymous(client, url)
        assert headers.get("X-Cache") is None
        assert "public" not in headers.get("Cache-Control", "")
        # relayed as without the cache: OMERO.web's session cookie never reaches a visitor
        assert "sessionid" not in headers.get("Set-Cookie", "")
    assert upstream_tiles(echo_upstream) == 3
    cache = client.app[PUBLIC_CACHE]
    assert (await cache.stats())["memory"]["entries"] == 0
    assert cache.counters.passes == 3


async def test_the_key_is_the_normalised_query(
    echo_upstream: Upstream, porter: PorterFactory, omero_sim: OmeroSim
) -> None:
    client = await porter(logged_in=False, sections=cache_sections(omero_sim))
    same = [
        "?tile=1&c=1%7C0:255&m=c",
        "?m=c&tile=1&c=1%7C0:255",
        "?m=c&c=1%7C0:255&tile=1&_=1700000000",  # jQuery's cache-buster is no part of it
        "?_=1&tile=1&&m=c&c=1%7C0:255",
        "?%5F=2&tile=1&m=c&c=1%7C0:255",  # _ however it is spelt
    ]
    for query in same:
        _, _, headers = await anonymous(client, TILE + query)
    assert upstream_tiles(echo_upstream) == 1
    sent = [r.raw_path for r in echo_upstream.state.received if r.raw_path.startswith(TILE)]
    assert sent == [TILE + "?c=1%7C0:255&m=c&tile=1"]  # what was stored is what was asked
    different = [
        "?tile=1&c=2",
        "?tile=1&c=1&c=2",
        "?tile=1&c=2&c=1",  # Django's QueryDict.get answers the last: not the same request
        "?tile=1&%63=2&c=1",  # one name spelt two ways keeps its order too
        "?tile=1&C=2",
        "?tile=2",
        "?tile=1&c=1|0:255&m=c",  # another spelling of the same bytes: a second entry at worst
    ]
    for query in different:
        _, _, headers = await anonymous(client, TILE + query)
        assert headers["X-Cache"] == "MISS", query
    assert upstream_tiles(echo_upstream) == 1 + len(different)
    sent = [r.raw_path for r in echo_upstream.state.received if r.raw_path.startswith(TILE)]
    assert sent[-4] == TILE + "?%63=2&c=1&tile=1"
    # another Host is another key: OMERO.web may build absolute URLs from it
    _, _, headers = await anonymous(client, TILE + same[0], headers={"Host": "other.example"})
    assert headers["X-Cache"] == "MISS"


async def test_a_thousand_concurrent_cold_requests_make_one_upstream_request(
    echo_upstream: Upstream, porter: PorterFactory, omero_sim: OmeroSim
) -> None:
    client = await porter(logged_in=False, sections=cache_sections(omero_sim))
    cache = client.app[PUBLIC_CACHE]
    url = client.make_url(TILE + "?tile=1&hold=1&size=200000")
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(
        connector=connector, cookie_jar=aiohttp.DummyCookieJar()
    ) as session:

        async def one() -> tuple[int, bytes, str]:
            async with session.get(url) as resp:
                return resp.status, await resp.read(), resp.headers["X-Cache"]

        requests = asyncio.gather(*(one() for _ in range(1000)))
        # OMERO.web holds its answer until all 1,000 are inside porter, waiting for it
        for _ in range(600):
            if cache.counters.waiting == 1000:
                break
            await asyncio.sleep(0.05)
        assert cache.counters.waiting == 1000
        assert upstream_tiles(echo_upstream) == 1
        echo_upstream.state.tile_release.set()
        answers = await requests
    assert upstream_tiles(echo_upstream) == 1
    assert {status for status, _, _ in answers} == {200}
    assert {state for _, _, state in answers} == {"MISS"}
    bodies = {body for _, body, _ in answers}
    assert len(bodies) == 1
    assert len(bodies.pop()) == 200000
    assert (cache.counters.fetches, cache.counters.collapsed) == (1, 999)


async def test_the_fetch_outlives_the_request_that_started_it(
    echo_upstream: Upstream, porter: PorterFactory, omero_sim: OmeroSim
) -> None:
    """The first request of a key starts THE fetch; when its client goes away and its handler
    is cancelled, the requests waiting for that fetch still get its answer, and OMERO.web is
    asked once."""
    client = await porter(
        logged_in=False,
        sections=cache_sections(omero_sim),
        server={"handler_cancellation": True},  # a client that goes cancels its handler
    )
    cache = client.app[PUBLIC_CACHE]
    url = client.make_url(TILE + "?tile=2&hold=1")
    async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as session:

        async def one() -> tuple[int, str]:
            async with session.get(url) as resp:
                await resp.read()
                return resp.status, resp.headers["X-Cache"]

        leader = asyncio.create_task(one())
        for _ in range(200):
            if cache.counters.waiting == 1:
                break
            await asyncio.sleep(0.02)
        followers = asyncio.gather(*(one() for _ in range(5)))
        for _ in range(200):
            if cache.counters.waiting == 6:
                break
            await asyncio.sleep(0.02)
        assert cache.counters.waiting == 6
        leader.cancel()  # the first client hangs up while OMERO.web holds the answer
        with contextlib.suppress(asyncio.CancelledError):
            await leader
        for _ in range(200):  # porter saw the connection go, and cancelled its handler
            if cache.counters.waiting == 5:
                break
            await asyncio.sleep(0.02)
        assert cache.counters.waiting == 5
        assert upstream_tiles(echo_upstream) == 1  # the fetch goes on, alone
        echo_upstream.state.tile_release.set()
        answers = await followers
    assert answers == [(200, "MISS")] * 5
    assert upstream_tiles(echo_upstream) == 1
    assert (cache.counters.fetches, cache.counters.collapsed) == (1, 5)


async def test_stale_while_revalidate_refreshes_once_in_the_background(
    echo_upstream: Upstream, porter: PorterFactory, omero_sim: OmeroSim
) -> None:
    rules = (CacheRule(path="/webgateway/.*", ttl=1.0),)
    client = await porter(logged_in=False, sections=cache_sections(omero_sim, rules=rules))
    url = TILE + "?tile=1&delay=0.3"
    _, first, _ = await anonymous(client, url)
    await asyncio.sleep(1.1)
    answers = await asyncio.gather(*(anonymous(client, url) for _ in range(20)))
    assert {h["X-Cache"] for _, _, h in answers} == {"STALE"}
    assert {body for _, body, _ in answers} == {first}  # at once, without waiting for OMERO.web
    assert all(h["Cache-Control"] == "public, max-age=0" for _, _, h in answers)
    for _ in range(100):  # the one refresh lands (OMERO.web takes 0.3 s)
        if client.app[PUBLIC_CACHE].counters.misses == 2:
            break
        await asyncio.sleep(0.05)
    assert upstream_tiles(echo_upstream) == 2
    _, body, headers = await anonymous(client, url)
    assert headers["X-Cache"] == "HIT"
    assert body.startswith(f"tile {TILE} #2|".encode())


async def test_stale_if_error_serves_through_an_upstream_outage(
    echo_upstream: Upstream, porter: PorterFactory, omero_sim: OmeroSim
) -> None:
    rules = (CacheRule(path="/webgateway/.*", ttl=1.0),)
    sections = cache_sections(omero_sim, rules=rules, stale_while_revalidate=0.0)
    client = await porter(logged_in=False, sections=sections)
    url = TILE + "?tile=1"
    _, first, _ = await anonymous(client, url)
    other = TILE + "?tile=1&never=cached"
    await asyncio.sleep(1.1)
    for failing in (500, 503):  # OMERO.web answers 5xx
        echo_upstream.state.tile_status = failing
        status, body, headers = await anonymous(client, url)
        assert (status, body, headers["X-Cache"]) == (200, first, "STALE")
        assert f"fwd-status={500 if failing == 500 else failing}" in headers["Cache-Status"]
        assert "detail=stale-if-error" in headers["Cache-Status"]
        status, _, headers = await anonymous(client, other)  # nothing to fall back on
        assert status == (500 if failing == 500 else 503)
        assert "X-Cache" not in headers
    await echo_upstream.server.close()  # OMERO.web is down altogether
    status, body, headers = await anonymous(client, url)
    assert (status, body, headers["X-Cache"]) == (200, first, "STALE")
    assert "fwd-status=502" in headers["Cache-Status"]
    status, _, _ = await anonymous(client, other)
    assert status == 502
    assert client.app[PUBLIC_CACHE].counters.stale_if_error == 3


async def test_answers_past_the_size_limit_are_streamed_not_stored(
    echo_upstream: Upstream, porter: PorterFactory, omero_sim: OmeroSim
) -> None:
    sections = cache_sections(omero_sim, max_object_size=100_000)
    client = await porter(logged_in=False, sections=sections)
    url = TILE + "?tile=1&size=150000"
    for _ in range(3):
        status, body, headers = await anonymous(client, url)
        assert (status, len(body)) == (200, 150000)
        assert "X-Cache" not in headers
    cache = client.app[PUBLIC_CACHE]
    assert (await cache.stats())["memory"]["entries"] == 0
    # the first fetch learnt it is too large; later requests stream without a fetch first
    assert upstream_tiles(echo_upstream) == 4
    assert cache.counters.fetches == 1


async def test_the_memory_budget_holds(
    echo_upstream: Upstream, porter: PorterFactory, omero_sim: OmeroSim
) -> None:
    budget = 2 * 1024**2
    sections = cache_sections(omero_sim, memory_bytes=budget, max_object_size=200_000)
    client = await porter(logged_in=False, sections=sections)
    cache = client.app[PUBLIC_CACHE]
    for n in range(60):  # 60 x 100 kB: three times the budget
        status, _, _ = await anonymous(
            client, f"/webgateway/render_thumbnail/{n}/?tile=1&size=100000"
        )
        assert status == 200
        assert cache.memory_bytes <= budget
    stats = await cache.stats()
    print(f"\nmemory tier after 6 MB through a 2 MiB budget: {stats['memory']}")
    assert 15 <= stats["memory"]["entries"] <= 20  # what fits, the least recently used gone
    _, _, headers = await anonymous(client, "/webgateway/render_thumbnail/0/?tile=1&size=100000")
    assert headers["X-Cache"] == "MISS"  # evicted
    _, _, headers = await anonymous(client, "/webgateway/render_thumbnail/59/?tile=1&size=100000")
    assert headers["X-Cache"] == "HIT"


async def test_bad_queries_and_paths_get_their_answer_never_a_500(
    echo_upstream: Upstream, porter: PorterFactory, omero_sim: OmeroSim
) -> None:
    client = await porter(logged_in=False, sections=cache_sections(omero_sim))
    for query in ("?tile=1&a=%FF", "?tile=1&a=%", "?tile=1&&&=&==", "?tile=1&" + "x=1&" * 500):
        status, _, headers = await anonymous(client, TILE + query)
        assert status == 200, query
    _, _, headers = await anonymous(client, TILE + "?tile=1&a=%FF")
    _, _, other = await anonymous(client, TILE + "?tile=1&a=%FE")
    assert (headers["X-Cache"], other["X-Cache"]) == ("HIT", "MISS")  # bytes kept apart


async def test_a_cache_rule_never_widens_what_is_public(
    echo_upstream: Upstream, porter: PorterFactory, omero_sim: OmeroSim
) -> None:
    everything = (CacheRule(path=".*", ttl=60.0),)
    sections = cache_sections(omero_sim, rules=everything)
    sections["public"] = replace(sections["public"], url_filter="^/webgateway/.*")
    client = await porter(logged_in=False, sections=sections)
    status, _, headers = await anonymous(client, "/webclient/render_thumbnail/1/?tile=1")
    assert status in (302, 303)
    assert "X-Cache" not in headers
    assert (await client.app[PUBLIC_CACHE].stats())["memory"]["entries"] == 0


async def test_stats_and_purge_over_http_only_with_the_operator_token(
    echo_upstream: Upstream, porter: PorterFactory, omero_sim: OmeroSim
) -> None:
    client = await porter(
        logged_in=False, sections=cache_sections(omero_sim), operator_token=OPERATOR_TOKEN
    )
    for n in range(3):
        await anonymous(client, f"/webgateway/render_thumbnail/{n}/?tile=1")
    stats = await (await client.get("/porter/cache", headers=OPERATOR)).json()
    assert stats["memory"]["entries"] == 3
    assert stats["counters"]["misses"] == 3
    refused = await client.post("/porter/cache/purge", data="path_regex=x", headers=OPERATOR)
    assert refused.status == 415
    for hostile in ("(", "(" * 100_000, "a{99999999999}"):  # broken, too deep, too large
        bad = await client.post(
            "/porter/cache/purge", json={"path_regex": hostile}, headers=OPERATOR
        )
        assert bad.status == 400
    purged = await client.post(
        "/porter/cache/purge", json={"path_regex": "/render_thumbnail/1/$"}, headers=OPERATOR
    )
    assert await purged.json() == {"removed": 1}
    _, _, headers = await anonymous(client, "/webgateway/render_thumbnail/1/?tile=1")
    assert headers["X-Cache"] == "MISS"
    _, _, headers = await anonymous(client, "/webgateway/render_thumbnail/2/?tile=1")
    assert headers["X-Cache"] == "HIT"
    # Behind a local nginx with a plain proxy_pass (no X-Forwarded-For), every visitor arrives
    # from 127.0.0.1 with no forwarding header: the address says nothing, the token decides.
    for stranger in (
        {},
        {"Authorization": "Bearer wrong-token-of-the-same-length-0123456789ab"},
        {"Authorization": f"Basic {OPERATOR_TOKEN}"},
        {"Authorization": f"Bearer {OPERATOR_TOKEN[:-1]}"},
        {"X-Porter-Token": OPERATOR_TOKEN},
    ):
        assert (await client.get("/porter/cache", headers=stranger)).status == 404
        refused = await client.post("/porter/cache/purge", json={}, headers=stranger)
        assert refused.status == 404
    # the address stays a second fence: a request relayed by a proxy porter was not told
    # about is not the operator's own, token or not
    for relayed in ({"X-Forwarded-For": "203.0.113.9"}, {"Forwarded": "for=203.0.113.9"}):
        assert (await client.get("/porter/cache", headers={**OPERATOR, **relayed})).status == 404
        refused = await client.post("/porter/cache/purge", json={}, headers={**OPERATOR, **relayed})
        assert refused.status == 404
    purged = await client.post("/porter/cache/purge", json={}, headers=OPERATOR)
    assert await purged.json() == {"removed": 3}
    # anyone not in status_detail_from does not even learn the endpoints exist
    sections = cache_sections(omero_sim)
    other = await porter(
        logged_in=False,
        sections=sections,
        status_detail_from=["10.0.0.0/8"],
        operator_token=OPERATOR_TOKEN,
    )
    assert (await other.get("/porter/cache", headers=OPERATOR)).status == 404
    assert (await other.post("/porter/cache/purge", json={}, headers=OPERATOR)).status == 404
    # no token configured: the endpoints are off for everyone, loopback included
    off = await porter(logged_in=False, sections=cache_sections(omero_sim), operator_token=None)
    assert (await off.get("/porter/cache", headers=OPERATOR)).status == 404
    assert (await off.post("/porter/cache/purge", json={}, headers=OPERATOR)).status == 404


# Lint-clean, yet its matching backtracks without end over a long run of word characters.
SLOW_PURGE = r"^/webgateway/render_thumbnail/(\w*)\w*\1\w*\1\w*\1\W"


async def test_a_purge_pattern_never_stalls_porter(
    echo_upstream: Upstream,
    porter: PorterFactory,
    omero_sim: OmeroSim,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    client = await porter(logged_in=False, sections=cache_sections(omero_sim))
    cache = client.app[PUBLIC_CACHE]
    for n in range(30):  # paths a crawler chose
        path = f"/webgateway/render_thumbnail/{'a' * 3000}{n}"
        cache.put(cache_key(1, "http", "h", path, ""), Entry((), b"x", time.time(), 60))
    # the classic shape is refused by the same lint as url_filter, before any matching
    refused = await client.post(
        "/porter/cache/purge", json={"path_regex": "(a|aa)+$"}, headers=OPERATOR
    )
    assert refused.status == 400
    assert "repeats an alternation or a repeat" in await refused.text()
    # a pattern the lint cannot see runs in a thread under a budget: porter answers meanwhile
    monkeypatch.setattr("cache.store.PURGE_BUDGET", 1.0)
    purge = asyncio.ensure_future(
        client.post("/porter/cache/purge", json={"path_regex": SLOW_PURGE}, headers=OPERATOR)
    )
    await asyncio.sleep(0.1)
    health = await client.get("/porter/healthz")
    assert health.status == 200
    assert not purge.done()  # healthz was answered while the purge was still matching
    slow = await purge
    assert slow.status == 400
    assert "took longer than" in await slow.text()
    assert (await cache.stats())["memory"]["entries"] == 30  # nothing matched, nothing lost
    # another process's purge with a pattern that is refused here drops every copy instead
    assert await cache._apply_purge("(a|aa)+$", time.time()) == 30


async def test_bypass_shaped_paths_never_become_keys_of_paths_that_are_not_public(
    echo_upstream: Upstream, porter: PorterFactory, omero_sim: OmeroSim
) -> None:
    """The public gateway's bypass corpus, on the wire, with a cache rule for every path:
    what is stored is only ever the forwarded path of a request decided public."""
    sections = corpus_sections(omero_sim)
    sections["cache"] = CacheSettings(enabled=True, rules=(CacheRule(path=".*", ttl=60.0),))
    client = await porter(logged_in=False, sections=sections)
    port = client.server.port
    assert port is not None
    for case in CASES:
        await raw_request(client.server.host, port, case.method, case.target)
    stored = {key_path(key) for key in client.app[PUBLIC_CACHE]._memory}
    public = {c.forwarded for c in CASES if c.kind == "public" and c.method in ("GET", "HEAD")}
    print(f"\n{len(CASES)} bypass-shaped requests: {len(stored)} keys, all of public paths")
    assert stored  # the corpus has public paths: the check is not empty
    assert stored <= public


async def test_a_public_session_that_cannot_be_renewed_is_served_stale_else_503(
    echo_upstream: Upstream, porter: PorterFactory, omero_sim: OmeroSim
) -> None:
    """OMERO.web lost the public session and OMERO is down, so porter cannot make a new one:
    what the cache holds is served; anything else gets the 503 it gets without the cache."""
    rules = (CacheRule(path="/webgateway/.*", ttl=1.0),)
    sections = cache_sections(omero_sim, rules=rules, stale_while_revalidate=0.0)
    client = await porter(logged_in=False, sections=sections)
    _, first, _ = await anonymous(client, TILE + "?tile=1")
    await asyncio.sleep(1.1)
    echo_upstream.state.tile_logged_out = True
    omero_sim.down()
    try:
        for _ in range(3):
            status, body, headers = await anonymous(client, TILE + "?tile=1")
            assert (status, body, headers["X-Cache"]) == (200, first, "STALE")
            assert "fwd-status=503" in headers["Cache-Status"]
        status, _, headers = await anonymous(client, TILE + "?tile=1&other=1")
        assert status == 503
        assert "X-Cache" not in headers
    finally:
        omero_sim.up()
    echo_upstream.state.tile_logged_out = False
    for _ in range(50):  # past the public session's failure_backoff (2 s), a new one is made
        status, body, headers = await anonymous(client, TILE + "?tile=1")
        assert status == 200
        if headers["X-Cache"] == "MISS":
            break
        assert headers["X-Cache"] == "STALE"
        await asyncio.sleep(0.1)
    assert headers["X-Cache"] == "MISS"
    assert body.startswith(f"tile {TILE} #".encode())
    assert body != first
