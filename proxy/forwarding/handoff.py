"""OMERO.web's own session, held server-side: the handoff.

After a login porter asks OMERO.web once to join the OMERO session
(``?server=<id>&bsession=<key>``); OMERO.web answers with its ``sessionid`` cookie, which porter
keeps in the session record and attaches to that user's forwarded requests. Browsers never
see it, and a browser cookie of that name is dropped on the way in.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from urllib.parse import urlencode

import aiohttp
from aiohttp import hdrs, web
from multidict import CIMultiDict
from yarl import URL

from auth.omero_errors import HandoffFailed
from proxy.django_csrf import new_django_secret
from proxy.forwarding.cookies import rewrite_cookies, take_set_cookies
from proxy.keys import CLIENT_SESSION, COOKIE_NAMES, SETTINGS
from proxy.settings import Settings

log = logging.getLogger("porter.proxy")


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


async def web_logout(
    http: aiohttp.ClientSession, settings: Settings, cookies: Mapping[str, str]
) -> bool:
    """End OMERO.web's own session held in `cookies`, as its logout form does: a POST to
    /webclient/logout/ with a Django CSRF pair of porter's making. OMERO.web closes the OMERO
    session and flushes its Django session (no session file left behind). True when it did;
    False when OMERO.web could not (it no longer knows the session, or cannot be reached):
    never raises, the caller closes the OMERO session itself either way."""
    if not cookies:
        return False
    url = settings.proxy.upstream.rstrip("/") + settings.proxy.prefix + "/webclient/logout/"
    csrf = new_django_secret()
    headers: CIMultiDict[str] = CIMultiDict(
        {"X-CSRFToken": csrf, "X-Requested-With": "XMLHttpRequest", "User-Agent": "omero-porter"}
    )
    rewrite_cookies(headers, frozenset(), {**cookies, "csrftoken": csrf})
    timeout = aiohttp.ClientTimeout(total=settings.proxy.read_timeout)
    try:
        async with http.post(url, headers=headers, allow_redirects=False, timeout=timeout) as resp:
            await resp.content.read(64 * 1024)
            ended = resp.status in (302, 303) and "/webclient/login/" in resp.headers.get(
                hdrs.LOCATION, ""
            )
    except (asyncio.TimeoutError, aiohttp.ClientError) as exc:
        log.info("OMERO.web logout not reached (%s)", type(exc).__name__)
        return False
    return ended
