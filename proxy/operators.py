"""Who may call porter's operator endpoints (readyz details, cache stats and purge, metrics):
one check, used by each of them."""

from __future__ import annotations

import hmac

from aiohttp import hdrs, web

from filters.forwarded import FORWARDING_HEADERS, TrustedProxies
from proxy.keys import SCOPE, SETTINGS


def is_operator(request: web.Request, allowed: TrustedProxies) -> bool:
    """A caller of porter's operator endpoints (readyz details, cache stats and purge,
    metrics): it sends `Authorization: Bearer <proxy.operator_token>`. No token configured:
    nobody is. The address is a second fence only: it must be in `allowed`, and be that
    address's own request (a proxy porter was not told about relays everyone from its own
    address, and a plain proxy_pass adds no X-Forwarded-For to tell them apart)."""
    token = request.app[SETTINGS].proxy.operator_token
    if not token:
        return False
    scheme, _, given = request.headers.get(hdrs.AUTHORIZATION, "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(
        given.strip().encode("utf-8", "surrogateescape"), token.encode()
    ):
        return False
    client = request[SCOPE].client
    if len(client.forwarded_for) == 1 and any(h in request.headers for h in FORWARDING_HEADERS):
        return False
    return allowed.trusts_text(client.address)
