"""Everything that is not porter's own page: decide the path, authenticate, then forward as
the principal or ask for login. Failures are raised for the error middleware to answer."""

from __future__ import annotations

import logging

from aiohttp import web

from filters.credentials import credential_params
from proxy.errors import error_response, login_required
from proxy.forwarding.cached import cache_ttl, forward_cached
from proxy.forwarding.renewal import forward_renewing
from proxy.forwarding.websocket import forward_websocket, is_websocket
from proxy.identity.chain import authenticate
from proxy.keys import DECISION, PRINCIPAL, PUBLIC_RULES, SCOPE, SETTINGS, TARGET

log = logging.getLogger("porter.proxy")

CREDENTIALS_REFUSED = (
    "Porter does not accept OMERO credentials (bsession, username, password, server) in a "
    "URL. Log in on porter's login page and open the link without them."
)


async def gate(request: web.Request) -> web.StreamResponse:
    scope = request[SCOPE]
    rules = request.app[PUBLIC_RULES]
    decision = rules.cached(request.method, scope.path) or await rules.decide(
        request.method, scope.path
    )
    request[DECISION] = decision
    if decision.forward is None:
        log.info("bad path rid=%s: %s", scope.request_id, decision.reason)
        return error_response(request, 400)
    query = request.raw_path.partition("?")[2]
    credentials = credential_params(query)
    if credentials:  # never forwarded: OMERO.web would log this request's session in anew
        log.info("refused credentials in the query rid=%s: %s", scope.request_id, credentials)
        return error_response(request, 400, CREDENTIALS_REFUSED)
    target = request.app[SETTINGS].proxy.prefix + decision.forward
    request[TARGET] = f"{target}?{query}" if query else target
    principal = await authenticate(request)
    if principal is None:
        return login_required(request)
    request[PRINCIPAL] = principal
    if is_websocket(request):
        return await forward_websocket(request, principal.cookies)
    if principal.kind == "public" and (ttl := cache_ttl(request)) is not None:
        return await forward_cached(request, principal, ttl)
    return await forward_renewing(request, principal)
