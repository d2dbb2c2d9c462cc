"""Porter's session cookie and who a request belongs to."""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web

from auth.sessions import SessionRecord, is_session_id
from proxy.keys import SCOPE, SESSION_STORE, SETTINGS


@dataclass(frozen=True)
class Identity:
    """The session a request presented, if any.

    `stale` is true when a porter cookie was sent that names no live session (unknown,
    expired, malformed or forged): it is treated as no session and cleared.
    """

    record: SessionRecord | None
    stale: bool = False


async def identify(request: web.Request) -> Identity:
    """Look the porter cookie up (may raise SessionStoreUnavailable)."""
    name = request.app[SETTINGS].session.cookie_name
    value = request.cookies.get(name)
    if value is None:
        return Identity(None)
    if not is_session_id(value):
        return Identity(None, stale=True)
    record = await request.app[SESSION_STORE].get(value)
    return Identity(record, stale=record is None)


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


def clearing_header(request: web.Request) -> str:
    """A Set-Cookie value that clears porter's cookie (for responses already being sent,
    whose cookie jar was turned into headers)."""
    from http.cookies import SimpleCookie

    settings = request.app[SETTINGS].session
    cookie: SimpleCookie = SimpleCookie()
    cookie[settings.cookie_name] = ""
    morsel = cookie[settings.cookie_name]
    morsel["path"] = cookie_path(request)
    morsel["max-age"] = 0
    morsel["expires"] = "Thu, 01 Jan 1970 00:00:00 GMT"
    morsel["httponly"] = True
    morsel["samesite"] = settings.session_cookie_samesite
    if _secure(request):
        morsel["secure"] = True
    return morsel.OutputString()
