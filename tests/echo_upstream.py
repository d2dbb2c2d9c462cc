"""A real upstream on a real socket that reports what it received (stands in for OMERO.web)."""

from __future__ import annotations

import asyncio
import gzip
import hashlib
from dataclasses import dataclass, field

from aiohttp import web
from multidict import CIMultiDict


@dataclass
class Received:
    method: str
    raw_path: str
    headers: CIMultiDict[str]
    body_size: int
    body_sha256: str


@dataclass
class EchoState:
    received: list[Received] = field(default_factory=list)
    # Set while a /slow request is being handled (for shutdown tests).
    slow_started: asyncio.Event = field(default_factory=asyncio.Event)
    # While set, every ?tile request is answered with this status (OMERO.web failing).
    tile_status: int | None = None
    # While set, every ?tile request is answered as OMERO.web answers a session it lost.
    tile_logged_out: bool = False
    # ?tile&hold requests wait for this (a test lets them go once it has seen enough).
    tile_release: asyncio.Event = field(default_factory=asyncio.Event)

    # /busy/...: OMERO.web's gunicorn modelled: `threads` requests served at once, each
    # taking `service_time`; more wait in its queue, first come first served.
    threads: int = 4
    service_time: float = 0.05
    _gunicorn: asyncio.Semaphore | None = None
    in_flight: dict[str, int] = field(default_factory=lambda: {"user": 0, "public": 0})
    peak: dict[str, int] = field(default_factory=lambda: {"user": 0, "public": 0})
    served: list[str] = field(default_factory=list)  # the class of each /busy answer, in order

    def gunicorn(self) -> asyncio.Semaphore:
        if self._gunicorn is None:
            self._gunicorn = asyncio.Semaphore(self.threads)
        return self._gunicorn

    def count(self, path: str) -> int:
        """Requests received for `path` (the part before any query)."""
        return sum(1 for r in self.received if r.raw_path.partition("?")[0] == path)


STATE = web.AppKey("state", EchoState)


async def _consume(request: web.Request) -> Received:
    digest = hashlib.sha256()
    size = 0
    async for chunk in request.content.iter_any():
        size += len(chunk)
        digest.update(chunk)
    received = Received(
        request.method, request.raw_path, CIMultiDict(request.headers), size, digest.hexdigest()
    )
    request.app[STATE].received.append(received)
    return received


async def tile(request: web.Request) -> web.Response:
    """An image answer as a render view gives it; the query shapes it (the cache tests):
    delay, hold, status, size, set_cookie, cache_control, vary. The body names the request's
    number for its path, so a test sees whether OMERO.web was asked again."""
    state = request.app[STATE]
    query = request.query
    if "delay" in query:
        await asyncio.sleep(float(query["delay"]))
    if "hold" in query:
        await state.tile_release.wait()
    number = state.count(request.path)
    if state.tile_logged_out:
        raise web.HTTPFound("/webclient/login/?url=" + request.path)
    status = state.tile_status or int(query.get("status", "200"))
    head = f"tile {request.path} #{number}|".encode()
    size = int(query.get("size", "0"))
    body = head + b"t" * max(0, size - len(head))
    response = web.Response(status=status, body=body, content_type="image/jpeg")
    if "set_cookie" in query:
        response.set_cookie(query["set_cookie"], "from-omero-web")
    if "cache_control" in query:
        response.headers["Cache-Control"] = query["cache_control"]
    if "vary" in query:
        response.headers["Vary"] = query["vary"]
    return response


async def busy(request: web.Request) -> web.Response:
    """A view of a small OMERO.web: it queues for one of a few threads, then takes its time.
    /busy/u/... are the tests' users' requests, the rest the crawlers'."""
    state = request.app[STATE]
    kind = "user" if request.path.startswith("/busy/u/") else "public"
    state.in_flight[kind] += 1  # sent by porter: in OMERO.web's hands (thread or queue)
    state.peak[kind] = max(state.peak[kind], state.in_flight[kind])
    try:
        async with state.gunicorn():
            await asyncio.sleep(state.service_time)
            state.served.append(kind)
    finally:
        state.in_flight[kind] -= 1
    return web.Response(text=f"{kind} {request.path}")


async def echo(request: web.Request) -> web.StreamResponse:
    r = await _consume(request)
    if "tile" in request.query:
        return await tile(request)
    if "bsession" in request.query:
        # OMERO.web's handoff: joining an OMERO session answers with its own session cookie.
        response = web.Response(text="OK")
        response.set_cookie("sessionid", "echo-session-" + request.query["bsession"][-6:])
        return response
    return web.json_response(
        {
            "method": r.method,
            "raw_path": r.raw_path,
            "headers": list(r.headers.items()),
            "body_size": r.body_size,
            "body_sha256": r.body_sha256,
        }
    )


