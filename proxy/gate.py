"""Everything that is not porter's own page: who is asking, then forward or ask for login."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from urllib.parse import quote

from aiohttp import hdrs, web

from auth.errors import HandoffFailed, OmeroError, ServerUnavailable, SessionGone
from auth.sessions import SessionRecord
from auth.store import SessionStoreUnavailable
from filters.credentials import credential_params
from proxy.errors import error_response, redirect, wants_json
from proxy.forwarding.handoff import handoff
from proxy.forwarding.renewal import forward_renewing
from proxy.forwarding.websocket import forward_websocket, is_websocket
from proxy.identity.session import clear_session_cookie, identify
from proxy.keys import (
    CLEAR_COOKIE,
    OMERO,
    PUBLIC,
    PUBLIC_RULES,
    SCOPE,
    SESSION_STORE,
    SETTINGS,
    TARGET,
    WHO,
    Who,
)
from proxy.pages.sso import as_token_user, bearer_token, cookie_token

log = logging.getLogger("porter.proxy")

CREDENTIALS_REFUSED = (
    "Porter does not accept OMERO credentials (bsession, username, password, server) in a "
    "URL. Log in on porter's login page and open the link without them."
)


async def gate(request: web.Request) -> web.StreamResponse:
    """Decide on the canonical path, then forward as the user, as the public user, or ask
    for login."""
    app = request.app
    scope = request[SCOPE]
    decision = await app[PUBLIC_RULES].decide(request.method, scope.path)
    if decision.kind == "bad_request" or decision.forward is None:
        log.info("bad path rid=%s: %s", scope.request_id, decision.reason)
        return error_response(request, 400)
    query = request.raw_path.partition("?")[2]
    credentials = credential_params(query)
    if credentials:  # never forwarded: OMERO.web would log this request's session in anew
        log.info(
            "refused OMERO.web credentials in the query rid=%s: %s",
            scope.request_id,
            ", ".join(credentials),
        )
        return error_response(request, 400, CREDENTIALS_REFUSED)
    target = app[SETTINGS].proxy.prefix + decision.forward
    request[TARGET] = f"{target}?{query}" if query else target
    token = bearer_token(request)
    if token is not None:  # a script or another site: no cookie, the token's user
        return await as_token_user(request, token)
    try:
        identity = await identify(request)
    except SessionStoreUnavailable:
        return error_response(request, 503, "The session store is unavailable. Please retry.")
    if identity.record is not None:  # a logged-in user stays themselves, public path or not
        return await as_user(request, identity.record)
    token = cookie_token(request)
    if token is not None:  # a front SSO layer's cookie
        if identity.stale:
            request[CLEAR_COOKIE] = True
        return await as_token_user(request, token)
    if decision.kind == "public" and PUBLIC in app:
        if identity.stale:
            request[CLEAR_COOKIE] = True
        return await as_public(request)
    return login_required(request, clear_cookie=identity.stale)


async def as_user(request: web.Request, record: SessionRecord) -> web.StreamResponse:
    request[WHO] = Who(
        user=record.user_name,
        server_id=record.server_id,
        secrets=frozenset({record.omero_session_key, *record.cookies.values()}),
        authenticated=True,
    )
    if is_websocket(request):
        return await forward_websocket(request, record.cookies)
    return await forward_as_user(request, record)


async def as_public(request: web.Request) -> web.StreamResponse:
    """Forward on the one shared public session: no per-visitor state anywhere."""
    public = request.app[PUBLIC]
    try:
        login = await public.get()
    except OmeroError as exc:
        log.warning("public session unavailable rid=%s: %s", request[SCOPE].request_id, exc)
        return error_response(request, 503, "Public access is unavailable at the moment.")
    request[WHO] = Who(
        user="public",
        server_id=login.server_id,
        secrets=frozenset({login.session_key, *login.cookies.values()}),
    )

    async def renew_public() -> Mapping[str, str] | web.StreamResponse:
        # OMERO dropped the public session: make a new one (single-flight).
        await public.invalidate(login.server_id, login.session_key)
        try:
            return (await public.get()).cookies
        except OmeroError:
            return error_response(request, 503, "Public access is unavailable at the moment.")

    # No capture: OMERO.web's session cookies never reach anonymous visitors.
    return await forward_renewing(request, login.cookies, renew_public)


def login_required(request: web.Request, *, clear_cookie: bool = False) -> web.StreamResponse:
    """Browsers go to porter's login page; AJAX and JSON clients get 403 (OMERO.web's
    JavaScript reloads the page on 403)."""
    prefix = request.app[SETTINGS].proxy.prefix
    response: web.StreamResponse
    if wants_json(request):
        response = error_response(request, 403, "Login required.")
    else:
        target = request.raw_path if request.method == hdrs.METH_GET else ""
        location = f"{prefix}/porter/login"
        if target:
            location += "?url=" + quote(target, safe="")
        response = redirect(location, 302)
    if clear_cookie:
        clear_session_cookie(request, response)
    return response


async def forward_as_user(request: web.Request, record: SessionRecord) -> web.StreamResponse:
    """Forward with the user's held OMERO.web cookies; renew OMERO.web's session once if it
    no longer knows the user."""
    store = request.app[SESSION_STORE]

    async def renew_user() -> Mapping[str, str] | web.StreamResponse:
        renewed = await renew(request, record)
        return renewed if isinstance(renewed, web.StreamResponse) else renewed.cookies

    async def capture(taken: dict[str, str | None]) -> None:
        await store.update_cookies(record.id, taken)

    return await forward_renewing(request, record.cookies, renew_user, capture)


async def renew(request: web.Request, record: SessionRecord) -> SessionRecord | web.StreamResponse:
    """Hand the OMERO session over to OMERO.web again, or end porter's session if the OMERO
    session itself is gone."""
    app = request.app
    store = app[SESSION_STORE]
    try:
        await app[OMERO].join(record.server_id, record.omero_session_key)
    except SessionGone:
        log.info("OMERO session gone, ending porter session rid=%s", request[SCOPE].request_id)
        await store.delete(record.id)
        return login_required(request, clear_cookie=True)
    except ServerUnavailable:
        return error_response(request, 503, "The OMERO server is unavailable. Please retry.")
    except OmeroError:
        return error_response(request, 502)
    try:
        cookies = await handoff(app, record.server_id, record.omero_session_key)
    except HandoffFailed as exc:
        log.warning("re-handoff failed rid=%s: %s", request[SCOPE].request_id, exc)
        return error_response(request, 502)
    renewed = await store.update_cookies(record.id, cookies)
    if renewed is None:
        return login_required(request, clear_cookie=True)
    log.info("OMERO.web session renewed rid=%s", request[SCOPE].request_id)
    return renewed
