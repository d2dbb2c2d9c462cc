"""Public answers through porter's cache: a hit never touches OMERO.web, the requests for one
missing answer share ONE fetch, and a stale copy is served while OMERO.web is down.

Only the public principal reaches this module (gate.py); its answers are the same for every
anonymous visitor, which is what makes them cacheable at all. A fetch is sent with headers
porter builds (no visitor's cookie, Accept-* or conditional header), so the stored answer is
the answer to the key and to nothing a visitor chose.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass

import aiohttp
from aiohttp import hdrs, web
from multidict import CIMultiDict
from yarl import URL

import metrics
from cache.entry import Entry
from cache.key import cache_key, normalise_query
from cache.store import PublicCache
from porter_errors import Refused, SessionEnded, Unavailable, UpstreamFailed
from proxy.admission import Overloaded
from proxy.answers import error_response
from proxy.forwarding.cookies import rewrite_cookies, take_set_cookies
from proxy.forwarding.headers import end_to_end
from proxy.forwarding.renewal import forward_renewing, logged_out_upstream
from proxy.forwarding.send import set_forwarding
from proxy.keys import (
    CACHE_FLIGHTS,
    CLIENT_SESSION,
    COOKIE_NAMES,
    DECISION,
    PRINCIPAL,
    PUBLIC_CACHE,
    REQUEST_ID,
    SCOPE,
    SETTINGS,
)
from proxy.limits import upstream_slot
from proxy.principal import Principal
from proxy.reporting import report_exception, report_unavailable, report_upstream_error

log = logging.getLogger("porter.cache")

X_CACHE = "X-Cache"
CACHE_STATUS = "Cache-Status"  # RFC 9211
CACHE_NAME = "omero-porter"
# Set by porter on every cached answer, or meaningless once stored.
_NOT_STORED = frozenset(
    h.lower()
    for h in (
        hdrs.DATE,
        hdrs.AGE,
        hdrs.CACHE_CONTROL,
        hdrs.EXPIRES,
        hdrs.PRAGMA,
        hdrs.VARY,
        hdrs.SET_COOKIE,
        hdrs.SERVER,
        hdrs.CONTENT_LENGTH,
        REQUEST_ID,
    )
)
_UNCACHEABLE_DIRECTIVES = frozenset({"private", "no-store", "no-cache"})
# The request headers a fetch carries are porter's, so a Vary on these changes nothing.
_HARMLESS_VARY = frozenset({"cookie", "accept-encoding"})


@dataclass(frozen=True)
class Fresh:
    entry: Entry


@dataclass(frozen=True)
class Failed:
    """OMERO.web (or the public session) failed: reported once, by the fetch."""

    status: int
    text: str = ""
    error: Exception | None = None


@dataclass(frozen=True)
class Passed:
    """Not storable. The request that started the fetch is answered with it; the others
    forward on their own. `body` None: too large to hold, everyone forwards."""

    status: int = 0
    reason: str | None = None
    headers: CIMultiDict[str] | None = None
    body: bytes | None = None


Outcome = Fresh | Failed | Passed

# What renewing the public session can raise: every branch of porter's tree but Internal
# (a bug); the error boundary answers each.
KNOWN_FAILURES = (Refused, Unavailable, UpstreamFailed, SessionEnded)


def cache_ttl(request: web.Request) -> float | None:
    """Seconds the public answer to this request stays fresh; None: not cached."""
    cache = request.app.get(PUBLIC_CACHE)  # Application.get: a dict lookup, no KeyError
    if cache is None:
        return None
    canonical = request[DECISION].canonical
    return None if canonical is None else cache.rules.ttl(request.method, canonical)


async def forward_cached(
    request: web.Request, principal: Principal, ttl: float
) -> web.StreamResponse:
    """Answer a cacheable public request from the cache, or from the ONE fetch of its key."""
    cache = request.app[PUBLIC_CACHE]
    path = request[DECISION].forward or ""
    query = normalise_query(request.raw_path.partition("?")[2])
    key = _key(request, principal.server_id or 0, path, query)
    if key in cache.too_large:
        return await forward_renewing(request, principal)
    entry = cache.memory_get(key)
    if entry is None and cache.disk is not None:
        entry = await cache.get(key)
    now = time.time()
    if entry is not None:
        if entry.fresh(now):
            cache.counters.hits += 1
            metrics.CACHE_HIT.inc()
            return _serve(request, entry, now, "HIT", f"hit; ttl={_left(entry, now)}")
        if entry.age(now) < entry.ttl + cache.settings.stale_while_revalidate:
            cache.counters.stale += 1
            metrics.CACHE_STALE.inc()
            _refresh(request, principal, key, path, query, ttl)
            return _serve(request, entry, now, "STALE", f"hit; fwd=stale; ttl={_left(entry, now)}")
    started = not request.app[CACHE_FLIGHTS].running(key)
    outcome = await _wait_for_fetch(request, principal, key, path, query, ttl, started)
    if isinstance(outcome, Fresh):
        return _serve(request, outcome.entry, time.time(), "MISS", "fwd=uri-miss; stored")
    if isinstance(outcome, Failed):
        return _failed(request, cache, entry, outcome)
    if started and outcome.body is not None and outcome.headers is not None:
        headers = CIMultiDict(outcome.headers)
        headers[REQUEST_ID] = request[SCOPE].request_id
        return web.Response(
            status=outcome.status, reason=outcome.reason, body=outcome.body, headers=headers
        )
    return await forward_renewing(request, principal)


async def _wait_for_fetch(
    request: web.Request,
    principal: Principal,
    key: str,
    path: str,
    query: str,
    ttl: float,
    started: bool,
) -> Outcome:
    """The outcome of THE fetch of `key`: this request's own when it `started` it (the fetch
    outlives the request if the client goes), else the one under way, at most lock_timeout."""
    cache = request.app[PUBLIC_CACHE]
    flights = request.app[CACHE_FLIGHTS]
    cache.counters.waiting += 1
    try:
        fetch = flights.run(key, lambda: _fetch(request, principal, key, path, query, ttl))
        if started:
            outcome: Outcome = await fetch
            return outcome
        cache.counters.collapsed += 1
        try:
            return await asyncio.wait_for(fetch, cache.settings.lock_timeout)
        except asyncio.TimeoutError:
            cache.counters.lock_timeouts += 1
            return Failed(504)
    finally:
        cache.counters.waiting -= 1


def _failed(
    request: web.Request, cache: PublicCache, entry: Entry | None, outcome: Failed
) -> web.Response:
    """A failed fetch: the stale copy while stale_if_error allows, else the failure."""
    now = time.time()
    if entry is not None and entry.age(now) < entry.ttl + cache.settings.stale_if_error:
        cache.counters.stale_if_error += 1
        metrics.CACHE_STALE_IF_ERROR.inc()
        detail = f"hit; ttl={_left(entry, now)}; fwd=uri-miss; fwd-status={outcome.status}"
        return _serve(request, entry, now, "STALE", detail + "; detail=stale-if-error")
    if outcome.error is not None:
        # the error middleware answers it, as without the cache (its page shows no trace)
        raise outcome.error.with_traceback(None)
    return error_response(request, outcome.status, traceback=outcome.text or None)


def _key(request: web.Request, server_id: int, path: str, query: str) -> str:
    client = request[SCOPE].client
    # OMERO.web sees both the Host header and (from trusted proxies) X-Forwarded-Host
    host = client.host
    if host != request.host:
        host = f"{host},{request.host}"
    return cache_key(server_id, client.scheme, host, path, query)


def public_hit(request: web.Request, app: web.Application, query: str) -> web.Response | None:
    """The public lane: a fresh cached answer to a request that can be nobody's but the
    public user's, straight from the entry, before the identity chain; None: the full path.

    Such a request is a GET or HEAD on a path decided public that carries no Authorization
    header and none of the cookies the identity chain reads, not even empty, and asks for no
    websocket. Only a fresh entry in the memory tier answers here: a miss, a stale entry or
    the disk tier take the full path, which is where fetches, renewal and stale-if-error
    live."""
    cache = app.get(PUBLIC_CACHE)
    if cache is None or request.method not in _LANE_METHODS:
        return None
    headers = request.headers
    if hdrs.AUTHORIZATION in headers or hdrs.UPGRADE in headers:
        return None
    if hdrs.COOKIE in headers:
        credentials = app[COOKIE_NAMES].credentials
        for raw in headers.getall(hdrs.COOKIE):
            # a name anywhere in the header is enough to stay off the lane: the chain's
            # own reading (cookie_value, aiohttp's parser) finds only cookies named there
            if any(name in raw for name in credentials):
                return None
    decision = request[DECISION]
    if decision.canonical is None or cache.rules.ttl(request.method, decision.canonical) is None:
        return None
    server_id = app[SETTINGS].public_session.server_id
    key = _key(request, server_id, decision.forward or "", normalise_query(query))
    entry = cache.memory_get(key)
    now = time.time()
    if entry is None or not entry.fresh(now):
        return None
    cache.counters.hits += 1
    metrics.CACHE_HIT.inc()
    request[PRINCIPAL] = _public(server_id)
    return _serve(request, entry, now, "HIT", f"hit; ttl={_left(entry, now)}")


@functools.cache
def _public(server_id: int) -> Principal:
    """The public user on the lane: no session, no cookies (nothing is forwarded)."""
    return Principal("public", "public", server_id)


_LANE_METHODS = frozenset({hdrs.METH_GET, hdrs.METH_HEAD})


def _left(entry: Entry, now: float) -> int:
    """Whole seconds still fresh (negative: stale); Age plus this is the ttl."""
    return int(entry.ttl) - int(entry.age(now))


def _serve(request: web.Request, entry: Entry, now: float, state: str, detail: str) -> web.Response:
    request[SCOPE].notes.cache_state = state
    headers = [
        *entry.headers,
        (hdrs.CACHE_CONTROL, f"public, max-age={max(0, _left(entry, now))}"),
        (hdrs.AGE, str(int(entry.age(now)))),
        # Caches in front key on these: a logged-in user's request never gets this copy.
        (hdrs.VARY, "Cookie, Authorization"),
        (X_CACHE, state),
        (CACHE_STATUS, f"{CACHE_NAME}; {detail}"),
        (REQUEST_ID, request[SCOPE].request_id),
    ]
    return web.Response(body=entry.body, headers=headers)


def _refresh(
    request: web.Request, principal: Principal, key: str, path: str, query: str, ttl: float
) -> None:
    """Refresh `key` in the background, unless a fetch of it is already under way."""
    flights = request.app[CACHE_FLIGHTS]
    if not flights.running(key):
        refresh = flights.run(key, lambda: _fetch(request, principal, key, path, query, ttl))
        request.app[PUBLIC_CACHE].run_in_background(refresh)


def _fetch_headers(request: web.Request, cookies: Mapping[str, str]) -> CIMultiDict[str]:
    """Porter's request for a public answer: nothing of the visitor's but the Host."""
    headers: CIMultiDict[str] = CIMultiDict({hdrs.HOST: request.host})
    headers[hdrs.ACCEPT_ENCODING] = "identity"
    set_forwarding(request, headers)
    rewrite_cookies(headers, frozenset(), cookies)
    return headers


async def _fetch(
    request: web.Request, principal: Principal, key: str, path: str, query: str, ttl: float
) -> Outcome:
    """GET the answer of `key` from OMERO.web as the public user (renewing its session once),
    store it when it may be stored. Never raises: failures are outcomes."""
    app = request.app
    cache = app[PUBLIC_CACHE]
    settings = app[SETTINGS].proxy
    target = settings.prefix + path + (f"?{query}" if query else "")
    url = URL(settings.upstream.rstrip("/") + target, encoded=True)
    try:
        async with upstream_slot(request, principal):
            return await _fetch_slotted(request, principal, cache, url, key, ttl)
    except Overloaded as exc:  # no slot in time: 503 for this request and its followers
        return Failed(503, error=exc)


async def _fetch_slotted(
    request: web.Request,
    principal: Principal,
    cache: PublicCache,
    url: URL,
    key: str,
    ttl: float,
) -> Outcome:
    app = request.app
    cookies = principal.cookies
    try:
        if not cookies:  # no public session now (OMERO is down): no request without one
            cookies = await principal.renew()
        for attempt in range(2):
            headers = _fetch_headers(request, cookies)
            cache.counters.fetches += 1
            started = time.perf_counter()
            try:
                upstream = await app[CLIENT_SESSION].request(
                    hdrs.METH_GET, url, headers=headers, allow_redirects=False
                )
                request[SCOPE].notes.upstream_seconds = time.perf_counter() - started
            except asyncio.TimeoutError:
                return _unavailable(request, 504, "timeout")
            except (aiohttp.ClientError, OSError):
                return _unavailable(request, 502, "unreachable")
            async with upstream:
                if attempt == 0 and await logged_out_upstream(request, upstream, cookies):
                    cookies = await principal.renew()
                    continue
                return await _take(request, cache, upstream, key, ttl)
        raise AssertionError("unreachable")  # the second attempt always returns
    except KNOWN_FAILURES as exc:  # the public session could not be renewed
        log.warning("cache fetch failed rid=%s: %s", request[SCOPE].request_id, type(exc).__name__)
        return Failed(503, error=exc)
    except Exception as exc:  # a bug: reported once, here, not by each request waiting
        log.exception("cache fetch failed rid=%s", request[SCOPE].request_id)
        report_exception(request, exc)
        return Failed(500)


def _unavailable(request: web.Request, status: int, error: str) -> Failed:
    log.warning(
        "upstream unavailable (%d) for a cache fetch rid=%s", status, request[SCOPE].request_id
    )
    report_unavailable(request, status, error)
    return Failed(status)


async def _take(
    request: web.Request,
    cache: PublicCache,
    upstream: aiohttp.ClientResponse,
    key: str,
    ttl: float,
) -> Outcome:
    status = upstream.status
    if status >= 500:
        if status in (502, 503, 504):
            return _unavailable(request, status, "answered")
        excerpt = await _read(upstream, 4 * request.app[SETTINGS].mail.excerpt_size)
        text = (excerpt or b"").decode("utf-8", "replace")
        log.warning(
            "upstream answered %d to a cache fetch rid=%s", status, request[SCOPE].request_id
        )
        report_upstream_error(request, status, text)
        return Failed(500, text)
    limit = cache.settings.max_object_size
    length = upstream.content_length
    if length is not None and length > limit:
        cache.too_large[key] = True
        return Passed()
    body = await _read(upstream, limit + 1)
    if body is None:
        return _unavailable(request, 502, "unreachable")
    if len(body) > limit:
        cache.too_large[key] = True
        return Passed()
    headers = end_to_end(upstream.headers)
    https = request[SCOPE].client.scheme == "https"
    taken = take_set_cookies(headers, request.app[COOKIE_NAMES].held, https)
    if status == 200 and not taken and _storable(headers):
        stored = tuple((k, v) for k, v in headers.items() if k.lower() not in _NOT_STORED)
        entry = Entry(stored, body, time.time(), ttl)
        cache.put(key, entry)
        cache.counters.misses += 1
        metrics.CACHE_MISS.inc()
        return Fresh(entry)
    cache.counters.passes += 1
    metrics.CACHE_PASS.inc()
    headers.popall(hdrs.CONTENT_LENGTH, None)
    return Passed(status, upstream.reason, headers, body)


def _storable(headers: CIMultiDict[str]) -> bool:
    if hdrs.SET_COOKIE in headers:
        return False
    if hdrs.CACHE_CONTROL not in headers and hdrs.VARY not in headers:
        return True
    directives = {
        d.strip().split("=", 1)[0].lower()
        for v in headers.getall(hdrs.CACHE_CONTROL, ())
        for d in v.split(",")
    }
    if directives & _UNCACHEABLE_DIRECTIVES:
        return False
    vary = {v.strip().lower() for value in headers.getall(hdrs.VARY, ()) for v in value.split(",")}
    return vary <= _HARMLESS_VARY | {""}


async def _read(upstream: aiohttp.ClientResponse, limit: int) -> bytes | None:
    """Up to `limit` bytes of the body (stops there); None if OMERO.web failed mid-body."""
    parts: list[bytes] = []
    size = 0
    try:
        async for chunk in upstream.content.iter_any():
            parts.append(chunk)
            size += len(chunk)
            if size >= limit:
                break
    except (asyncio.TimeoutError, aiohttp.ClientError):
        return None
    return b"".join(parts)
