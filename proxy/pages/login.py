"""Porter's login and logout, and OMERO.web's login and logout URLs that porter takes over.

A login creates a fresh porter session (never an id the browser presented before), hands the
OMERO session over to OMERO.web once, and sets porter's cookie; the OMERO session key and
OMERO.web's session cookie stay on the server.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from aiohttp import hdrs, web
from yarl import URL

import metrics
from auth.omero_backend import OmeroLogin
from auth.omero_errors import (
    HandoffFailed,
    InvalidCredentials,
    OmeroError,
    ServerUnavailable,
    UnknownServer,
)
from auth.session_store import SessionStoreUnavailable
from auth.sessions import SessionRecord
from filters.redirects import safe_redirect
from porter_errors import Refused
from proxy.answers import (
    NO_STORE,
    PAGE_HEADERS,
    STYLESHEET_PATH,
    error_response,
    form_page,
    posted_form,
    redirect,
)
from proxy.django_csrf import django_csrf_valid, new_django_secret
from proxy.forwarding.handoff import handoff, web_logout
from proxy.identity.session import identify
from proxy.keys import (
    CLIENT_SESSION,
    CSRF,
    OIDC_PROVIDERS,
    OMERO,
    OUTAGES,
    SCOPE,
    SESSION_STORE,
    SETTINGS,
    THROTTLE,
)
from proxy.pages.oidc_links import end_session_location as oidc_end_session
from proxy.pages.oidc_links import login_url as oidc_login_url
from proxy.pages.oidc_links import sessionless_logout
from proxy.pages.oidc_links import switch_url as oidc_switch_url
from proxy.pages.oidc_refusals import ACCOUNT_REFUSALS, STORE_DOWN, refusal
from proxy.session_cookie import clear_session_cookie, set_session_cookie

log = logging.getLogger("porter.login")

MAX_FORM = 16 * 1024
STYLESHEET = (Path(__file__).parent.parent / "assets" / "porter.css").read_bytes()
NO_PASSWORD_FORM = "Logging in with a user name and password is turned off on this site."  # noqa: S105


class FormTooLarge(Refused):
    """A posted form over MAX_FORM bytes (413)."""

    def __init__(self) -> None:
        super().__init__(413, "The form is too large.")


class LoginFailed(Refused):
    """A login attempt that ends on the form, with a status and a message for the user."""

    def __init__(
        self,
        status: int,
        message: str,
        headers: Mapping[str, str] | None = None,
        code: str = "failed",
    ):
        """`code`: the outcome's short name, for pages that carry it in a URL (OpenID)."""
        super().__init__(status, message, headers)
        self.code = code


def _prefix(request: web.Request) -> str:
    return request.app[SETTINGS].proxy.prefix


def landing(request: web.Request, target: str | None) -> str:
    """Where to go after login: `target` when it is a safe same-site path, else the landing."""
    settings = request.app[SETTINGS]
    default = settings.proxy.prefix + settings.login.landing_page
    return safe_redirect(target, settings.proxy.prefix, default)


# -- the form -------------------------------------------------------------------------------


def render_login(
    request: web.Request,
    *,
    status: int = 200,
    error: str = "",
    notice: str = "",
    username: str = "",
    url: str | None = None,
    server: int = 1,
    headers: Mapping[str, str] | None = None,
    switch: str | None = None,
) -> web.Response:
    """`switch`: the URL of "Log in as someone else" (an OpenID refusal of the account)."""
    login = request.app[SETTINGS].login
    target = landing(request, url)
    return form_page(
        request,
        "login.html",
        "login",
        status=status,
        headers=headers,
        providers=_providers(request, target),
        password_login=login.password_login,
        forgot_password=login.show_forgot_password and login.password_login,
        action=_prefix(request) + "/porter/login",
        url=target,
        servers=list(request.app[OMERO].servers),
        selected_server=server,
        username=username,
        error=error,
        notice=notice,
        switch=switch,
    )


def _providers(request: web.Request, target: str) -> list[dict[str, Any]]:
    """The OpenID buttons: one whose discovery failed is shown disabled, and asked again in
    the background (at most once per its retry interval), so the next visitor may have it."""
    held = request.app.get(OIDC_PROVIDERS) or {}  # none without [oidc]
    buttons: list[dict[str, Any]] = []
    for settings in request.app[SETTINGS].oidc.providers:
        provider = held.get(settings.id)
        failed = provider is not None and provider.failed
        if failed and provider is not None:
            provider.retry_soon()
        buttons.append(
            {
                "label": settings.label,
                "url": oidc_login_url(request, settings.id, target),
                "disabled": failed,
            }
        )
    return buttons


