"""WebSocket pass-through to the upstream."""

from __future__ import annotations

import aiohttp

from tests.porter_fixtures import PorterFactory, Upstream, free_port


async def test_websocket_messages_pass_both_ways(
    echo_upstream: Upstream, porter: PorterFactory
) -> None:
    client = await porter()
    async with client.ws_connect("/ws", protocols=("omero.test",)) as ws:
        assert ws.protocol == "omero.test"
        await ws.send_str("hello")
        assert await ws.receive_str() == "echo:hello"
        await ws.send_bytes(b"\x01\x02\x03")
        assert await ws.receive_bytes() == b"\x03\x02\x01"
    received = echo_upstream.state.received[-1]
    assert received.raw_path == "/ws"
    assert received.headers["X-Forwarded-For"] == "127.0.0.1"


async def test_upstream_close_code_reaches_the_client(
    echo_upstream: Upstream, porter: PorterFactory
) -> None:
    client = await porter()
    async with client.ws_connect("/ws") as ws:
        await ws.send_str("close-4001")
        message = await ws.receive()
        assert message.type == aiohttp.WSMsgType.CLOSE
        assert ws.close_code == 4001


async def test_websocket_to_dead_upstream_is_502(porter: PorterFactory) -> None:
    client = await porter(upstream=f"http://127.0.0.1:{free_port()}")
    resp = await client.get(
        "/ws",
        headers={
            "Upgrade": "websocket",
            "Connection": "Upgrade",
            "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
            "Sec-WebSocket-Version": "13",
        },
    )
    assert resp.status == 502
