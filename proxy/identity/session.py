"""Porter's session: its cookie, and the authenticator of the requests that carry it."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass

from aiohttp import hdrs, web

from auth.omero_errors import SessionGone
from auth.sessions import SessionRecord, is_session_id
from proxy.forwarding.handoff import handoff
from proxy.keys import OMERO, SCOPE, SESSION_STORE, SETTINGS
from proxy.principal import Principal

log = logging.getLogger("porter.proxy")


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
    value = cookie_value(request, request.app[SETTINGS].session.cookie_name)
    if value is None:
        return Identity(None)
    if not is_session_id(value):
        return Identity(None, stale=True)
    record = await request.app[SESSION_STORE].get(value)
    return Identity(record, stale=record is None)


async def porter_session(request: web.Request) -> Principal | None:
    """The user of the porter cookie; "not me" without one (a stale one is cleared)."""
    identity = await identify(request)
    if identity.record is None:
        if identity.stale:
            request[SCOPE].notes.clear_cookie = True
        return None
    return user_principal(request, identity.record)


def user_principal(request: web.Request, record: SessionRecord) -> Principal:
    store = request.app[SESSION_STORE]

    async def renew() -> Mapping[str, str]:
        return await renew_user(request, record)

    async def capture(taken: dict[str, str | None]) -> None:
        await store.update_cookies(record.id, taken)

    return Principal(
        "user",
        record.user_name,
        record.server_id,
        record.cookies,
        frozenset({record.omero_session_key, *record.cookies.values()}),
        renew,
        capture,
    )


async def renew_user(request: web.Request, record: SessionRecord) -> Mapping[str, str]:
    """Hand the OMERO session over to OMERO.web again; SessionGone (porter's session ended)
    when the OMERO session itself is gone."""
    app = request.app
    store = app[SESSION_STORE]
    rid = request[SCOPE].request_id
    try:
        await app[OMERO].join(record.server_id, record.omero_session_key)
    except SessionGone:
        log.info("OMERO session gone, ending porter session rid=%s", rid)
        await store.delete(record.id)
        raise
    cookies = await handoff(app, record.server_id, record.omero_session_key)
    renewed = await store.update_cookies(record.id, cookies)
    if renewed is None:
        raise SessionGone("the porter session ended while OMERO.web's was renewed")
    log.info("OMERO.web session renewed rid=%s", rid)
    return renewed.cookies


def cookie_value(request: web.Request, name: str) -> str | None:
    """The value of cookie `name` (the last one sent, as aiohttp's parser keeps), read from
    the Cookie header without parsing every cookie the browser sends along."""
    header = request.headers.get(hdrs.COOKIE)
    if header is None or name not in header:
        return None
    found = None
    prefix = name + "="
    for part in header.split(";"):
        part = part.strip()
        if part.startswith(prefix):
            found = part[len(prefix) :]
    if found is not None and found.startswith('"'):
        return request.cookies.get(name)  # quoted: let the full parser unquote it
    return found
