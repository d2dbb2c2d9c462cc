"""Everything that is not porter's own page: who is asking, then forward or ask for login."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from urllib.parse import quote

import aiohttp
from aiohttp import hdrs, web
from multidict import CIMultiDict
from yarl import URL

from auth.errors import OmeroError, ServerUnavailable, SessionGone
from auth.sessions import SessionRecord
from auth.store import SessionStoreUnavailable
from filters.rules import decide
from proxy.errors import error_response, redirect, wants_json
from proxy.forward import answer, send
from proxy.handoff import HandoffFailed, handoff, rewrite_cookies
from proxy.keys import (
    CLEAR_COOKIE,
    CLIENT_SESSION,
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
from proxy.sessions import clear_session_cookie, identify
from proxy.websocket import forward_websocket, is_websocket

log = logging.getLogger("porter.proxy")

_IDEMPOTENT = frozenset({hdrs.METH_GET, hdrs.METH_HEAD, hdrs.METH_OPTIONS})


async def gate(request: web.Request) -> web.StreamResponse:
    """Decide on the canonical path, then forward as the user, as the public user, or ask
    for login."""
    app = request.app
    scope = request[SCOPE]
    decision = decide(request.method, scope.path, app[PUBLIC_RULES])
    if decision.kind == "bad_request" or decision.forward is None:
        log.info("bad path rid=%s: %s", scope.request_id, decision.reason)
        return error_response(request, 400)
    query = request.raw_path.partition("?")[2]
    target = app[SETTINGS].proxy.prefix + decision.forward
    request[TARGET] = f"{target}?{query}" if query else target
    try:
        identity = await identify(request)
    except SessionStoreUnavailable:
        return error_response(request, 503, "The session store is unavailable. Please retry.")
    if identity.record is not None:  # a logged-in user stays themselves, public path or not
        return await as_user(request, identity.record)
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
    upstream = await send(request, login.cookies)
    if isinstance(upstream, web.Response):
        return upstream
    if await _logged_out_upstream(request, upstream, login.cookies):
        # OMERO dropped the public session: make a new one (single-flight) and retry once.
        upstream.release()
        await public.invalidate(login.server_id, login.session_key)
        try:
            login = await public.get()
        except OmeroError:
            return error_response(request, 503, "Public access is unavailable at the moment.")
        upstream = await send(request, login.cookies)
        if isinstance(upstream, web.Response):
            return upstream
    return await answer(request, upstream)  # OMERO.web's session cookies are dropped


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
    upstream = await send(request, record.cookies)
    if isinstance(upstream, web.Response):
        return upstream
    if await _logged_out_upstream(request, upstream, record.cookies):
        renewed = await renew(request, record)
        if isinstance(renewed, web.StreamResponse):
            upstream.release()
            return renewed
        record = renewed
        if request.method in _IDEMPOTENT:
            upstream.release()
            upstream = await send(request, record.cookies)
            if isinstance(upstream, web.Response):
                return upstream
    store = request.app[SESSION_STORE]
    session_id = record.id

    async def capture(taken: dict[str, str | None]) -> None:
        await store.update_cookies(session_id, taken)

    return await answer(request, upstream, capture)


async def _logged_out_upstream(
    request: web.Request, upstream: aiohttp.ClientResponse, cookies: Mapping[str, str]
) -> bool:
    """True when OMERO.web answered as if the session of `cookies` were not logged in."""
    if upstream.status in (301, 302, 303, 307, 308):
        # OMERO.web's login_required sends browsers to its login page.
        location = URL(upstream.headers.get(hdrs.LOCATION, ""))
        login = request.app[SETTINGS].proxy.prefix + "/webclient/login/"
        return location.path.startswith(login)
    if upstream.status == 403:
        return not await _upstream_knows(request, cookies)
    return False


async def _upstream_knows(request: web.Request, cookies: Mapping[str, str]) -> bool:
    """Ask OMERO.web whether the held cookies still log this user in (a 403 may be real)."""
    settings = request.app[SETTINGS]
    url = settings.proxy.upstream.rstrip("/") + settings.proxy.prefix + "/webclient/keepalive_ping/"
    cookie_headers: CIMultiDict[str] = CIMultiDict({"X-Requested-With": "XMLHttpRequest"})
    rewrite_cookies(cookie_headers, frozenset(), cookies)
    try:
        async with request.app[CLIENT_SESSION].get(
            url, headers=cookie_headers, allow_redirects=False
        ) as resp:
            body = await resp.content.read(256)
            return resp.status == 200 and body.strip() == b"OK"
    except (aiohttp.ClientError, TimeoutError):
        return True  # cannot tell: pass the 403 on as it is


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
