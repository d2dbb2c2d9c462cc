"""The outermost middleware: request id, client address, access log, last-resort 500."""

from __future__ import annotations

import itertools
import logging
import re
import secrets
import time
import traceback
from collections.abc import Awaitable, Callable

from aiohttp import hdrs, web

from proxy.errors import error_response
from proxy.keys import ALLOWED_HOSTS, SCOPE, SETTINGS, TRUSTED_PROXIES, RequestScope
from proxy.reporting import report_exception

log = logging.getLogger("porter.proxy")
access_log = logging.getLogger("porter.access")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{8,64}$")


# Ids only need to be unique, not secret: a random per-process prefix and a counter.
_ID_PREFIX = secrets.token_hex(5)
_ID_COUNTER = itertools.count(1)


def new_request_id() -> str:
    return f"{_ID_PREFIX}{next(_ID_COUNTER):06x}"


def _scope_for(request: web.Request) -> RequestScope:
    proxies = request.app[TRUSTED_PROXIES]
    client = proxies.resolve(
        request.remote,
        request.scheme,
        request.headers.get(hdrs.HOST),
        request.headers.getall(hdrs.X_FORWARDED_FOR, ()),
        request.headers.getall(hdrs.X_FORWARDED_PROTO, ()),
        request.headers.getall(hdrs.X_FORWARDED_HOST, ()),
    )
    request_id = new_request_id()
    incoming = request.headers.get("X-Request-Id", "")
    # A front proxy we trust may have named the request already; keep its id for tracing.
    if len(client.forwarded_for) > 1 and _REQUEST_ID.match(incoming):
        request_id = incoming
    prefix = request.app[SETTINGS].proxy.prefix
    path = request.raw_path.split("?", 1)[0]
    if prefix and (path == prefix or path.startswith(prefix + "/")):
        path = path[len(prefix) :] or "/"
    return RequestScope(request_id=request_id, client=client, path=path)


@web.middleware
async def request_scope(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Name the request, resolve its client, log it once, and turn a crash into a 500 page."""
    started = time.perf_counter()
    scope = _scope_for(request)
    request[SCOPE] = scope
    status = 500
    response: web.StreamResponse
    try:
        if _host_refused(request, scope):
            response = error_response(request, 400, "The Host header is malformed or not served.")
        else:
            response = await handler(request)
        status = response.status
    except web.HTTPException as exc:
        status = exc.status
        if exc.status < 400:
            raise
        response = error_response(request, exc.status, headers=_allow_header(exc))
    except ConnectionResetError:
        log.debug("client gone rid=%s", scope.request_id)
        raise
    except Exception as exc:
        log.exception("unhandled error rid=%s %s", scope.request_id, request.method)
        report_exception(request, exc)
        response = error_response(request, 500, traceback=traceback.format_exc())
    finally:
        if request.app[SETTINGS].proxy.access_log:
            # The path only: a query string can carry tokens.
            access_log.info(
                "%s %s %s %d %.1fms rid=%s",
                scope.client.address,
                request.method,
                request.raw_path.split("?", 1)[0],
                status,
                (time.perf_counter() - started) * 1000,
                scope.request_id,
            )
    if not response.prepared:
        response.headers["X-Request-Id"] = scope.request_id
    return response


def _host_refused(request: web.Request, scope: RequestScope) -> bool:
    """A Host porter must not pass on: malformed, or not in allowed_hosts. HTTP/1.0 may
    leave Host out (then it is served only with allowed_hosts = ['*'])."""
    host = scope.client.host
    hosts = request.app[ALLOWED_HOSTS]
    if not host and hdrs.HOST not in request.headers and request.version < (1, 1):
        return not hosts.any
    if hosts.allows(host):
        return False
    log.info("refused Host rid=%s (length %d)", scope.request_id, len(host))
    return True


def _allow_header(exc: web.HTTPException) -> dict[str, str] | None:
    allow = exc.headers.get(hdrs.ALLOW)
    return {hdrs.ALLOW: allow} if allow else None
