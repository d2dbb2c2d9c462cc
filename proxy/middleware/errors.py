"""The error boundary: porter's exception tree becomes HTTP answers here, and only here.

One ordered table, first match wins:

    SessionStoreUnavailable  503  the session store (Redis) cannot answer
    SessionGone              log in again (browser: redirect; AJAX: 403), stale cookie cleared
    HandoffFailed            502  OMERO.web did not take an OMERO session over
    ServerUnavailable        503  the OMERO server cannot be reached
    OmeroError               502  any other failure of OMERO
    SsoError                 its status (401 with WWW-Authenticate, 403, 503)
    Refused                  its status and message (porter's own decision)
    Overloaded               503 with Retry-After: no slot to OMERO.web within the wait bound
    HTTPException >= 400     porter's page for that status
    anything else            500, the traceback logged and mailed to the admins
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import Callable

from aiohttp import hdrs, web

from auth.errors import HandoffFailed, OmeroError, ServerUnavailable, SessionGone
from auth.jwt_verify import SsoError
from auth.store import SessionStoreUnavailable
from proxy.admission import Overloaded
from proxy.errors import Refused, error_response, login_required
from proxy.keys import OUTAGES, SCOPE
from proxy.middleware.responses import cors_preflight
from proxy.middleware.scope import Handler
from proxy.reporting import report_exception

log = logging.getLogger("porter.proxy")

Answer = Callable[[web.Request, Exception], web.StreamResponse]


def _store_unavailable(request: web.Request, exc: Exception) -> web.StreamResponse:
    log.warning("session store unavailable rid=%s: %s", _rid(request), exc)
    return error_response(request, 503, "The session store is unavailable. Please retry.")


def _log_in_again(request: web.Request, exc: Exception) -> web.StreamResponse:
    request[SCOPE].notes.clear_cookie = True
    return login_required(request)


def _handoff_failed(request: web.Request, exc: Exception) -> web.StreamResponse:
    log.warning("OMERO.web handoff failed rid=%s: %s", _rid(request), exc)
    return error_response(request, 502)


def _server_unavailable(request: web.Request, exc: Exception) -> web.StreamResponse:
    assert isinstance(exc, ServerUnavailable)
    log.warning("OMERO server unavailable rid=%s: %s", _rid(request), exc)
    request.app[OUTAGES].refused(exc.server_id, _rid(request))
    return error_response(request, 503, "The OMERO server is unavailable. Please retry.")


def _omero_failed(request: web.Request, exc: Exception) -> web.StreamResponse:
    log.warning("OMERO failed rid=%s: %s", _rid(request), exc)
    return error_response(request, 502)


def _sso_refused(request: web.Request, exc: Exception) -> web.StreamResponse:
    assert isinstance(exc, SsoError)
    log.info("SSO refused rid=%s: %s", _rid(request), exc.reason)
    headers: dict[str, str] = {}
    if exc.status == 401:
        headers[hdrs.WWW_AUTHENTICATE] = (
            f'Bearer error="invalid_token", error_description="{exc.reason}"'
        )
    return error_response(request, exc.status, exc.message, headers=headers)


def _refused(request: web.Request, exc: Exception) -> web.StreamResponse:
    assert isinstance(exc, Refused)
    return error_response(request, exc.status, exc.message)


def _overloaded(request: web.Request, exc: Exception) -> web.StreamResponse:
    assert isinstance(exc, Overloaded)
    request[SCOPE].notes.refusal = "limit:wait"
    return error_response(
        request,
        503,
        "OMERO.web is busy. Please retry in a few seconds.",
        headers={hdrs.RETRY_AFTER: str(exc.retry_after)},
    )


ANSWERS: tuple[tuple[type[Exception], Answer], ...] = (
    (SessionStoreUnavailable, _store_unavailable),
    (SessionGone, _log_in_again),
    (HandoffFailed, _handoff_failed),
    (ServerUnavailable, _server_unavailable),
    (OmeroError, _omero_failed),
    (SsoError, _sso_refused),
    (Refused, _refused),
    (Overloaded, _overloaded),
)


def answer_for(request: web.Request, exc: Exception) -> web.StreamResponse:
    """The answer the table gives `exc`; unexpected ones are a 500 and an admin mail."""
    for kind, answer in ANSWERS:
        if isinstance(exc, kind):
            return answer(request, exc)
    log.error("unhandled error rid=%s %s", _rid(request), request.method, exc_info=exc)
    report_exception(request, exc)
    trace = "".join(traceback.format_exception(exc))
    return error_response(request, 500, traceback=trace)


@web.middleware
async def error_boundary(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every exception a handler raises becomes its answer from the table. CORS preflights
    are answered first, by porter itself."""
    if request.method == hdrs.METH_OPTIONS:
        preflight = cors_preflight(request)
        if preflight is not None:
            return preflight
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        allow = exc.headers.get(hdrs.ALLOW)
        return error_response(request, exc.status, headers={hdrs.ALLOW: allow} if allow else None)
    except ConnectionResetError:
        log.debug("client gone rid=%s", _rid(request))
        raise
    except Exception as exc:
        return answer_for(request, exc)


def _rid(request: web.Request) -> str:
    return request[SCOPE].request_id
