"""Everything that is not porter's own page: decide the path, authenticate, then forward as
the principal or ask for login. Failures are raised for the error middleware to answer."""

from __future__ import annotations

import logging

from aiohttp import web

from filters.rules import with_query
from proxy.answers import error_response, login_required, refusal_message
from proxy.forwarding.cached import cache_ttl, forward_cached, public_hit
from proxy.forwarding.renewal import forward_renewing
from proxy.forwarding.websocket import forward_websocket, is_websocket
from proxy.identity.chain import authenticate
from proxy.keys import DECISION, PRINCIPAL, PUBLIC_RULES, SCOPE, SETTINGS, TARGET
from proxy.limits import LIMITS

log = logging.getLogger("porter.proxy")


async def gate(request: web.Request) -> web.StreamResponse:
    scope = request[SCOPE]
    app = request.app  # a property that walks the match info: read once
    rules = app[PUBLIC_RULES]
    decision = rules.cached(request.method, scope.path) or await rules.decide(
        request.method, scope.path
    )
    query = request.raw_path.partition("?")[2]
    decision = request[DECISION] = with_query(decision, query)
    if decision.forward is None:  # never forwarded: a bad path, or OMERO credentials
        log.info("bad request rid=%s: %s", scope.request_id, decision.reason)
        return error_response(request, 400, refusal_message(decision))
    target = app[SETTINGS].proxy.prefix + decision.forward
    request[TARGET] = f"{target}?{query}" if query else target
    limits = app.get(LIMITS)
    if limits is not None and (refused := await limits.before_identity(request, decision)):
        return refused  # before any session lookup or upstream work
    if decision.kind == "public":  # nobody's but the public user's: no identity chain
        hit = public_hit(request, app, query)
        if hit is not None:
            return hit
    principal = await authenticate(request)
    if principal is None:
        return login_required(request)
    request[PRINCIPAL] = principal
    if limits is not None and (refused := await limits.after_identity(request, principal)):
        return refused
    if is_websocket(request):
        return await forward_websocket(request, principal.cookies)
    if principal.kind == "public" and (ttl := cache_ttl(request)) is not None:
        return await forward_cached(request, principal, ttl)
    return await forward_renewing(request, principal)
