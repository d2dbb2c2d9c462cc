"""Porter's session cookie on the way out: set, cleared, always HttpOnly, Secure when the
client's own connection is https, under porter's mount path."""

from __future__ import annotations

from aiohttp import web

from proxy.keys import SCOPE, SETTINGS


def cookie_path(request: web.Request) -> str:
    return request.app[SETTINGS].proxy.prefix or "/"


def _secure(request: web.Request) -> bool:
    mode = request.app[SETTINGS].session.session_cookie_secure
    if mode == "auto":
        return request[SCOPE].client.scheme == "https"
    return mode == "true"


def set_session_cookie(request: web.Request, response: web.StreamResponse, session_id: str) -> None:
    settings = request.app[SETTINGS].session
    response.set_cookie(
        settings.cookie_name,
        session_id,
        path=cookie_path(request),
        httponly=True,
        secure=_secure(request),
        samesite=settings.session_cookie_samesite,
        max_age=None if settings.session_expire_at_browser_close else settings.session_cookie_age,
    )


def clear_session_cookie(request: web.Request, response: web.StreamResponse) -> None:
    settings = request.app[SETTINGS].session
    response.del_cookie(
        settings.cookie_name,
        path=cookie_path(request),
        secure=_secure(request),
        httponly=True,
        samesite=settings.session_cookie_samesite,
    )
