"""`authenticate(request)`: who is asking, decided once.

The chain is an ordered tuple of authenticators, composed in proxy/app.py. Each is an async
function of the request that answers with a Principal, or None for "not me"; the first
answer wins. Adding a way in (OIDC, an API key) is one new module and one line there.
Failures are raised (porter's exception tree) for the error middleware to answer.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web

from proxy.principal import Principal

Authenticator = Callable[[web.Request], Awaitable[Principal | None]]

AUTHENTICATORS = web.AppKey("authenticators", tuple[Authenticator, ...])


async def authenticate(request: web.Request) -> Principal | None:
    """The principal of `request`, or None when nobody in the chain claims it."""
    for authenticator in request.app[AUTHENTICATORS]:
        principal = await authenticator(request)
        if principal is not None:
            return principal
    return None