async def login_page(request: web.Request) -> web.StreamResponse:
    """GET: the form, or straight on when the browser is logged in already."""
    target = request.query.get("url")
    identity = await identify(request)
    if identity.record is not None:
        return redirect(landing(request, target), 302)
    notice = "You have been logged out." if "logged_out" in request.query else ""
    settings = request.app[SETTINGS]
    providers = settings.oidc.providers
    refused = _oidc_refusal(request, target)
    if refused is not None:
        response = refused
    elif (
        not settings.login.password_login and len(providers) == 1 and not notice and _page(request)
    ):
        # single sign-on only, one provider: nothing to choose, straight there (a page only:
        # a favicon's or a script's request would start a second login, and its pre-login
        # cookie would replace the page's)
        response = redirect(oidc_login_url(request, providers[0].id, landing(request, target)))
    else:
        response = render_login(request, url=target, notice=notice)
    if identity.stale:
        clear_session_cookie(request, response)
    return response


def _page(request: web.Request) -> bool:
    """The browser is loading a page (Fetch Metadata), or cannot say."""
    return request.headers.get("Sec-Fetch-Dest", "document") in ("document", "iframe")


def _oidc_refusal(request: web.Request, target: str | None) -> web.Response | None:
    """The page an OpenID callback sent the browser to (`?oidc_error=`), or None."""
    code = request.query.get("oidc_error")
    if code is None:
        return None
    named = request.query.get("provider", "")
    provider = next((p for p in request.app[SETTINGS].oidc.providers if p.id == named), None)
    found = refusal(code, provider.label if provider is not None else "The identity provider")
    if found is None:
        return None
    switch = None
    if provider is not None and code in ACCOUNT_REFUSALS:
        switch = oidc_switch_url(request, provider.id, landing(request, target))
    return render_login(
        request, status=found.status, error=found.message, url=target, switch=switch
    )


async def login_submit(request: web.Request) -> web.StreamResponse:
    """POST: check the form, log in to OMERO, hand over to OMERO.web, set the cookie."""
    try:
        form = await read_form(request)
    except FormTooLarge:
        return error_response(request, 413)
    username = form.get("username", "").strip()
    target = form.get("url")
    server = _server_id(form.get("server"))
    if not request.app[SETTINGS].login.password_login:
        return render_login(request, status=403, error=NO_PASSWORD_FORM, url=target)
    if not request.app[CSRF].valid(request, form.get("csrf_token"), "login"):
        return render_login(
            request,
            status=403,
            error="The login form has expired. Please try again.",
            username=username,
            url=target,
        )
    try:
        record, _ = await log_in(request, server, username, form.get("password", ""))
    except LoginFailed as failed:
        return render_login(
            request,
            status=failed.status,
            error=failed.message,
            username=username,
            url=target,
            server=server,
            headers=failed.headers,
        )
    response = redirect(landing(request, target))
    set_session_cookie(request, response, record.id)
    return response


async def read_form(request: web.Request) -> dict[str, str]:
    if (request.content_length or 0) > MAX_FORM:
        raise FormTooLarge
    if request.content_type == "application/json":
        try:
            data = json.loads(await request.content.read(MAX_FORM))
        except (ValueError, UnicodeDecodeError):
            return {}
        items = data.items() if isinstance(data, dict) else []
    else:
        items = (await posted_form(request)).items()
    return {str(k): v for k, v in items if isinstance(v, str)}


def _server_id(value: str | None) -> int:
    try:
        return int(value) if value else 1
    except ValueError:
        return 0


async def authenticate(
    request: web.Request, server: int | str | None, username: str, password: str
) -> OmeroLogin:
    """Throttle, then log in to OMERO; the new OMERO session. Raises LoginFailed."""
    app = request.app
    client = request[SCOPE].client.address
    throttle = app[THROTTLE]
    if not username or not password:
        raise LoginFailed(400, "Please enter your user name and password.")
    retry_after = await throttle.retry_after(client, username)
    if retry_after is not None:
        metrics.LOGINS.labels("throttled").inc()
        raise LoginFailed(
            429,
            "Too many failed attempts. Please wait and try again.",
            {hdrs.RETRY_AFTER: str(retry_after)},
        )
    try:
        login = await app[OMERO].login(server or 1, username, password, client_ip=client)
    except InvalidCredentials:
        await throttle.failed(client, username)
        metrics.LOGINS.labels("failure").inc()
        raise LoginFailed(401, "Wrong user name or password.") from None
    except UnknownServer:
        raise LoginFailed(400, "Please choose a server from the list.") from None
    except ServerUnavailable as exc:
        request.app[OUTAGES].refused(exc.server_id, request[SCOPE].request_id)
        raise LoginFailed(503, "The OMERO server is not responding. Please try later.") from None
    except OmeroError as exc:
        log.warning("login failed on server %s: %s", server, exc)
        raise LoginFailed(502, "The OMERO server could not log you in.") from None
    await throttle.succeeded(client, username)
    metrics.LOGINS.labels("success").inc()
    metrics.OMERO_SESSIONS_CREATED.labels("login").inc()
    return login


