"""Whether OMERO.web still knows a session porter holds for a user, the public or SSO, and
the one renew-and-retry when it does not.

OMERO.web's `login_required` answers a session without a connection (the OMERO session
ended, or OMERO could not be reached when OMERO.web tried to join it, after which OMERO.web
drops the connector from its Django session for good) in one of three ways, all read here
(omeroweb/decorators.py `on_not_logged_in`, webclient's `ignore_login_fail`):

- browsers: a redirect to the login page (``/webclient/login/?url=...``);
- AJAX and the JSON API: 403 (empty, or ``{"message": "Not logged in"}``): as a 403 may also
  be meant, porter asks keepalive_ping with the held cookies whether they still log in;
- views marked ``ignore_login_fail`` (``/webclient/keepalive_ping/``): 200 with the body
  ``Connection Failed``.
"""

from __future__ import annotations

from collections.abc import Mapping

import aiohttp
from aiohttp import hdrs, web
from multidict import CIMultiDict
from yarl import URL

from proxy.forwarding.cookies import rewrite_cookies
from proxy.forwarding.send import answer, send
from proxy.keys import CLIENT_SESSION, SETTINGS
from proxy.limits import upstream_slot
from proxy.principal import Principal

CONNECTION_FAILED = b"Connection Failed"


async def logged_out_upstream(
    request: web.Request, upstream: aiohttp.ClientResponse, cookies: Mapping[str, str]
) -> bool:
    """True when OMERO.web answered as if the session of `cookies` were not logged in."""
    status = upstream.status
    if status in (301, 302, 303, 307, 308):
        try:
            location = URL(upstream.headers.get(hdrs.LOCATION, ""))
        except (ValueError, TypeError):
            return False
        return location.path.startswith(request.app[SETTINGS].proxy.prefix + "/webclient/login/")
    if status == 403:
        return not await _upstream_knows(request, cookies)
    if (
        status == 200
        and upstream.content_length == len(CONNECTION_FAILED)
        and request.method != hdrs.METH_HEAD
    ):
        # read whole and kept by aiohttp: relayed from memory when it is a real answer
        try:
            return await upstream.read() == CONNECTION_FAILED
        except (aiohttp.ClientError, TimeoutError):
            return False  # relaying it fails the same way, with porter's 502
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
            return resp.status == 200 and body.strip() == b"OK"  # not CONNECTION_FAILED
    except (aiohttp.ClientError, TimeoutError):
        return True  # cannot tell: pass the 403 on as it is


_IDEMPOTENT = frozenset({hdrs.METH_GET, hdrs.METH_HEAD, hdrs.METH_OPTIONS})


async def forward_renewing(request: web.Request, principal: Principal) -> web.StreamResponse:
    """Forward as `principal`. If OMERO.web answers as if its held cookies were not logged
    in, renew once; an idempotent request is then sent again (a body already streamed cannot
    be), any other gets OMERO.web's first answer. A renewal that fails raises (the error
    middleware answers), with OMERO.web's first answer released."""
    async with upstream_slot(request, principal):  # held until the answer is relayed
        upstream = await send(request, principal.cookies)
        if isinstance(upstream, web.Response):
            return upstream
        if await logged_out_upstream(request, upstream, principal.cookies):
            try:
                cookies = await principal.renew()
            except BaseException:
                upstream.release()
                raise
            if request.method in _IDEMPOTENT:
                upstream.release()
                upstream = await send(request, cookies)
                if isinstance(upstream, web.Response):
                    return upstream
        return await answer(request, upstream, principal.capture)
