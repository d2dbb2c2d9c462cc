"""Error answers: a short HTML page for browsers, JSON for JSON and AJAX clients."""

from __future__ import annotations

from http import HTTPStatus

from aiohttp import hdrs, web

from proxy.keys import SCOPE, TEMPLATES

# What the user is told; never anything from the failing request itself.
MESSAGES = {
    400: "The request could not be understood.",
    403: "You are not allowed to see this page.",
    404: "There is nothing at this address.",
    405: "This method is not allowed here.",
    413: "The request body is larger than this server accepts.",
    429: "Too many attempts. Please wait and try again.",
    500: "Something went wrong on our side. The administrators have been told.",
    502: "OMERO.web could not be reached.",
    503: "The service is unavailable at the moment. Please try again shortly.",
    504: "OMERO.web took too long to answer.",
}


def wants_json(request: web.BaseRequest) -> bool:
    """True for AJAX (X-Requested-With) and clients that ask for JSON rather than HTML."""
    if request.headers.get("X-Requested-With", "").lower() == "xmlhttprequest":
        return True
    accept = request.headers.get(hdrs.ACCEPT, "").lower()
    return "json" in accept and "html" not in accept


def request_id_of(request: web.BaseRequest) -> str:
    scope = request.get(SCOPE)
    return scope.request_id if scope is not None else "-"


def error_response(
    request: web.Request,
    status: int,
    message: str | None = None,
    *,
    traceback: str | None = None,
    headers: dict[str, str] | None = None,
) -> web.Response:
    """The answer for an error `status`; `traceback` is shown to browsers only (debug)."""
    title = HTTPStatus(status).phrase
    message = message or MESSAGES.get(status, title)
    request_id = request_id_of(request)
    extra = {"Cache-Control": "no-store", **(headers or {})}
    if wants_json(request):
        body = {"error": message, "status": status, "request_id": request_id}
        return web.json_response(body, status=status, headers=extra)
    template = request.app[TEMPLATES].get_template("error.html")
    html = template.render(
        status=status, title=title, message=message, request_id=request_id, traceback=traceback
    )
    return web.Response(status=status, text=html, content_type="text/html", headers=extra)