async def log_in(
    request: web.Request, server: int | str | None, username: str, password: str
) -> tuple[SessionRecord, OmeroLogin]:
    """The whole login: throttle, OMERO, handoff, a fresh porter session. Raises LoginFailed."""
    login = await authenticate(request, server, username, password)
    return await start_session(request, login), login


async def start_session(
    request: web.Request, login: OmeroLogin, kind: str = "user"
) -> SessionRecord:
    """Hand `login` over to OMERO.web and store a fresh porter session for it (ending the
    browser's previous one). Raises LoginFailed; the OMERO session is closed on failure."""
    app = request.app
    try:
        cookies = await handoff(app, login.server_id, login.session_key)
    except HandoffFailed as exc:
        log.warning("handoff failed rid=%s: %s", request[SCOPE].request_id, exc)
        await _close_quietly(request, login.server_id, login.session_key)
        raise LoginFailed(
            502, "OMERO.web is not responding. Please try later.", code="web_unavailable"
        ) from None
    try:
        previous = await identify(request)
        if previous.record is not None:  # logging in again ends the old session
            await end_session(request, previous.record.id)
        record = await app[SESSION_STORE].create(
            server_id=login.server_id,
            omero_session_key=login.session_key,
            user_id=login.user_id,
            user_name=login.user_name,
            kind=kind,
            cookies=cookies,
        )
    except SessionStoreUnavailable:
        await _close_quietly(request, login.server_id, login.session_key)
        raise LoginFailed(503, STORE_DOWN, code="store_unavailable") from None
    log.info(
        "login user=%s server=%d client=%s rid=%s",
        login.user_name,
        login.server_id,
        request[SCOPE].client.address,
        request[SCOPE].request_id,
    )
    return record


async def _close_quietly(request: web.Request, server_id: int, key: str) -> None:
    try:
        await request.app[OMERO].close(server_id, key)
        metrics.OMERO_SESSIONS_CLOSED.labels("logout").inc()
    except OmeroError as exc:
        log.warning("could not close an OMERO session on server %d: %s", server_id, exc)


async def end_session(request: web.Request, session_id: str) -> bool:
    """Delete porter's session, end OMERO.web's (no Django session left behind) and close
    the OMERO session on the server; False when it had ended already."""
    removed = await request.app[SESSION_STORE].delete(session_id)
    if removed is None:
        return False
    # whoever removed it closes it, exactly once
    await web_logout(request.app[CLIENT_SESSION], request.app[SETTINGS], removed.cookies)
    await _close_quietly(request, removed.server_id, removed.omero_session_key)
    return True


# -- OMERO.web's URLs -----------------------------------------------------------------------


async def webclient_login(request: web.Request) -> web.StreamResponse:
    """OMERO.web's login page: porter's form instead (its ?url= kept when safe)."""
    location = URL(_prefix(request) + "/porter/login")
    target = request.query.get("url")
    if target:
        location = location.with_query(url=target)
    return redirect(str(location))


async def api_login(request: web.Request) -> web.StreamResponse:
    """OMERO.web's JSON API login (/api/v0/login/), same answers, served by porter."""
    if request.method != hdrs.METH_POST:
        return web.json_response(
            {"message": "POST only with username, password, server and csrftoken"}, status=405
        )
    try:
        form = await read_form(request)
    except FormTooLarge:
        return web.json_response({"message": "Request too large."}, status=413)
    cookie = request.cookies.get("csrftoken")
    token = request.headers.get("X-CSRFToken") or form.get("csrfmiddlewaretoken")
    if not django_csrf_valid(cookie, token):
        return web.json_response({"message": "CSRF verification failed."}, status=403)
    if not request.app[SETTINGS].login.password_login:
        return web.json_response({"message": NO_PASSWORD_FORM}, status=403)
    try:
        record, login = await log_in(
            request,
            form.get("server"),
            form.get("username", "").strip(),
            form.get("password", ""),
        )
    except LoginFailed as failed:
        return web.json_response(
            {"message": failed.message}, status=failed.status, headers=failed.headers
        )
    # OMERO.web's eventContext also has sessionId and sessionUuid: porter never shows them.
    context: dict[str, Any] = {
        "userId": login.user_id,
        "userName": login.user_name,
        "groupId": login.group_id,
        "groupName": login.group_name,
        "isAdmin": login.is_admin,
    }
    response = web.json_response({"success": True, "eventContext": context}, headers=NO_STORE)
    set_session_cookie(request, response, record.id)
    return response