async def download(request: web.Request) -> web.StreamResponse:
    await _consume(request)
    size = int(request.match_info["size"])
    response = web.StreamResponse()
    response.content_type = "application/octet-stream"
    if "chunked" in request.query:
        response.enable_chunked_encoding()
    else:
        response.content_length = size
    await response.prepare(request)
    block = b"x" * (256 * 1024)
    sent = 0
    while sent < size and request.method != "HEAD":
        part = block[: min(len(block), size - sent)]
        await response.write(part)
        sent += len(part)
    await response.write_eof()
    return response


async def slow(request: web.Request) -> web.Response:
    await _consume(request)
    request.app[STATE].slow_started.set()
    await asyncio.sleep(float(request.match_info["seconds"]))
    return web.Response(text="slow done")


async def slow_logged_out(request: web.Request) -> web.Response:
    """After a pause, OMERO.web's answer to a session it no longer knows: to its login page."""
    await _consume(request)
    request.app[STATE].slow_started.set()
    await asyncio.sleep(float(request.match_info["seconds"]))
    raise web.HTTPFound("/webclient/login/?url=/x/")


async def slow_cookie(request: web.Request) -> web.Response:
    """After a pause, an answer that sets OMERO.web's session cookie anew (porter captures it)."""
    await _consume(request)
    request.app[STATE].slow_started.set()
    await asyncio.sleep(float(request.match_info["seconds"]))
    response = web.Response(text="cookie set")
    response.set_cookie("sessionid", "rotated-by-omero-web")
    return response


async def slow_body(request: web.Request) -> web.StreamResponse:
    """Headers at once, then silence before the rest of the body."""
    await _consume(request)
    response = web.StreamResponse()
    await response.prepare(request)
    await response.write(b"first part;")
    await asyncio.sleep(float(request.match_info["seconds"]))
    await response.write(b"second part")
    await response.write_eof()
    return response


async def status(request: web.Request) -> web.Response:
    await _consume(request)
    return web.Response(status=int(request.match_info["code"]), text="status page")


# What OMERO.web's debug 500 page can hold: a traceback and the request's own secrets.
DJANGO_500 = """<html><body><h1>ValueError at /webclient/api/</h1>
<pre>Traceback (most recent call last):
  File "omeroweb/webclient/views.py", line 1, in api
    raise ValueError("image 12 is missing")
ValueError: image 12 is missing</pre>
<table><tr><td>HTTP_COOKIE</td><td>sessionid={cookie}</td></tr>
<tr><td>QUERY_STRING</td><td>{query}</td></tr></table></body></html>"""


async def django_500(request: web.Request) -> web.Response:
    await _consume(request)
    page = DJANGO_500.format(
        cookie=request.cookies.get("sessionid", ""), query=request.query_string
    )
    return web.Response(status=500, text=page, content_type="text/html")


async def hop(request: web.Request) -> web.Response:
    await _consume(request)
    response = web.Response(text="hop")
    response.headers["Connection"] = "X-Upstream-Hop"
    response.headers["X-Upstream-Hop"] = "must not pass"
    response.headers["Keep-Alive"] = "timeout=5"
    response.headers["Proxy-Authenticate"] = "Basic"
    response.headers["Trailer"] = "X-Trailer"
    response.headers["X-End-To-End"] = "passes"
    return response


async def redirect(request: web.Request) -> web.Response:
    await _consume(request)
    return web.Response(status=302, headers={"Location": "/echo/after-redirect"})


async def gzipped(request: web.Request) -> web.Response:
    await _consume(request)
    body = gzip.compress(b"compressed body " * 100)
    return web.Response(
        body=body, headers={"Content-Encoding": "gzip", "Content-Type": "text/plain"}
    )


async def websocket(request: web.Request) -> web.WebSocketResponse:
    await _consume(request)
    ws = web.WebSocketResponse(protocols=("omero.test",))
    await ws.prepare(request)
    async for message in ws:
        if message.type == web.WSMsgType.TEXT:
            if message.data == "close-4001":
                await ws.close(code=4001, message=b"upstream closes")
                break
            await ws.send_str("echo:" + message.data)
        elif message.type == web.WSMsgType.BINARY:
            await ws.send_bytes(message.data[::-1])
    return ws


def create_echo_app() -> web.Application:
    app = web.Application(client_max_size=1024**3)
    app[STATE] = EchoState()
    app.router.add_get("/ws", websocket)
    app.router.add_route("*", "/download/{size:\\d+}", download)
    app.router.add_route("*", "/slow/{seconds}", slow)
    app.router.add_route("*", "/slow-body/{seconds}", slow_body)
    app.router.add_route("*", "/slow-logged-out/{seconds}", slow_logged_out)
    app.router.add_route("*", "/slow-cookie/{seconds}", slow_cookie)
    app.router.add_route("*", "/status/{code:\\d+}", status)
    app.router.add_route("*", "/hop", hop)
    app.router.add_route("*", "/django-500/{tail:.*}", django_500)
    app.router.add_route("*", "/redirect", redirect)
    app.router.add_route("*", "/gzip", gzipped)
    app.router.add_route("*", "/busy/{tail:.*}", busy)
    app.router.add_route("*", "/{tail:.*}", echo)
    return app
