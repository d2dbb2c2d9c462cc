"""Everything that is not porter's own page: who is asking, then forward or ask for login."""

from __future__ import annotations

import logging
from urllib.parse import quote

import aiohttp
from aiohttp import hdrs, web
from multidict import CIMultiDict
from yarl import URL

from auth.errors import OmeroError, ServerUnavailable, SessionGone
from auth.sessions import SessionRecord
from auth.store import SessionStoreUnavailable
from proxy.errors import error_response, redirect, wants_json
from proxy.forward import answer, send
from proxy.handoff import HandoffFailed, handoff, rewrite_cookies
from proxy.keys import CLIENT_SESSION, OMERO, SCOPE, SESSION_STORE, SETTINGS, WHO, Who
from proxy.sessions import clear_session_cookie, identify
from proxy.websocket import forward_websocket, is_websocket

log = logging.getLogger("porter.proxy")

_IDEMPOTENT = frozenset({hdrs.METH_GET, hdrs.METH_HEAD, hdrs.METH_OPTIONS})


async def gate(request: web.Request) -> web.StreamResponse:
    """Forward a logged-in user's request; anyone else is asked to log in."""
    try:
        identity = await identify(request)
    except SessionStoreUnavailable:
        return error_response(request, 503, "The session store is unavailable. Please retry.")
    if identity.record is None:
        return login_required(request, clear_cookie=identity.stale)
    record = identity.record
    request[WHO] = Who(
        user=record.user_name,
        server_id=record.server_id,
        secrets=frozenset({record.omero_session_key, *record.cookies.values()}),
    )
    if is_websocket(request):
        return await forward_websocket(request, record.cookies)
    return await forward_as_user(request, record)


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
    if await _logged_out_upstream(request, upstream, record):
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
    request: web.Request, upstream: aiohttp.ClientResponse, record: SessionRecord
) -> bool:
    """True when OMERO.web answered as if this logged-in user were not logged in."""
    if upstream.status in (301, 302, 303, 307, 308):
        # OMERO.web's login_required sends browsers to its login page.
        location = URL(upstream.headers.get(hdrs.LOCATION, ""))
        login = request.app[SETTINGS].proxy.prefix + "/webclient/login/"
        return location.path.startswith(login)
    if upstream.status == 403:
        return not await _upstream_knows(request, record)
    return False


async def _upstream_knows(request: web.Request, record: SessionRecord) -> bool:
    """Ask OMERO.web whether the held cookies still log this user in (a 403 may be real)."""
    settings = request.app[SETTINGS]
    url = settings.proxy.upstream.rstrip("/") + settings.proxy.prefix + "/webclient/keepalive_ping/"
    cookie_headers: CIMultiDict[str] = CIMultiDict({"X-Requested-With": "XMLHttpRequest"})
    rewrite_cookies(cookie_headers, frozenset(), record.cookies)
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
