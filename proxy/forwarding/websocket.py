"""WebSocket pass-through: one pump per direction; when one ends, the other is cancelled."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping

import aiohttp
from aiohttp import hdrs, web

from proxy.answers import error_response
from proxy.forwarding.send import upstream_headers, upstream_url
from proxy.keys import CLIENT_SESSION, REQUEST_ID, SCOPE, WEBSOCKETS

log = logging.getLogger("porter.proxy")

# Close codes that mark a missing or abnormal close and may not be sent on the wire.
_UNSENDABLE = frozenset({1005, 1006, 1015})

# The handshake headers aiohttp sets itself on both legs.
_HANDSHAKE = (
    "Sec-WebSocket-Key",
    "Sec-WebSocket-Version",
    "Sec-WebSocket-Extensions",
    "Sec-WebSocket-Accept",
    "Sec-WebSocket-Protocol",
)


def is_websocket(request: web.Request) -> bool:
    upgrade = request.headers.get(hdrs.UPGRADE, "").lower()
    return request.method == hdrs.METH_GET and upgrade == "websocket"


async def forward_websocket(
    request: web.Request, cookies: Mapping[str, str] | None = None
) -> web.StreamResponse:
    protocols = [
        p.strip()
        for value in request.headers.getall("Sec-WebSocket-Protocol", ())
        for p in value.split(",")
        if p.strip()
    ]
    headers = upstream_headers(request, cookies)
    for name in _HANDSHAKE:
        headers.popall(name, None)
    try:
        upstream = await request.app[CLIENT_SESSION].ws_connect(
            upstream_url(request), headers=headers, protocols=protocols, autoping=False
        )
    except aiohttp.WSServerHandshakeError as exc:
        return error_response(request, exc.status if exc.status >= 400 else 502)
    except asyncio.TimeoutError:
        return error_response(request, 504)
    except (aiohttp.ClientError, OSError):
        return error_response(request, 502)
    client = web.WebSocketResponse(
        protocols=(upstream.protocol,) if upstream.protocol else (), autoping=False
    )
    client.headers[REQUEST_ID] = request[SCOPE].request_id
    await client.prepare(request)
    request.app[WEBSOCKETS].add(client)
    try:
        await _pump_both(client, upstream)
    finally:
        request.app[WEBSOCKETS].discard(client)
        await upstream.close()
        await client.close()
    return client


async def _pump_both(
    client: web.WebSocketResponse, upstream: aiohttp.ClientWebSocketResponse
) -> None:
    to_upstream = asyncio.create_task(_pump(client, upstream))
    to_client = asyncio.create_task(_pump(upstream, client))
    try:
        await asyncio.wait({to_upstream, to_client}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (to_upstream, to_client):
            task.cancel()
        await asyncio.gather(to_upstream, to_client, return_exceptions=True)


async def _pump(
    source: web.WebSocketResponse | aiohttp.ClientWebSocketResponse,
    sink: web.WebSocketResponse | aiohttp.ClientWebSocketResponse,
) -> None:
    async for message in source:
        if message.type == aiohttp.WSMsgType.TEXT:
            await sink.send_str(message.data)
        elif message.type == aiohttp.WSMsgType.BINARY:
            await sink.send_bytes(message.data)
        elif message.type == aiohttp.WSMsgType.PING:
            await sink.ping(message.data)
        elif message.type == aiohttp.WSMsgType.PONG:
            await sink.pong(message.data)
        else:
            break
    # The source closed: pass its close code on.
    code = source.close_code
    if code is None or code in _UNSENDABLE or code < 1000:
        code = aiohttp.WSCloseCode.OK
    await sink.close(code=code)
