"""What every response gets just before its headers go out (streamed ones included):
CORS headers for allowed origins, `Cache-Control: private` for logged-in users, and the
clearing of a stale porter cookie."""

from __future__ import annotations

from aiohttp import hdrs, web

from filters.cors import is_preflight
from proxy.identity.session import clearing_header
from proxy.keys import CLEAR_COOKIE, CORS, PRINCIPAL
from proxy.middleware.scope import Handler

# Neither aiohttp's version nor OMERO.web's gunicorn is advertised.
SERVER = "omero-porter"


async def on_response_prepare(request: web.BaseRequest, response: web.StreamResponse) -> None:
    response.headers[hdrs.SERVER] = SERVER
    if not isinstance(request, web.Request):
        return
    cors = request.app[CORS].response_headers(request.headers.get(hdrs.ORIGIN))
    for name, value in cors.items():
        if name == hdrs.VARY:
            _add_vary(response, value)
        elif name not in response.headers:
            response.headers[name] = value
    principal = request.get(PRINCIPAL)
    if (
        principal is not None
        and principal.authenticated
        and hdrs.CACHE_CONTROL not in response.headers
    ):
        # One user's page must never be stored by a shared cache for another.
        response.headers[hdrs.CACHE_CONTROL] = "private"
    if request.get(CLEAR_COOKIE):  # cookies became headers already: add the header itself
        response.headers.add(hdrs.SET_COOKIE, clearing_header(request))


def _add_vary(response: web.StreamResponse, value: str) -> None:
    current = [v.strip() for v in response.headers.get(hdrs.VARY, "").split(",") if v.strip()]
    if value.lower() not in (v.lower() for v in current) and "*" not in current:
        response.headers[hdrs.VARY] = ", ".join([*current, value])


@web.middleware
async def cors_preflight(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Preflights are answered by porter: no upstream, no login."""
    origin = request.headers.get(hdrs.ORIGIN)
    asked = request.headers.get(hdrs.ACCESS_CONTROL_REQUEST_METHOD)
    if not is_preflight(request.method, origin, asked):
        return await handler(request)
    headers = request.app[CORS].preflight_headers(
        origin, asked, request.headers.get(hdrs.ACCESS_CONTROL_REQUEST_HEADERS)
    )
    if headers is None:  # refused: no CORS headers at all
        return web.Response(status=403, headers={hdrs.CACHE_CONTROL: "no-store"})
    return web.Response(status=204, headers=headers)
