"""Timeouts, refused upstreams and body limits each get their defined answer."""

from __future__ import annotations

import aiohttp

from tests.porter_fixtures import PorterFactory, Upstream, aiter_bytes, free_port


async def test_refused_upstream_is_502_html_with_request_id(porter: PorterFactory) -> None:
    client = await porter(upstream=f"http://127.0.0.1:{free_port()}")
    resp = await client.get("/webclient/", headers={"Accept": "text/html"})
    assert resp.status == 502
    assert resp.content_type == "text/html"
    text = await resp.text()
    assert resp.headers["X-Request-Id"] in text
    assert "OMERO.web could not be reached" in text


async def test_refused_upstream_is_502_json_for_ajax(porter: PorterFactory) -> None:
    client = await porter(upstream=f"http://127.0.0.1:{free_port()}")
    resp = await client.get("/webclient/api/", headers={"X-Requested-With": "XMLHttpRequest"})
    assert resp.status == 502
    body = await resp.json()
    assert body == {
        "error": body["error"],
        "status": 502,
        "request_id": resp.headers["X-Request-Id"],
    }


async def test_silent_upstream_is_504(echo_upstream: Upstream, porter: PorterFactory) -> None:
    client = await porter(read_timeout=0.3)
    resp = await client.get("/slow/5", headers={"Accept": "application/json"})
    assert resp.status == 504
    assert (await resp.json())["status"] == 504


async def test_upstream_silent_mid_body_cuts_the_connection(
    echo_upstream: Upstream, porter: PorterFactory
) -> None:
    client = await porter(read_timeout=0.3)
    resp = await client.get("/slow-body/5")
    assert resp.status == 200
    try:
        await resp.read()
    except aiohttp.ClientPayloadError:
        pass
    else:
        raise AssertionError("a truncated body must not look complete")


async def test_declared_body_over_limit_is_413_before_upstream(
    echo_upstream: Upstream, porter: PorterFactory
) -> None:
    client = await porter(max_body_size=1000)
    resp = await client.post("/upload", data=b"x" * 1001, headers={"Accept": "application/json"})
    assert resp.status == 413
    assert (await resp.json())["status"] == 413
    assert echo_upstream.state.received == []


async def test_body_at_limit_passes(echo_upstream: Upstream, porter: PorterFactory) -> None:
    client = await porter(max_body_size=1000)
    resp = await client.post("/upload", data=b"x" * 1000)
    assert (await resp.json())["body_size"] == 1000


async def test_chunked_body_over_limit_is_413(
    echo_upstream: Upstream, porter: PorterFactory
) -> None:
    client = await porter(max_body_size=1024 * 1024)
    resp = await client.post("/upload", data=aiter_bytes(4 * 1024 * 1024, block=64 * 1024))
    assert resp.status == 413
    # The upstream never saw a complete body.
    assert all(r.body_size <= 1024 * 1024 for r in echo_upstream.state.received)
