"""CORS: preflights answered by porter, and CORS headers on every answer to an allowed
origin (`on_response_prepare`, registered only when CORS is configured). The other headers
every answer gets are proxy/finish.py's."""

from __future__ import annotations

from aiohttp import hdrs, web

from filters.cors import is_preflight
from proxy.keys import CORS


async def on_response_prepare(request: web.BaseRequest, response: web.StreamResponse) -> None:
    """CORS headers for an allowed Origin, on every answer (errors and redirects too)."""
    if not isinstance(request, web.Request):
        return
    cors = request.app[CORS].response_headers(request.headers.get(hdrs.ORIGIN))
    for name, value in cors.items():
        if name == hdrs.VARY:
            _add_vary(response, value)
        elif name not in response.headers:
            response.headers[name] = value


def _add_vary(response: web.StreamResponse, value: str) -> None:
    current = [v.strip() for v in response.headers.get(hdrs.VARY, "").split(",") if v.strip()]
    if value.lower() not in (v.lower() for v in current) and "*" not in current:
        response.headers[hdrs.VARY] = ", ".join([*current, value])


def cors_preflight(request: web.Request) -> web.Response | None:
    """Preflights are answered by porter: no upstream, no login (None: not a preflight).
    Asked by the error boundary before anything else, for OPTIONS only: one middleware
    fewer for every other request."""
    origin = request.headers.get(hdrs.ORIGIN)
    asked = request.headers.get(hdrs.ACCESS_CONTROL_REQUEST_METHOD)
    if not is_preflight(request.method, origin, asked):
        return None
    headers = request.app[CORS].preflight_headers(
        origin, asked, request.headers.get(hdrs.ACCESS_CONTROL_REQUEST_HEADERS)
    )
    if headers is None:  # refused: no CORS headers at all
        return web.Response(status=403, headers={hdrs.CACHE_CONTROL: "no-store"})
    return web.Response(status=204, headers=headers)
