"""The public user: anonymous requests on public paths, all on ONE shared OMERO session."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from contextlib import contextmanager

from aiohttp import web

from auth.omero_errors import HandoffFailed, OmeroError, ServerUnavailable
from porter_errors import Refused
from proxy.keys import DECISION, OUTAGES, PUBLIC, PUBLIC_CACHE, SCOPE, SETTINGS
from proxy.principal import Principal

log = logging.getLogger("porter.proxy")

UNAVAILABLE = "Public access is unavailable at the moment."


async def public_user(request: web.Request) -> Principal | None:
    """The shared public user, when the path was decided public; no per-visitor state
    anywhere, and no capture: OMERO.web's session cookies never reach anonymous visitors."""
    public = request.app.get(PUBLIC)
    if public is None or request[DECISION].kind != "public":
        return None
    try:
        with _unavailable(request):
            login = await public.get()
    except Refused as refused:
        if not _cacheable(request):
            raise
        return _without_session(request, refused)

    async def renew() -> Mapping[str, str]:
        # OMERO dropped the public session: make a new one (single-flight).
        await public.invalidate(login.server_id, login.session_key)
        with _unavailable(request):
            return (await public.get()).cookies

    return Principal(
        "public",
        "public",
        login.server_id,
        login.cookies,
        frozenset({login.session_key, *login.cookies.values()}),
        renew,
    )


def _cacheable(request: web.Request) -> bool:
    cache = request.app.get(PUBLIC_CACHE)
    canonical = request[DECISION].canonical
    return (
        cache is not None
        and canonical is not None
        and (cache.rules.ttl(request.method, canonical) is not None)
    )


def _without_session(request: web.Request, refused: Refused) -> Principal:
    """Still the public user, whose OMERO session cannot be had now (OMERO is down): the
    public cache may answer; anything that needs the session gets `refused`."""

    async def renew() -> Mapping[str, str]:
        raise refused

    server_id = request.app[SETTINGS].public_session.server_id
    return Principal("public", "public", server_id, renew=renew)


@contextmanager
def _unavailable(request: web.Request) -> Iterator[None]:
    try:
        yield
    except (OmeroError, HandoffFailed) as exc:
        log.warning("public session unavailable rid=%s: %s", request[SCOPE].request_id, exc)
        if isinstance(exc, ServerUnavailable):
            request.app[OUTAGES].refused(exc.server_id, request[SCOPE].request_id)
        raise Refused(503, UNAVAILABLE) from None
