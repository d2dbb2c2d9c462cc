"""The headers every answer gets before they go out: `Server: omero-porter` (neither aiohttp's
version nor OMERO.web's gunicorn is advertised), `Cache-Control: private` for a logged-in
user's answers, and the clearing of a stale porter cookie. Called by the request scope for
answers porter returns, and by the relay before it starts streaming one."""

from __future__ import annotations

from aiohttp import hdrs, web

from proxy.keys import PRINCIPAL, SCOPE
from proxy.session_cookie import clear_session_cookie

SERVER = "omero-porter"


def finish(request: web.Request, response: web.StreamResponse) -> None:
    """Porter's last word on `response`'s headers (before `prepare`)."""
    headers = response.headers
    headers[hdrs.SERVER] = SERVER
    principal = request[PRINCIPAL]
    if principal.authenticated and hdrs.CACHE_CONTROL not in headers:
        # One user's page must never be stored by a shared cache for another.
        headers[hdrs.CACHE_CONTROL] = "private"
    if request[SCOPE].notes.clear_cookie:
        clear_session_cookie(request, response)
