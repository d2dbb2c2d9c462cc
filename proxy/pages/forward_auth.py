"""Forward-auth: porter decides, the site's nginx streams (``[forward_auth]``).

nginx asks ``GET /porter/auth`` (auth_request) for each request, with the original method and
URI in ``X-Original-Method`` / ``X-Original-URI`` (believed from ``trusted_proxies`` only: the
lesson of oauth2-proxy GHSA-7x63-xv5r-3p2x) and the browser's own headers. The URI is
decided exactly as in proxy mode (the same rules, deny list, query-credential refusal, 400s),
then the identity chain answers who it is:

- 200 with ``X-Porter-Cookie`` (the Cookie header nginx sends OMERO.web: the principal's held
  OMERO.web cookies, and the browser's other cookies without porter's own), ``X-Porter-User``
  and ``X-Porter-Kind`` (user / token / public); these reach nginx only, never the browser;
- 401 when the visitor must log in, 403 for a denied path, 400 for a bad one.

Porter writes an access line for refusals only: a granted request is nginx's to log (it
logs every request it serves), which keeps the decision cheap.

``/porter/auth/login`` gives what proxy mode gives a visitor who must log in (browsers: to
the login page; AJAX: 403). ``/porter/auth/renew`` is where nginx sends OMERO.web's
redirects: a redirect to OMERO.web's login page means OMERO.web forgot the session, so porter
renews it and sends the browser back to the original URL (307: a POST is sent again as a
POST, with its body); any other redirect is passed on. nginx's ``error_page`` to a named
location keeps the original method, so both answer every method.
"""

from __future__ import annotations

import logging

from aiohttp import hdrs, web
from cachetools import TTLCache
from yarl import URL

from auth.omero_errors import SessionGone
from filters.canonical import strip_prefix
from filters.redirects import safe_redirect
from filters.rules import Decision, with_query
from proxy.answers import NO_STORE, error_response, login_required, redirect, refusal_message
from proxy.forwarding.cookies import parse_cookie_header
from proxy.identity.chain import authenticate
from proxy.keys import (
    COOKIE_NAMES,
    DECISION,
    PRINCIPAL,
    PUBLIC_RULES,
    SCOPE,
    SETTINGS,
    TRUSTED_PROXIES,
)
from proxy.principal import Principal

log = logging.getLogger("porter.proxy")

ORIGINAL_METHOD = "X-Original-Method"
ORIGINAL_URI = "X-Original-URI"
UPSTREAM_LOCATION = "X-Upstream-Location"

# (method, canonical path, the request's credentials) -> (status, headers)
Cached = tuple[int, dict[str, str]]
DECISIONS = web.AppKey("forward_auth_decisions", TTLCache[tuple[str, ...], Cached])


def _original(request: web.Request) -> tuple[str, str, str] | web.Response:
    """The original method, raw path (below the prefix) and query, or porter's refusal."""
    peer = request.remote or ""
    if not request.app[TRUSTED_PROXIES].trusts_text(peer):
        log.warning("forward-auth refused: %s is not a trusted proxy", peer)
        return error_response(request, 403, "Only a trusted proxy may ask porter for decisions.")
    uri = request.headers.get(ORIGINAL_URI, "")
    method = request.headers.get(ORIGINAL_METHOD, hdrs.METH_GET)
    raw_path, _, query = uri.partition("?")
    below = strip_prefix(raw_path, request.app[SETTINGS].proxy.prefix)
    if not uri.startswith("/") or below is None:
        return error_response(request, 400, "X-Original-URI must be a path under porter's mount.")
    return method, below, query


async def _decide(request: web.Request, method: str, path: str) -> Decision:
    rules = request.app[PUBLIC_RULES]
    return rules.cached(method, path) or await rules.decide(method, path)


def _credentials(request: web.Request) -> tuple[str, ...]:
    """What the identity chain reads: the same values give the same principal."""
    return (
        request.headers.get(hdrs.AUTHORIZATION, ""),
        request.headers.get(hdrs.COOKIE, ""),
    )


