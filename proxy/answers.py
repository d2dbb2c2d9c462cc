"""Porter's answers of its own: error pages (a short HTML page for browsers, JSON for JSON
and AJAX clients), redirects, and "please log in"."""

from __future__ import annotations

from collections.abc import Mapping
from html import escape
from http import HTTPStatus
from typing import Any
from urllib.parse import quote

from aiohttp import hdrs, web
from multidict import MultiDictProxy

from filters.rules import CREDENTIALS_RULE, Decision
from porter_errors import Refused
from proxy.keys import CSRF, SCOPE, SETTINGS, TEMPLATES
from proxy.settings import Settings

# The Cache-Control of every answer porter makes itself (it may depend on the session).
NO_STORE: dict[str, str] = {hdrs.CACHE_CONTROL: "no-store"}


UNREADABLE_FORM = "The form could not be read."


async def posted_form(
    request: web.Request,
) -> MultiDictProxy[str | bytes | bytearray | web.FileField]:
    """`request.post()`, with a body aiohttp cannot parse (a multipart body without a boundary
    or with a broken one, an unknown charset) refused with 400 rather than raised."""
    try:
        return await request.post()
    except (ValueError, LookupError):
        raise Refused(400, UNREADABLE_FORM) from None


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


# Porter's own pages: never framed (the login form cannot be clickjacked), no script at all,
# forms only to porter, no sniffing; the no-store of every answer porter makes itself.
PAGE_HEADERS: dict[str, str] = {
    **NO_STORE,
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'self' 'unsafe-inline'; img-src 'self' data: https:; "
        "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}


STYLESHEET_PATH = "/porter/assets/porter.css"
LOGO_PATH = "/porter/assets/logo"  # [login] login_logo_file, served by porter


def logo_url(settings: Settings) -> str:
    """Where pages load the logo from: porter's own copy of `login_logo_file`, else the
    `login_logo` URL as configured (as OMERO.web uses it)."""
    if settings.login.login_logo_file:
        return settings.proxy.prefix + LOGO_PATH
    return settings.login.login_logo


def page_look(settings: Settings) -> dict[str, str]:
    """What every page of porter's shares with the login page: stylesheet, title, logo."""
    prefix = settings.proxy.prefix
    return {
        "stylesheet": prefix + STYLESHEET_PATH,
        "site_title": settings.login.login_title,
        "logo": logo_url(settings),
        "home": prefix + "/",
        "prefix": prefix,
    }


def form_page(
    request: web.Request,
    template: str,
    form: str,
    *,
    status: int = 200,
    headers: Mapping[str, str] | None = None,
    **context: Any,
) -> web.Response:
    """One of porter's form pages (login, logout, forgotten password): its template with the
    site's look and a fresh CSRF token for `form`, never cached, framed or sniffed."""
    response = web.Response(
        status=status, content_type="text/html", headers={**PAGE_HEADERS, **(headers or {})}
    )
    token = request.app[CSRF].token(request, response, form)
    response.text = (
        request.app[TEMPLATES]
        .get_template(template)
        .render(**page_look(request.app[SETTINGS]), csrf_token=token, **context)
    )
    return response


def error_response(
    request: web.Request,
    status: int,
    message: str | None = None,
    *,
    traceback: str | None = None,
    headers: dict[str, str] | None = None,
) -> web.Response:
    """The answer for an error `status`.

    `traceback` is shown only with proxy.debug, and only to browsers: never to AJAX or JSON
    clients (OMERO.web sends them its tracebacks; porter does not).
    """
    title = HTTPStatus(status).phrase
    message = message or MESSAGES.get(status, title)
    request_id = request_id_of(request)
    extra = {**PAGE_HEADERS, **(headers or {})}
    if wants_json(request):
        body = {"error": message, "status": status, "request_id": request_id}
        return web.json_response(body, status=status, headers=extra)
    app = request.app
    response = web.Response(status=status, content_type="text/html", headers=extra)
    feedback = None
    if status == 500 and app[SETTINGS].mail.active:
        feedback = app[CSRF].token(request, response, "feedback")
    response.text = render_error(
        app,
        status,
        message,
        request_id,
        retry_after=extra.get(hdrs.RETRY_AFTER),
        traceback=traceback if app[SETTINGS].proxy.debug else None,
        feedback_token=feedback,
    )
    return response


def render_error(
    app: web.Application,
    status: int,
    message: str,
    request_id: str,
    *,
    retry_after: str | None = None,
    traceback: str | None = None,
    feedback_token: str | None = None,
) -> str:
    """The HTML error page (an admin's error_<status>.html or error.html first)."""
    template = app[TEMPLATES].select_template([f"error_{status}.html", "error.html"])
    return template.render(
        status=status,
        title=HTTPStatus(status).phrase,
        message=message,
        request_id=request_id,
        retry_after=retry_after,
        traceback=traceback,
        feedback_token=feedback_token,
        **page_look(app[SETTINGS]),
    )


_SLOT = "\x00request-id\x00"


class RefusalPages:
    """Error pages for refusals made under a storm (429, 403, 503 of [limits]): rendered once
    per status, message and Retry-After, then only the request id is put in, so a browser's
    refusal costs a few byte joins rather than a template."""

    def __init__(self, app: web.Application, size: int = 128) -> None:
        self._app = app
        self._size = size
        self._pages: dict[tuple[int, str, str | None], tuple[bytes, bytes]] = {}

    def body(self, status: int, message: str, retry_after: str | None, request_id: str) -> bytes:
        key = (status, message, retry_after)
        parts = self._pages.get(key)
        if parts is None:
            html = render_error(self._app, status, message, _SLOT, retry_after=retry_after)
            before, _, after = html.partition(_SLOT)
            parts = (before.encode(), after.encode())
            if len(self._pages) >= self._size:
                self._pages.clear()  # a handful of keys in practice: never grows unbounded
            self._pages[key] = parts
        return parts[0] + escape(request_id).encode() + parts[1]


REFUSAL_PAGES = web.AppKey("refusal_pages", RefusalPages)  # [limits]' refusals for browsers


def redirect(location: str, status: int = 303) -> web.Response:
    """A redirect porter answers itself (never cached: it may depend on the session)."""
    return web.Response(status=status, headers={hdrs.LOCATION: location, **NO_STORE})


def login_required(
    request: web.Request, *, method: str | None = None, target: str | None = None
) -> web.StreamResponse:
    """Browsers go to porter's login page (back to `target`, default: this request's URL,
    after a GET); AJAX and JSON clients get 403 (OMERO.web's JavaScript reloads the page on
    403). `method` and `target` name the original request when this one asks for it
    (forward-auth)."""
    if wants_json(request):
        return error_response(request, 403, "Login required.")
    location = request.app[SETTINGS].proxy.prefix + "/porter/login"
    if (method or request.method) == hdrs.METH_GET:
        location += "?url=" + quote(target or request.raw_path, safe="")
    return redirect(location, 302)


CREDENTIALS_REFUSED = (
    "Porter does not accept OMERO credentials (bsession, username, password, server) in a "
    "URL. Log in on porter's login page and open the link without them."
)


def refusal_message(decision: Decision) -> str | None:
    """What a 400 for `decision` tells the user (None: the generic page)."""
    return CREDENTIALS_REFUSED if decision.rule == CREDENTIALS_RULE else None
