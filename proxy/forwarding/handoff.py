"""OMERO.web's own session, held server-side: the handoff and the cookie rewriting.

After a login porter asks OMERO.web once to join the OMERO session
(``?server=<id>&bsession=<key>``); OMERO.web answers with its ``sessionid`` cookie, which porter
keeps in the session record and attaches to that user's forwarded requests. Browsers never
see it, and a browser cookie of that name is dropped on the way in.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Mapping
from http.cookies import CookieError, SimpleCookie
from urllib.parse import urlencode

import aiohttp
from aiohttp import hdrs, web
from multidict import CIMultiDict
from yarl import URL

from auth.errors import HandoffFailed
from proxy.keys import CLIENT_SESSION, COOKIE_NAMES, SETTINGS

log = logging.getLogger("porter.proxy")


def parse_cookie_header(values: Iterable[str]) -> list[tuple[str, str]]:
    """Name/value pairs of Cookie headers, in order, keeping values byte for byte."""
    pairs: list[tuple[str, str]] = []
    for value in values:
        for part in value.split(";"):
            name, sep, val = part.strip().partition("=")
            if sep and name:
                pairs.append((name.strip(), val.strip()))
    return pairs


def rewrite_cookies(
    headers: CIMultiDict[str], drop: frozenset[str], held: Mapping[str, str] | None
) -> None:
    """Remove cookies named in `drop` from the Cookie header, then add the `held` ones."""
    pairs = [
        (n, v) for n, v in parse_cookie_header(headers.getall(hdrs.COOKIE, ())) if n not in drop
    ]
    pairs += list((held or {}).items())
    headers.popall(hdrs.COOKIE, None)
    if pairs:
        headers[hdrs.COOKIE] = "; ".join(f"{n}={v}" for n, v in pairs)


def take_set_cookies(headers: CIMultiDict[str], names: frozenset[str]) -> dict[str, str | None]:
    """Remove Set-Cookie headers for `names`; return their new values (None: deleted)."""
    taken: dict[str, str | None] = {}
    kept: list[str] = []
    for value in headers.getall(hdrs.SET_COOKIE, ()):
        name = value.split("=", 1)[0].strip()
        if name not in names:
            kept.append(value)
            continue
        taken[name] = _cookie_value(value, name)
    headers.popall(hdrs.SET_COOKIE, None)
    for value in kept:
        headers.add(hdrs.SET_COOKIE, value)
    return taken


def _cookie_value(header: str, name: str) -> str | None:
    cookie: SimpleCookie = SimpleCookie()
    try:
        cookie.load(header)
    except CookieError:
        return None
    morsel = cookie.get(name)
    if morsel is None or not morsel.value:
        return None
    max_age = morsel["max-age"]
    if max_age not in ("", None) and str(max_age).lstrip("-").isdigit() and int(max_age) <= 0:
        return None
    return morsel.value


async def handoff(app: web.Application, server_id: int, omero_key: str) -> dict[str, str]:
    """Have OMERO.web join the OMERO session; return the cookies porter must hold for it."""
    settings = app[SETTINGS]
    query = urlencode({"server": server_id, "bsession": omero_key})
    base = settings.proxy.upstream.rstrip("/") + settings.proxy.prefix
    url = URL(f"{base}{settings.login.handoff_path}?{query}", encoded=True)
    timeout = aiohttp.ClientTimeout(total=settings.proxy.read_timeout)
    headers = {"X-Requested-With": "XMLHttpRequest", "User-Agent": "omero-porter"}
    try:
        async with app[CLIENT_SESSION].get(
            url, allow_redirects=False, timeout=timeout, headers=headers
        ) as resp:
            await resp.content.read(64 * 1024)
            status = resp.status
            taken = take_set_cookies(CIMultiDict(resp.headers), app[COOKIE_NAMES].held)
    except asyncio.TimeoutError:
        raise HandoffFailed("OMERO.web did not answer the handoff in time") from None
    except aiohttp.ClientError as exc:
        raise HandoffFailed(
            f"OMERO.web unreachable for the handoff ({type(exc).__name__})"
        ) from None
    cookies = {name: value for name, value in taken.items() if value}
    if status != 200 or not cookies:
        raise HandoffFailed(f"OMERO.web answered the handoff with {status} and no session")
    return cookies
