"""`/porter/forgot-password`: OMERO mails a new password, as OMERO.web's forgotten-password
view does (a ResetPasswordRequest through a guest session), on porter's own page.

OMERO.web's view would need a Django session and CSRF cookie of its own in the browser, which
porter never hands out; so porter asks OMERO itself. The answer is the same whether or not
the name and address match an account (nothing to learn about who has one), and requests are
throttled per address and per user name apart from logins, so nobody can lock a user's login
by asking for their password.
"""

from __future__ import annotations

import logging

from aiohttp import hdrs, web

from auth.omero_errors import OmeroError, ServerUnavailable, UnknownServer
from proxy.answers import error_response, form_page
from proxy.keys import CSRF, OMERO, SCOPE, SETTINGS, THROTTLE
from proxy.pages.login import FormTooLarge, read_form

log = logging.getLogger("porter.login")

PATH = "/porter/forgot-password"
SENT = (
    "If the user name and e-mail address belong to an account, the OMERO server has mailed a "
    "new password to that address."
)
KEY = "password-reset:"  # throttle keys apart from logins'


def _render(
    request: web.Request,
    *,
    status: int = 200,
    error: str = "",
    notice: str = "",
    username: str = "",
    email: str = "",
    headers: dict[str, str] | None = None,
) -> web.Response:
    return form_page(
        request,
        "forgot_password.html",
        "forgot-password",
        status=status,
        headers=headers,
        action=request.app[SETTINGS].proxy.prefix + PATH,
        servers=list(request.app[OMERO].servers),
        username=username,
        email=email,
        error=error,
        notice=notice,
    )


def _offered(request: web.Request) -> bool:
    login = request.app[SETTINGS].login
    return login.show_forgot_password and login.password_login


async def form(request: web.Request) -> web.StreamResponse:
    if not _offered(request):
        return error_response(request, 404)
    return _render(request)


async def submit(request: web.Request) -> web.StreamResponse:
    if not _offered(request):
        return error_response(request, 404)
    try:
        posted = await read_form(request)
    except FormTooLarge:
        return error_response(request, 413)
    username = posted.get("username", "").strip()[:255]
    email = posted.get("email", "").strip()[:255]
    if not request.app[CSRF].valid(request, posted.get("csrf_token"), "forgot-password"):
        return _render(
            request,
            status=403,
            error="The form had expired. Please try again.",
            username=username,
            email=email,
        )
    if not username or "@" not in email:
        return _render(
            request,
            status=400,
            error="Please enter your user name and the e-mail address of your account.",
            username=username,
            email=email,
        )
    throttle = request.app[THROTTLE]
    address = KEY + request[SCOPE].client.address
    retry_after = await throttle.retry_after(address, KEY + username)
    if retry_after is not None:
        return _render(
            request,
            status=429,
            error="Too many requests. Please wait and try again.",
            headers={hdrs.RETRY_AFTER: str(retry_after)},
        )
    await throttle.failed(address, KEY + username)  # every request counts
    return await _reset(request, posted.get("server") or "1", username, email)


async def _reset(
    request: web.Request, server: str, username: str, email: str
) -> web.StreamResponse:
    """Ask OMERO to mail a new password; the page saying it was asked (whether or not the
    name and address matched), or what failed."""
    try:
        done = await request.app[OMERO].reset_password(server, username, email)
    except UnknownServer:
        return _render(request, status=400, error="Please choose a server from the list.")
    except ServerUnavailable:
        return _render(
            request,
            status=503,
            error="The OMERO server is not responding. Please try later.",
            username=username,
            email=email,
        )
    except OmeroError as exc:
        log.warning("password reset on server %s failed: %s", server, exc)
        return _render(request, status=502, error="The OMERO server could not do it.")
    log.info(
        "password reset asked server=%s matched=%s rid=%s",
        server,
        done,
        request[SCOPE].request_id,
    )
    return _render(request, notice=SENT)


def add_routes(app: web.Application, prefix: str) -> None:
    app.router.add_get(prefix + PATH, form)
    app.router.add_post(prefix + PATH, submit)
