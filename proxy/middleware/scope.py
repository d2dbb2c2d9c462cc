"""The outermost middleware: request id, client address, Host, access log."""

from __future__ import annotations

import itertools
import logging
import re
import secrets
import time
from collections.abc import Awaitable, Callable

from aiohttp import hdrs, web

import metrics
from proxy.answers import error_response
from proxy.finish import finish
from proxy.keys import (
    ALLOWED_HOSTS,
    DECISION,
    METRICS_ON,
    PRINCIPAL,
    REQUEST_ID,
    SCOPE,
    SETTINGS,
    TRUSTED_PROXIES,
    RequestScope,
)
from proxy.log import ACCESS, AccessLine
from proxy.principal import ANONYMOUS

log = logging.getLogger("porter.proxy")

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
    request[PRINCIPAL] = ANONYMOUS  # until the identity chain says who (request.get raises)
    status = 500
    response: web.StreamResponse | None = None
    counted = request.app[METRICS_ON]
    if counted:
        metrics.IN_FLIGHT.inc()
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
        if counted:
            _count(request, status, started)
        settings = request.app[SETTINGS]
        if (
            settings.proxy.access_log
            and not scope.notes.quiet
            and scope.path not in settings.log.exclude_paths
        ):
            _log_access(request, scope, status, response, started)
    if not response.prepared:
        response.headers[REQUEST_ID] = scope.request_id
        finish(request, response)
    return response


def request_kind(request: web.Request, status: int) -> str:
    """What the request was, for the access log and the metrics: the principal's kind (user,
    token, public), else porter (its own pages), denied (login required, deny) or
    bad_request."""
    principal = request[PRINCIPAL]
    if request[SCOPE].notes.refusal is not None:
        return "refused"
    if principal.kind != "anonymous":
        return str(principal.kind)
    decision = request.get(DECISION)
    if decision is None:
        return "bad_request" if status == 400 else "porter"
    if decision.kind == "bad_request" or status == 400:
        return "bad_request"
    return "denied"


def _count(request: web.Request, status: int, started: float) -> None:
    kind = request_kind(request, status)
    metrics.IN_FLIGHT.dec()
    metrics.REQUESTS.labels(kind, metrics.status_class(status)).inc()
    if status >= 500:
        metrics.SERVER_ERRORS.labels(metrics.server_error(status)).inc()
    metrics.REQUEST_SECONDS.labels(kind).observe(time.perf_counter() - started)
    upstream = request[SCOPE].notes.upstream_seconds
    if upstream is not None:
        metrics.UPSTREAM_SECONDS.observe(upstream)


def _body_bytes(response: web.StreamResponse | None) -> int | None:
    if response is None:
        return None
    if response.prepared:
        return response.body_length
    body = getattr(response, "body", None)
    return len(body) if isinstance(body, (bytes, bytearray)) else None


def _log_access(
    request: web.Request,
    scope: RequestScope,
    status: int,
    response: web.StreamResponse | None,
    started: float,
) -> None:
    """One access line: the path only (a query string can carry tokens), no header value."""
    principal = request[PRINCIPAL]
    decision = request.get(DECISION)
    upstream = scope.notes.upstream_seconds
    ACCESS.write(
        AccessLine(
            scope.request_id,
            scope.client.address,
            request.method,
            request.raw_path.split("?", 1)[0],
            status,
            _body_bytes(response),
            (time.perf_counter() - started) * 1000,
            None if upstream is None else upstream * 1000,
            request_kind(request, status),
            None if principal.kind == "anonymous" else principal.user,
            scope.notes.refusal or (decision.rule if decision is not None else None),
            scope.notes.cache_state,
        ),
    )


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
