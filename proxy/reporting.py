"""Admin reports for failures seen while handling a request (the mailer sends them)."""

from __future__ import annotations

from typing import Any

from aiohttp import hdrs, web

import metrics
from mailer import Report
from proxy.keys import MAILER, PRINCIPAL, SCOPE
from proxy.principal import ANONYMOUS

# Request headers whose whole value is a secret (the mailer never shows them either).
_SECRET_HEADERS = (hdrs.AUTHORIZATION, hdrs.PROXY_AUTHORIZATION, "X-CSRFToken")


def _fields(request: web.Request) -> dict[str, Any]:
    scope = request[SCOPE]
    who = request.get(PRINCIPAL, ANONYMOUS)
    known = set(who.secrets)
    known.update(v for v in request.cookies.values() if v)
    known.update(v for name in _SECRET_HEADERS for v in request.headers.getall(name, ()))
    return {
        "method": request.method,
        "path": scope.path,
        "query": request.query_string,
        "user": who.user,
        "client": scope.client.address,
        "server_id": who.server_id,
        "headers": tuple(request.headers.items()),
        "secrets": frozenset(known),
    }


def report_exception(request: web.Request, exc: BaseException) -> None:
    report = Report.for_exception(exc, request[SCOPE].request_id, **_fields(request))
    request.app[MAILER].submit(report)


def report_upstream_error(request: web.Request, status: int, excerpt: str) -> None:
    """OMERO.web answered `status` (5xx, not 502-504) with `excerpt`: counted and mailed."""
    metrics.UPSTREAM_ERRORS.labels("answered", metrics.server_error(status)).inc()
    report = Report(
        kind="upstream_error",
        request_id=request[SCOPE].request_id,
        status=status,
        excerpt=excerpt,
        **_fields(request),
    )
    request.app[MAILER].submit(report)


def report_unavailable(request: web.Request, status: int, error: str) -> None:
    """OMERO.web unavailable (`error`: timeout, unreachable or answered `status`, 502-504):
    counted and mailed."""
    metrics.UPSTREAM_ERRORS.labels(error, metrics.server_error(status)).inc()
    report = Report(
        kind="unavailable", request_id=request[SCOPE].request_id, status=status, **_fields(request)
    )
    request.app[MAILER].submit(report)


def report_feedback(request: web.Request, about: str, comment: str) -> bool:
    fields = _fields(request)
    report = Report(kind="feedback", request_id=about, comment=comment, **fields)
    return request.app[MAILER].submit(report)
