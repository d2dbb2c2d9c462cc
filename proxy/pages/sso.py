"""Porter's SSO pages: a one-time link that starts a porter session, porter's own tokens for
scripts, and the public key that verifies them. (Token authentication of requests is
proxy/identity/tokens.py.)"""

from __future__ import annotations

import logging

from aiohttp import hdrs, web

from auth.jwt_verify import SsoError, TokenRejected, VerifiedToken
from auth.omero_errors import OmeroError
from proxy.answers import NO_STORE, error_response, redirect
from proxy.identity.session import identify
from proxy.identity.tokens import SSO_UNAVAILABLE, server_of, sso_meanings, verified_identity
from proxy.keys import OMERO, PORTER_TOKENS, PRINCIPAL, SCOPE, SETTINGS, SSO_SESSIONS, STORES
from proxy.pages.login import (
    FormTooLarge,
    LoginFailed,
    authenticate,
    landing,
    read_form,
    start_session,
)
from proxy.principal import Principal
from proxy.session_cookie import set_session_cookie

log = logging.getLogger("porter.sso")

MAX_JTI = 256


async def link_login(request: web.Request) -> web.StreamResponse:
    """`/porter/sso?token=...&url=...`: a porter session for the token's user, then a redirect
    to a URL without the token. The token works once."""
    settings = request.app[SETTINGS].sso
    token = request.query.get("token")
    if not (settings.enabled and settings.link_login) or not token:
        return error_response(request, 404)
    request[PRINCIPAL] = Principal("token", "unknown", secrets=frozenset({token}))
    identity, verified = await verified_identity(request, token)
    request[PRINCIPAL] = Principal("token", identity.username, secrets=frozenset({token}))
    await _first_use(request, verified)
    try:
        with sso_meanings():
            login = await request.app[SSO_SESSIONS].new_session(
                server_of(request, identity),
                identity.username,
                request[SCOPE].client.address,
                identity.group,
            )
    except OmeroError as exc:
        log.warning("SSO link login failed rid=%s: %s", request[SCOPE].request_id, exc)
        raise SsoError("sso_unavailable", SSO_UNAVAILABLE, status=503) from None
    try:
        record = await start_session(request, login, kind="sso")
    except LoginFailed as failed:
        return error_response(request, failed.status, failed.message)
    response = redirect(landing(request, request.query.get("url")))
    response.headers["Referrer-Policy"] = "no-referrer"  # the token was in this URL
    set_session_cookie(request, response, record.id)
    return response


async def _first_use(request: web.Request, verified: VerifiedToken) -> None:
    """A link token works once: its `jti` is remembered in the session store (shared by
    porter's processes with Redis) until it expires. Raises TokenRejected otherwise."""
    jti = verified.claims.get("jti")
    if not isinstance(jti, str) or not 0 < len(jti) <= MAX_JTI:
        raise TokenRejected("no_jti", "link tokens must carry a jti")
    name = f"sso-link:{verified.claims['iss']}:{jti}"
    if not await request.app[STORES].replays.use_once(name, float(verified.claims["exp"])):
        raise TokenRejected("replayed", "this link was used already")


async def porter_token(request: web.Request) -> web.StreamResponse:
    """POST `/porter/token`: a short-lived JWT signed by porter, for scripts.

    With `username` and `password` (form or JSON), checked against OMERO; or for the
    porter session of the caller (then `X-Requested-With: XMLHttpRequest` is required, which
    no cross-site form can send).
    """
    issuer = request.app.get(PORTER_TOKENS)
    if issuer is None:
        return error_response(request, 404)
    try:
        form = await read_form(request)
    except FormTooLarge:
        return error_response(request, 413)
    username = form.get("username", "").strip()
    if username or form.get("password"):
        try:
            login = await authenticate(
                request, form.get("server"), username, form.get("password", "")
            )
        except LoginFailed as failed:
            return web.json_response(
                {"error": failed.message}, status=failed.status, headers=failed.headers
            )
        # The token stands for the user; the OMERO session that proved the password is done.
        await request.app[OMERO].close(login.server_id, login.session_key)
        name, server_id = login.user_name, login.server_id
    else:
        if request.headers.get("X-Requested-With", "").lower() != "xmlhttprequest":
            return error_response(request, 403, "Send username and password, or use AJAX.")
        identity = await identify(request)
        if identity.record is None:
            return error_response(request, 401, "Log in first, or send username and password.")
        name, server_id = identity.record.user_name, identity.record.server_id
    token = issuer.issue(name, server_id)
    lifetime = request.app[SETTINGS].sso.porter_tokens.lifetime
    return web.json_response(
        {"access_token": token, "token_type": "Bearer", "expires_in": lifetime},
        headers=NO_STORE,
    )


async def porter_jwks(request: web.Request) -> web.StreamResponse:
    issuer = request.app.get(PORTER_TOKENS)
    if issuer is None:
        return error_response(request, 404)
    return web.json_response(issuer.jwks(), headers={hdrs.CACHE_CONTROL: "public, max-age=300"})


def add_routes(app: web.Application, prefix: str) -> None:
    app.router.add_get(prefix + "/porter/sso", link_login)
    app.router.add_post(prefix + "/porter/token", porter_token)
    app.router.add_get(prefix + "/porter/jwks.json", porter_jwks)