async def auth(request: web.Request) -> web.StreamResponse:
    """`GET /porter/auth`: nginx's auth_request."""
    if not request.app[SETTINGS].forward_auth.enabled:
        return error_response(request, 404)
    original = _original(request)
    if isinstance(original, web.Response):
        return original
    method, path, query = original
    decision = request[DECISION] = with_query(await _decide(request, method, path), query)
    if decision.forward is None:
        log.info("forward-auth: bad request rid=%s: %s", request[SCOPE].request_id, decision.reason)
        return error_response(request, 400, refusal_message(decision))
    cache = request.app.get(DECISIONS)
    key = (method, path, *_credentials(request))
    if cache is not None and (hit := cache.get(key)) is not None:
        request[SCOPE].notes.quiet = hit[0] == 200
        return web.Response(status=hit[0], headers=hit[1])
    principal = await authenticate(request)
    if principal is None:
        status = 403 if decision.kind == "deny" else 401
        answer: Cached = (status, dict(NO_STORE))
    else:
        request[PRINCIPAL] = principal
        answer = (200, _granted(request, principal))
    if cache is not None:
        cache[key] = answer
    # Granted decisions are nginx's to log (it logs every request); refusals are porter's.
    request[SCOPE].notes.quiet = answer[0] == 200
    return web.Response(status=answer[0], headers=answer[1])


def _granted(request: web.Request, principal: Principal) -> dict[str, str]:
    dropped = request.app[COOKIE_NAMES].dropped
    pairs = [
        (name, value)
        for name, value in parse_cookie_header(request.headers.getall(hdrs.COOKIE, ()))
        if name not in dropped
    ]
    pairs += principal.cookies.items()
    return {
        **NO_STORE,
        "X-Porter-Cookie": "; ".join(f"{name}={value}" for name, value in pairs),
        "X-Porter-User": principal.user,
        "X-Porter-Kind": principal.kind,
    }


async def login(request: web.Request) -> web.StreamResponse:
    """`/porter/auth/login` (any method): nginx's `error_page 401`, for the original request."""
    original = _original(request)
    if isinstance(original, web.Response):
        return original
    method, _, _ = original
    uri = request.headers.get(ORIGINAL_URI, "/")
    return login_required(request, method=method, target=uri)


async def renew(request: web.Request) -> web.StreamResponse:
    """`/porter/auth/renew` (any method): OMERO.web answered the original request with a
    redirect (`X-Upstream-Location`). To its login page: OMERO.web forgot the held session,
    so porter hands it over again and sends the browser back to the original URL with a 307,
    which browsers follow with the same method and body (OMERO.web refused the request
    before its view ran). Anywhere else: passed on as it is."""
    original = _original(request)
    if isinstance(original, web.Response):
        return original
    method, path, _ = original
    prefix = request.app[SETTINGS].proxy.prefix
    location = request.headers.get(UPSTREAM_LOCATION, "")
    try:
        target = URL(location)
    except (ValueError, TypeError):
        return error_response(request, 502)
    login_page = prefix + "/webclient/login/"
    if not target.path.startswith(login_page):
        return redirect(location, 302)
    uri = safe_redirect(request.headers.get(ORIGINAL_URI), prefix, "")
    if not uri:  # e.g. //evil.example/x: sent back there, a browser would leave the site
        return error_response(request, 400, "This address cannot be returned to.")
    request[DECISION] = await _decide(request, method, path)
    principal = await authenticate(request)
    if principal is None:
        return login_required(request, method=method, target=uri)
    request[PRINCIPAL] = principal
    try:
        await principal.renew()  # other failures are the error boundary's (503, 502)
    except SessionGone:  # the OMERO session itself ended: log in again, back to this URL
        request[SCOPE].notes.clear_cookie = True
        return login_required(request, method=method, target=uri)
    return redirect(uri, 307)


def add_routes(app: web.Application, prefix: str) -> None:
    app.router.add_get(prefix + "/porter/auth", auth)
    # error_page keeps the original method: a POST that must log in or renew arrives as one
    app.router.add_route("*", prefix + "/porter/auth/login", login)
    app.router.add_route("*", prefix + "/porter/auth/renew", renew)