async def api_token(request: web.Request) -> web.StreamResponse:
    """OMERO.web's /api/v0/token/: the CSRF token a script sends with its login.

    Served by porter because, before login, nothing of OMERO.web's is reachable. The token is
    the secret of the ``csrftoken`` cookie, which OMERO.web (Django) accepts as its own.
    """
    secret = request.cookies.get("csrftoken", "")
    if not django_csrf_valid(secret, secret):
        secret = new_django_secret()
    response = web.json_response({"data": secret}, headers=NO_STORE)
    response.set_cookie(
        "csrftoken",
        secret,
        path=_prefix(request) or "/",
        samesite="Lax",
        secure=request[SCOPE].client.scheme == "https",
        max_age=31449600,
    )
    return response


# -- logout ---------------------------------------------------------------------------------


async def logout_page(request: web.Request) -> web.StreamResponse:
    """GET: ask before logging out (a link alone must not log anyone out)."""
    identity = await identify(request)
    if identity.record is None:
        elsewhere = await sessionless_logout(request)
        response = redirect(elsewhere or _prefix(request) + "/porter/login")
        if identity.stale:
            clear_session_cookie(request, response)
        return response
    headers = dict(PAGE_HEADERS)
    destination = await oidc_end_session(request, identity.record)
    if destination is not None:  # the form's redirect goes on to the provider
        origin = URL(destination).origin()
        headers["Content-Security-Policy"] = headers["Content-Security-Policy"].replace(
            "form-action 'self'", f"form-action 'self' {origin}"
        )
    return form_page(
        request,
        "logout.html",
        "logout",
        headers=headers,
        user=identity.record.user_name,
        action=_prefix(request) + "/porter/logout",
    )


async def logout_submit(request: web.Request) -> web.StreamResponse:
    """POST with porter's CSRF token: close the OMERO session, forget porter's, clear the
    cookie."""
    try:
        form = await read_form(request)
    except FormTooLarge:
        return error_response(request, 413)
    if not request.app[CSRF].valid(request, form.get("csrf_token"), "logout"):
        return await logout_page(request)
    return await _log_out(request)


async def webclient_logout(request: web.Request) -> web.StreamResponse:
    """OMERO.web's logout URL. Its POST carries Django's token, which porter cannot check
    against OMERO.web's session; a same-origin POST is accepted, anything else confirms."""
    if request.method == hdrs.METH_POST and _same_origin(request):
        return await _log_out(request)
    return await logout_page(request)


def _same_origin(request: web.Request) -> bool:
    client = request[SCOPE].client
    origin = request.headers.get(hdrs.ORIGIN) or request.headers.get(hdrs.REFERER)
    if not origin or not client.host:
        return False
    try:  # anything unparseable (bad port, broken IPv6, odd bytes) is simply not same-origin
        url = URL(origin)
        return url.scheme == client.scheme and url.raw_authority.lower() == client.host.lower()
    except (ValueError, TypeError, UnicodeError):
        return False


async def _log_out(request: web.Request) -> web.StreamResponse:
    identity = await identify(request)
    location = _prefix(request) + "/porter/login?logged_out=1"
    if identity.record is not None:
        destination = await oidc_end_session(request, identity.record)
        await end_session(request, identity.record.id)
        log.info("logout user=%s rid=%s", identity.record.user_name, request[SCOPE].request_id)
        location = destination or location  # RP-initiated logout at the OpenID provider
    response = redirect(location)
    clear_session_cookie(request, response)
    return response


async def stylesheet(request: web.Request) -> web.StreamResponse:
    return web.Response(
        body=STYLESHEET,
        content_type="text/css",
        headers={hdrs.CACHE_CONTROL: "public, max-age=3600", "X-Content-Type-Options": "nosniff"},
    )


def add_routes(app: web.Application, prefix: str) -> None:
    app.router.add_get(prefix + STYLESHEET_PATH, stylesheet)
    app.router.add_get(prefix + "/porter/login", login_page)
    app.router.add_post(prefix + "/porter/login", login_submit)
    app.router.add_get(prefix + "/porter/logout", logout_page)
    app.router.add_post(prefix + "/porter/logout", logout_submit)
    # OMERO.web's login views take a username and password in the form (webadmin's too):
    # porter's page instead, so no password reaches OMERO.web unthrottled.
    for app_name in ("webclient", "webadmin"):
        app.router.add_route("*", f"{prefix}/{app_name}/login/", webclient_login)
        app.router.add_route("*", f"{prefix}/{app_name}/logout/", webclient_logout)
    app.router.add_route("*", prefix + r"/api/v{version:[^/]+}/login/", api_login)
    app.router.add_get(prefix + r"/api/v{version:[^/]+}/token/", api_token)
