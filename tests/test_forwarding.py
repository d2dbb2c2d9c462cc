"""The forwarding core against a real echo upstream on a real socket."""

from __future__ import annotations

import hashlib

import aiohttp
from yarl import URL

from auth.omero_settings import OmeroSettings
from tests.omero_sim.fixture import OmeroSim
from tests.porter_fixtures import (
    OPERATOR,
    TEST_UPSTREAM_SESSION,
    PorterFactory,
    Upstream,
    aiter_bytes,
)


async def test_get_is_forwarded_with_path_and_query_unchanged(
    echo_upstream: Upstream, porter: PorterFactory
) -> None:
    client = await porter()
    resp = await client.get(URL("/webclient/some%20thing/?a=1&b=%2F&a=2", encoded=True))
    assert resp.status == 200
    body = await resp.json()
    assert body["method"] == "GET"
    assert body["raw_path"] == "/webclient/some%20thing/?a=1&b=%2F&a=2"
    assert resp.headers["X-Request-Id"]


async def test_post_body_reaches_upstream_intact(
    echo_upstream: Upstream, porter: PorterFactory
) -> None:
    client = await porter()
    payload = b"\x00binary\xff" * 1000
    resp = await client.post("/webclient/action/", data=payload)
    body = await resp.json()
    assert body["body_size"] == len(payload)
    assert body["body_sha256"] == hashlib.sha256(payload).hexdigest()
    headers = dict(echo_upstream.state.received[-1].headers)
    assert headers["Content-Length"] == str(len(payload))
    assert "Transfer-Encoding" not in headers


async def test_chunked_request_body_is_streamed(
    echo_upstream: Upstream, porter: PorterFactory
) -> None:
    client = await porter()
    resp = await client.put("/upload", data=aiter_bytes(3 * 1024 * 1024))
    body = await resp.json()
    assert body["body_size"] == 3 * 1024 * 1024
    assert echo_upstream.state.received[-1].headers["Transfer-Encoding"] == "chunked"


async def test_hop_by_hop_request_headers_are_stripped(
    echo_upstream: Upstream, porter: PorterFactory
) -> None:
    client = await porter()
    await client.get(
        "/echo",
        headers={
            "Connection": "keep-alive, X-Client-Hop",
            "X-Client-Hop": "secret-hop",
            "Keep-Alive": "timeout=5",
            "Proxy-Authorization": "Basic Zm9vOmJhcg==",
            "Proxy-Connection": "keep-alive",
            "TE": "trailers",
            "X-End-To-End": "kept",
        },
    )
    received = echo_upstream.state.received[-1].headers
    for name in ("X-Client-Hop", "Keep-Alive", "Proxy-Authorization", "Proxy-Connection", "TE"):
        assert name not in received, name
    assert received["X-End-To-End"] == "kept"


async def test_hop_by_hop_response_headers_are_stripped(
    echo_upstream: Upstream, porter: PorterFactory
) -> None:
    client = await porter()
    resp = await client.get("/hop")
    assert resp.status == 200
    for name in ("X-Upstream-Hop", "Keep-Alive", "Proxy-Authenticate", "Trailer"):
        assert name not in resp.headers, name
    assert resp.headers["X-End-To-End"] == "passes"


async def test_redirects_are_passed_not_followed(
    echo_upstream: Upstream, porter: PorterFactory
) -> None:
    client = await porter()
    resp = await client.get("/redirect", allow_redirects=False)
    assert resp.status == 302
    assert resp.headers["Location"] == "/echo/after-redirect"
    assert [r.raw_path for r in echo_upstream.state.received] == ["/redirect"]


async def test_compressed_body_passes_untouched(
    echo_upstream: Upstream, porter: PorterFactory
) -> None:
    client = await porter(upstream=echo_upstream.url)
    resp = await client.get("/gzip", headers={"Accept-Encoding": "gzip"}, auto_decompress=False)
    raw = await resp.read()
    assert resp.headers["Content-Encoding"] == "gzip"
    assert raw[:2] == b"\x1f\x8b"


async def test_upstream_error_status_is_passed(
    echo_upstream: Upstream, porter: PorterFactory
) -> None:
    client = await porter()
    resp = await client.get("/status/418")
    assert resp.status == 418
    assert await resp.text() == "status page"


async def test_untrusted_peer_cannot_spoof_forwarding_headers(
    echo_upstream: Upstream, porter: PorterFactory
) -> None:
    client = await porter()
    await client.get(
        "/echo",
        headers={
            "X-Forwarded-For": "203.0.113.9",
            "X-Forwarded-Proto": "https",
            "X-Forwarded-Host": "evil.example",
            "Forwarded": "for=203.0.113.9;proto=https",
            "X-Real-IP": "203.0.113.9",
            "X-Request-Id": "client-chosen-id-1234",
        },
    )
    received = echo_upstream.state.received[-1].headers
    assert received["X-Forwarded-For"] == "127.0.0.1"
    assert received["X-Forwarded-Proto"] == "http"
    assert received["X-Forwarded-Host"] != "evil.example"
    assert "Forwarded" not in received
    assert "X-Real-IP" not in received
    assert received["X-Request-Id"] != "client-chosen-id-1234"


async def test_trusted_peer_forwarding_headers_are_believed(
    echo_upstream: Upstream, porter: PorterFactory
) -> None:
    client = await porter(trusted_proxies=("127.0.0.0/8",))
    await client.get(
        "/echo",
        headers={
            "X-Forwarded-For": "198.51.100.7, 203.0.113.9",
            "X-Forwarded-Proto": "https",
            "X-Forwarded-Host": "images.example.org",
        },
    )
    received = echo_upstream.state.received[-1].headers
    # 203.0.113.9 is the first hop porter does not trust: it is the client; what it claims
    # about earlier hops is not believed.
    assert received["X-Forwarded-For"] == "203.0.113.9, 127.0.0.1"
    assert received["X-Forwarded-Proto"] == "https"
    assert received["X-Forwarded-Host"] == "images.example.org"


