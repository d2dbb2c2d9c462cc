"""The outermost middleware: request id, client address, Host, access log."""

from __future__ import annotations

import itertools
import logging
import re
import secrets
import time
from collections.abc import Awaitable, Callable

from aiohttp import hdrs, web

from proxy.errors import error_response
from proxy.finish import finish
from proxy.keys import (
    ALLOWED_HOSTS,
    QUIET,
    REQUEST_ID,
    SCOPE,
    SETTINGS,
    TRUSTED_PROXIES,
    RequestScope,
)

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
    incoming = request.headers.get(REQUEST_ID, "")
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
    """Name the request, resolve its client and Host, and log it once (errors are the
    error boundary's, the next middleware)."""
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
    except web.HTTPException as exc:  # a redirect raised (the boundary answers the others)
        status = exc.status
        raise
    finally:
        if request.app[SETTINGS].proxy.access_log and not request.get(QUIET):
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
        response.headers[REQUEST_ID] = scope.request_id
        finish(request, response)
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
