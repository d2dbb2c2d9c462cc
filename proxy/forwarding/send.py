"""Forward a request to OMERO.web and stream the answer back, never buffering a body."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Iterable, Mapping

import aiohttp
from aiohttp import hdrs, web
from multidict import CIMultiDict
from yarl import URL

from filters.forwarded import FORWARDING_HEADERS, IDENTITY_HEADERS, is_identity_header
from porter_errors import Refused
from proxy.answers import error_response
from proxy.finish import finish
from proxy.forwarding.cookies import rewrite_cookies, take_set_cookies
from proxy.forwarding.headers import end_to_end, skip_set
from proxy.keys import (
    CLIENT_SESSION,
    COOKIE_NAMES,
    REQUEST_ID,
    SCOPE,
    SETTINGS,
    TARGET,
)
from proxy.principal import Capture
from proxy.reporting import report_unavailable, report_upstream_error

log = logging.getLogger("porter.proxy")

CHUNK = 64 * 1024
# Bodies up to this size, of declared length, are read whole and sent with the headers.
SMALL_BODY = 64 * 1024

# Never sent upstream as the client sent them: porter sets these itself.
REQUEST_DROP = (*FORWARDING_HEADERS, *IDENTITY_HEADERS, hdrs.EXPECT, REQUEST_ID)
_REQUEST_SKIP = skip_set(REQUEST_DROP)


class UpstreamRequest(aiohttp.ClientRequest):
    """aiohttp's client request without the headers aiohttp would add of its own: OMERO.web
    gets the client's User-Agent and Accept-Encoding, or none (never aiohttp's, which would
    ask for gzip a browser may not have asked for). `Accept: */*` is added when absent, as
    aiohttp does.

    The same as `skip_auto_headers=("User-Agent", "Accept-Encoding")` on the session, which
    builds a multidict of the skipped names and copies the headers on every request
    (~2.5% of porter's CPU at c=32 in a py-spy profile)."""

    def update_auto_headers(self, _skip_auto_headers: Iterable[str] | None) -> None:
        if hdrs.ACCEPT not in self.headers:
            self.headers[hdrs.ACCEPT] = "*/*"


class BodyTooLarge(Refused):
    """The streamed request body went past the configured limit (413)."""

    def __init__(self) -> None:
        super().__init__(413, "The request body is too large.")


class LimitedBody:
    """The request body as an async iterator that stops past `limit` bytes."""

    def __init__(self, content: aiohttp.StreamReader, limit: int) -> None:
        self._content = content
        self._limit = limit
        self.exceeded = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        seen = 0
        async for chunk in self._content.iter_chunked(CHUNK):
            seen += len(chunk)
            if seen > self._limit:
                self.exceeded = True
                raise BodyTooLarge
            yield chunk


def upstream_headers(
    request: web.Request, cookies: Mapping[str, str] | None = None
) -> CIMultiDict[str]:
    """The client's end-to-end headers plus porter's own forwarding headers.

    Porter's cookies and browser cookies named like the ones porter holds for OMERO.web are
    dropped; `cookies` (the held ones of this request's session) are added.
    """
    headers = end_to_end(request.headers, _REQUEST_SKIP, is_identity_header)
    set_forwarding(request, headers)
    app = request.app
    sso = app[SETTINGS].sso
    if sso.enabled and sso.bearer:  # porter consumes bearer tokens; OMERO.web never sees one
        headers.popall(hdrs.AUTHORIZATION, None)
    rewrite_cookies(headers, app[COOKIE_NAMES].dropped, cookies)
    return headers


def set_forwarding(request: web.Request, headers: CIMultiDict[str]) -> None:
    """Porter's own X-Forwarded-* (the client as porter believes it) and request id."""
    scope = request[SCOPE]
    headers[hdrs.X_FORWARDED_FOR] = ", ".join(scope.client.forwarded_for)
    headers[hdrs.X_FORWARDED_PROTO] = scope.client.scheme
    if scope.client.host:
        headers[hdrs.X_FORWARDED_HOST] = scope.client.host
    headers[REQUEST_ID] = scope.request_id


def upstream_url(request: web.Request) -> URL:
    """OMERO.web's URL for this request: the path that was matched (canonical, re-encoded)
    and the query as the client sent it."""
    base = request.app[SETTINGS].proxy.upstream.rstrip("/")
    return URL(base + request.get(TARGET, request.raw_path), encoded=True)


def _has_body(request: web.Request) -> bool:
    return request.content_length not in (None, 0) or hdrs.TRANSFER_ENCODING in request.headers


async def send(
    request: web.Request, cookies: Mapping[str, str] | None = None
) -> aiohttp.ClientResponse | web.Response:
    """Send `request` to OMERO.web; its answer, or porter's error page (413, 502, 504)."""
    settings = request.app[SETTINGS].proxy
    limit = settings.max_body_size
    if request.content_length is not None and request.content_length > limit:
        return error_response(request, 413, headers={hdrs.CONNECTION: "close"})
    body = LimitedBody(request.content, limit) if _has_body(request) else None
    session = request.app[CLIENT_SESSION]
    started = time.perf_counter()
    try:
        upstream = await session.request(
            request.method,
            upstream_url(request),
            headers=upstream_headers(request, cookies),
            data=body.__aiter__() if body is not None else None,
            allow_redirects=False,
        )
        request[SCOPE].notes.upstream_seconds = time.perf_counter() - started
        return upstream
    except asyncio.TimeoutError:
        log.warning("upstream timed out rid=%s", request[SCOPE].request_id)
        return unavailable(request, 504, "timeout")
    except (aiohttp.ClientError, BodyTooLarge, OSError) as exc:
        if body is not None and body.exceeded:
            return error_response(request, 413, headers={hdrs.CONNECTION: "close"})
        log.warning(
            "upstream unreachable rid=%s: %s", request[SCOPE].request_id, type(exc).__name__
        )
        return unavailable(request, 502, "unreachable")


async def answer(
    request: web.Request, upstream: aiohttp.ClientResponse, capture: Capture | None = None
) -> web.StreamResponse:
    """Turn OMERO.web's answer into porter's: 5xx replaced, held cookies taken, rest relayed.

    `capture` receives the new values of held cookies OMERO.web set (None: deleted); without
    it they are dropped. Either way browsers never get them.
    """
    async with upstream:
        if upstream.status >= 500:
            return await upstream_failed(request, upstream)
        headers = end_to_end(upstream.headers)
        https = request[SCOPE].client.scheme == "https"
        taken = take_set_cookies(headers, request.app[COOKIE_NAMES].held, https)
        if taken and capture is not None:
            await capture(taken)
        return await relay(request, upstream, headers)


def unavailable(request: web.Request, status: int, error: str) -> web.Response:
    """OMERO.web could not be reached or did not answer (`error`: timeout, unreachable,
    answered): tell the user and the admins."""
    report_unavailable(request, status, error)
    return error_response(request, status)


async def upstream_failed(request: web.Request, upstream: aiohttp.ClientResponse) -> web.Response:
    """OMERO.web answered 5xx: the admins get its body, the user porter's own error page.

    OMERO.web's 500 pages can carry a traceback (to AJAX clients even without debug); the
    user sees it only with proxy.debug, and only in a browser.
    """
    status = upstream.status
    if status in (502, 503, 504):
        return unavailable(request, status, "answered")
    limit = 4 * request.app[SETTINGS].mail.excerpt_size
    try:
        excerpt = await upstream.content.read(limit)
    except (asyncio.TimeoutError, aiohttp.ClientError):
        excerpt = b""
    text = excerpt.decode(upstream.get_encoding() if upstream.charset else "utf-8", "replace")
    log.warning("upstream answered %d rid=%s", status, request[SCOPE].request_id)
    report_upstream_error(request, status, text)
    return error_response(request, 500, traceback=text)


def _small_body(request: web.Request, upstream: aiohttp.ClientResponse) -> bool:
    """A short body of known length: sent in one write with its headers, which is faster."""
    length = upstream.content_length
    return (
        length is not None
        and length <= SMALL_BODY
        and request.method != hdrs.METH_HEAD
        and upstream.status not in (204, 304)
    )


async def relay(
    request: web.Request, upstream: aiohttp.ClientResponse, headers: CIMultiDict[str]
) -> web.StreamResponse:
    """Send OMERO.web's answer to the client: short bodies at once, the rest streamed."""
    headers[REQUEST_ID] = request[SCOPE].request_id
    if _small_body(request, upstream):
        try:
            body = await upstream.read()
        except (asyncio.TimeoutError, aiohttp.ClientError):
            return error_response(request, 502)
        headers.popall(hdrs.CONTENT_LENGTH, None)
        return web.Response(
            status=upstream.status, reason=upstream.reason, body=body, headers=headers
        )
    response = web.StreamResponse(status=upstream.status, reason=upstream.reason)
    response.headers.extend(headers)
    finish(request, response)  # streamed: its headers go out here, not in the request scope
    try:
        await response.prepare(request)
        async for chunk in upstream.content.iter_any():
            await response.write(chunk)
    except ConnectionResetError:
        # The client went away; nobody is left to answer.
        log.debug("client gone mid-response rid=%s", request[SCOPE].request_id)
        return response
    except (asyncio.TimeoutError, aiohttp.ClientError) as exc:
        # Headers are gone already: the only honest signal left is to cut the connection.
        log.warning(
            "upstream failed mid-response rid=%s: %s",
            request[SCOPE].request_id,
            type(exc).__name__,
        )
        if request.transport is not None:
            request.transport.close()
        return response
    await response.write_eof()
    return response