async def test_trusted_chain_of_proxies_is_walked(
    echo_upstream: Upstream, porter: PorterFactory
) -> None:
    client = await porter(trusted_proxies=("127.0.0.0/8", "10.0.0.0/8"))
    await client.get("/echo", headers={"X-Forwarded-For": "198.51.100.7, 10.1.2.3"})
    received = echo_upstream.state.received[-1].headers
    assert received["X-Forwarded-For"] == "198.51.100.7, 10.1.2.3, 127.0.0.1"


async def test_prefix_mounts_porter_and_forwards_full_path(
    echo_upstream: Upstream, porter: PorterFactory
) -> None:
    client = await porter(prefix="/omero")
    resp = await client.get("/omero/webclient/?x=1")
    assert resp.status == 200
    assert (await resp.json())["raw_path"] == "/omero/webclient/?x=1"
    outside = await client.get("/webclient/")
    assert outside.status == 404
    assert (await client.get("/omeroX/webclient/")).status == 404
    health = await client.get("/omero/porter/healthz")
    assert health.status == 200
    assert [r.raw_path for r in echo_upstream.state.received] == ["/omero/webclient/?x=1"]


async def test_reserved_porter_paths_never_reach_upstream(
    echo_upstream: Upstream, porter: PorterFactory
) -> None:
    client = await porter()
    resp = await client.get("/porter/unknown")
    assert resp.status == 404
    assert echo_upstream.state.received == []


async def test_healthz_and_readyz(
    omero_sim: OmeroSim, echo_upstream: Upstream, porter: PorterFactory
) -> None:
    entry = omero_sim.server_list_entry()
    sections = {"omero": OmeroSettings(server_list=((entry[0], entry[1], entry[2]),))}
    client = await porter(sections=sections)
    assert (await client.get("/porter/healthz")).status == 200
    ready = await client.get("/porter/readyz", headers=OPERATOR)
    assert ready.status == 200
    checks = (await ready.json())["checks"]
    assert {name: check["ok"] for name, check in checks.items()} == {
        "upstream": True,
        "omero": True,
        "session_store": True,
        "limits": True,  # advisory: slots, waiting, busiest networks
    }
    relayed = await client.get(
        "/porter/readyz", headers={**OPERATOR, "X-Forwarded-For": "203.0.113.9"}
    )
    assert await relayed.json() == {"status": "ready"}  # no details for a relayed visitor


async def test_readyz_reports_a_dead_omero_server(
    echo_upstream: Upstream, porter: PorterFactory
) -> None:
    from tests.porter_fixtures import free_port

    sections = {"omero": OmeroSettings(server_list=(("127.0.0.1", free_port(), "gone"),))}
    client = await porter(sections=sections)
    ready = await client.get("/porter/readyz", headers=OPERATOR)
    assert ready.status == 503
    checks = (await ready.json())["checks"]
    assert checks["omero"] == {
        "ok": False,
        "detail": "server 1 unreachable (ConnectionRefusedError)",
    }
    assert checks["upstream"]["ok"] is True


async def test_readyz_reports_dead_upstream(porter: PorterFactory) -> None:
    from tests.porter_fixtures import free_port

    client = await porter(upstream=f"http://127.0.0.1:{free_port()}")
    ready = await client.get("/porter/readyz", headers=OPERATOR)
    assert ready.status == 503
    body = await ready.json()
    assert body["checks"]["upstream"]["ok"] is False
    assert (await client.get("/porter/healthz")).status == 200


async def test_many_concurrent_requests_share_the_pool(
    echo_upstream: Upstream, porter: PorterFactory
) -> None:
    import asyncio

    client = await porter(upstream_connections=4)

    async def one(i: int) -> int:
        async with client.get(f"/echo/{i}") as resp:
            await resp.read()
            return resp.status

    statuses = await asyncio.gather(*(one(i) for i in range(50)))
    assert statuses == [200] * 50
    assert len(echo_upstream.state.received) == 50


async def test_head_request_has_no_body(echo_upstream: Upstream, porter: PorterFactory) -> None:
    client = await porter()
    resp = await client.head("/download/1000")
    assert resp.status == 200
    assert resp.headers["Content-Length"] == "1000"
    assert await resp.read() == b""


async def test_client_session_is_reused_without_cookie_jar(
    echo_upstream: Upstream, porter: PorterFactory
) -> None:
    client = await porter()
    resp = await client.get("/echo", headers={"Cookie": "a=1"})
    await resp.read()
    resp = await client.get("/echo")
    await resp.read()
    # The browser's own cookies pass as sent, the held OMERO.web cookie is added, porter's
    # cookie stays with porter, and the client session replays nothing of its own.
    assert echo_upstream.state.received[0].headers["Cookie"] == (
        f"a=1; sessionid={TEST_UPSTREAM_SESSION}"
    )
    assert echo_upstream.state.received[1].headers["Cookie"] == (
        f"sessionid={TEST_UPSTREAM_SESSION}"
    )
    assert isinstance(client.app, aiohttp.web.Application)


async def test_porters_own_cookies_never_reach_omero_web(
    echo_upstream: Upstream, porter: PorterFactory
) -> None:
    client = await porter()
    mine = "porter_csrf=n; porter_oidc=sealed-state; porter_session=other"
    resp = await client.get("/echo", headers={"Cookie": f"a=1; {mine}"})
    await resp.read()
    forwarded = echo_upstream.state.received[-1].headers["Cookie"]
    assert forwarded == f"a=1; sessionid={TEST_UPSTREAM_SESSION}"
