"""The error boundary: porter's exception tree (porter_errors.py) becomes HTTP answers
here, and only here. An exception is answered by the row of the first class of its MRO that
has one, so a row never depends on its place in a list:

    SessionStoreUnavailable  503  the session store (Redis) cannot answer
    ServerUnavailable        503  the OMERO server cannot be reached (counted as an outage)
    Overloaded               503 with Retry-After: no slot to OMERO.web within the wait bound
    Unavailable              503  any other part porter needs
    SessionEnded             log in again (browser: redirect; AJAX: 403), stale cookie cleared
    HandoffFailed            502  OMERO.web did not take an OMERO session over
    OmeroError               502  any other failure of OMERO
    UpstreamFailed           502  any other failure upstream
    SsoError                 its status (401 with WWW-Authenticate, 403, 503)
    Refused                  its status, message and headers (porter's own decision)
    Internal                 500, as anything else: the traceback logged and mailed
    HTTPException >= 400     porter's page for that status
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import Callable

from aiohttp import hdrs, web

from auth.jwt_verify import SsoError
from auth.omero_errors import HandoffFailed, OmeroError, ServerUnavailable
from auth.session_store import SessionStoreUnavailable
from porter_errors import Internal, Refused, SessionEnded, Unavailable, UpstreamFailed
from proxy.admission import Overloaded
from proxy.answers import error_response, login_required
from proxy.keys import OUTAGES, SCOPE
from proxy.middleware.cors import cors_preflight
from proxy.middleware.scope import Handler
from proxy.reporting import report_exception

log = logging.getLogger("porter.proxy")

Answer = Callable[[web.Request, Exception], web.StreamResponse]


def _store_unavailable(request: web.Request, exc: Exception) -> web.StreamResponse:
    log.warning("session store unavailable rid=%s: %s", _rid(request), exc)
    return error_response(request, 503, "The session store is unavailable. Please retry.")


def _server_unavailable(request: web.Request, exc: Exception) -> web.StreamResponse:
    assert isinstance(exc, ServerUnavailable)
    log.warning("OMERO server unavailable rid=%s: %s", _rid(request), exc)
    request.app[OUTAGES].refused(exc.server_id, _rid(request))
    return error_response(request, 503, "The OMERO server is unavailable. Please retry.")


def _overloaded(request: web.Request, exc: Exception) -> web.StreamResponse:
    assert isinstance(exc, Overloaded)
    request[SCOPE].notes.refusal = "limit:wait"
    return error_response(
        request,
        503,
        "OMERO.web is busy. Please retry in a few seconds.",
        headers={hdrs.RETRY_AFTER: str(exc.retry_after)},
    )


def _unavailable(request: web.Request, exc: Exception) -> web.StreamResponse:
    log.warning("%s rid=%s: %s", type(exc).__name__, _rid(request), exc)
    return error_response(request, 503)


def _log_in_again(request: web.Request, exc: Exception) -> web.StreamResponse:
    request[SCOPE].notes.clear_cookie = True
    return login_required(request)


def _handoff_failed(request: web.Request, exc: Exception) -> web.StreamResponse:
    log.warning("OMERO.web handoff failed rid=%s: %s", _rid(request), exc)
    return error_response(request, 502)


def _omero_failed(request: web.Request, exc: Exception) -> web.StreamResponse:
    log.warning("OMERO failed rid=%s: %s", _rid(request), exc)
    return error_response(request, 502)


def _upstream_failed(request: web.Request, exc: Exception) -> web.StreamResponse:
    log.warning("%s rid=%s: %s", type(exc).__name__, _rid(request), exc)
    return error_response(request, 502)


def _sso_refused(request: web.Request, exc: Exception) -> web.StreamResponse:
    assert isinstance(exc, SsoError)
    log.info("SSO refused rid=%s: %s", _rid(request), exc.reason)
    headers = dict(exc.headers)
    if exc.status == 401:
        headers[hdrs.WWW_AUTHENTICATE] = (
            f'Bearer error="invalid_token", error_description="{exc.reason}"'
        )
    return error_response(request, exc.status, exc.message, headers=headers)


def _refused(request: web.Request, exc: Exception) -> web.StreamResponse:
    assert isinstance(exc, Refused)
    return error_response(request, exc.status, exc.message, headers=exc.headers or None)


def _bug(request: web.Request, exc: Exception) -> web.StreamResponse:
    """Not an answer porter meant to give: 500, and the traceback to the log and the admins."""
    log.error("unhandled error rid=%s %s", _rid(request), request.method, exc_info=exc)
    report_exception(request, exc)
    trace = "".join(traceback.format_exception(exc))
    return error_response(request, 500, traceback=trace)


ANSWERS: dict[type[Exception], Answer] = {
    SessionStoreUnavailable: _store_unavailable,
    ServerUnavailable: _server_unavailable,
    Overloaded: _overloaded,
    Unavailable: _unavailable,
    SessionEnded: _log_in_again,
    HandoffFailed: _handoff_failed,
    OmeroError: _omero_failed,
    UpstreamFailed: _upstream_failed,
    SsoError: _sso_refused,
    Refused: _refused,
    Internal: _bug,
}


def row_for(kind: type[BaseException]) -> type[Exception] | None:
    """The class whose row answers `kind`: the first of its MRO in ANSWERS (None: none has
    one, and the exception is answered as a bug)."""
    return next((cls for cls in kind.__mro__ if cls in ANSWERS), None)


def answer_for(request: web.Request, exc: Exception) -> web.StreamResponse:
    """The answer the table gives `exc`; unexpected ones are a 500 and an admin mail."""
    row = row_for(type(exc))
    return (_bug if row is None else ANSWERS[row])(request, exc)


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
