"""SSO: a JWT from the site's identity provider (or porter's own) makes a request its user's.

Tokens come from `Authorization: Bearer`, from a cookie a front SSO layer sets, or once from a
link (`/porter/sso?token=...`, which starts a normal porter session and redirects to a URL
without the token). The token is never forwarded, logged or mailed. Each (server, user) has one
OMERO session made by the admin and reused (auth/sso_sessions.py).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from aiohttp import hdrs, web

from auth.errors import (
    AdminRefused,
    HandoffFailed,
    InvalidCredentials,
    OmeroError,
    PermissionDenied,
    ServerUnavailable,
)
from auth.jwt_verify import SsoError, TokenRejected, VerifiedToken
from auth.sso_identity import SsoIdentity
from auth.sso_sessions import SsoLogin
from auth.store import SessionStoreUnavailable
from proxy.errors import error_response, redirect
from proxy.forwarding.renewal import forward_renewing
from proxy.keys import (
    JWT_VERIFIER,
    OMERO,
    PORTER_TOKENS,
    SCOPE,
    SESSION_STORE,
    SETTINGS,
    SSO_MAPPER,
    SSO_SESSIONS,
    VERIFIED_TOKENS,
    WHO,
    Who,
)

log = logging.getLogger("porter.sso")

_NO_STORE = {hdrs.CACHE_CONTROL: "no-store"}
MAX_JTI = 256
ADMIN_REFUSED = "OMERO administrators cannot sign in this way. Please use the login form."


def bearer_token(request: web.Request) -> str | None:
    """The token of `Authorization: Bearer <token>`, when SSO accepts bearer tokens."""
    sso = request.app[SETTINGS].sso
    if not (sso.enabled and sso.bearer):
        return None
    scheme, _, token = request.headers.get(hdrs.AUTHORIZATION, "").partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None


def cookie_token(request: web.Request) -> str | None:
    sso = request.app[SETTINGS].sso
    if not (sso.enabled and sso.token_cookie):
        return None
    return request.cookies.get(sso.token_cookie) or None


def _refused(request: web.Request, exc: SsoError) -> web.Response:
    log.info("SSO refused rid=%s: %s", request[SCOPE].request_id, exc.reason)
    headers: dict[str, str] = {}
    if exc.status == 401:
        headers[hdrs.WWW_AUTHENTICATE] = (
            f'Bearer error="invalid_token", error_description="{exc.reason}"'
        )
    return error_response(request, exc.status, exc.message, headers=headers)


async def verified_identity(
    request: web.Request, token: str
) -> tuple[SsoIdentity, VerifiedToken] | web.Response:
    """Verify `token` now (no cache) and map it to its OMERO identity, or porter's refusal."""
    if not token.isascii():  # before anything hashes or decodes it (a header may hold any byte)
        return _refused(request, TokenRejected("malformed", "token has non-ASCII characters"))
    try:
        verified = await request.app[JWT_VERIFIER].verify(token)
        return request.app[SSO_MAPPER].map(verified), verified
    except SsoError as exc:
        return _refused(request, exc)


async def identity_of(request: web.Request, token: str) -> SsoIdentity | web.Response:
    """The OMERO identity a token stands for, or porter's refusal (401, 403, 503)."""
    cache = request.app[VERIFIED_TOKENS]
    known = cache.get(token)
    if known is not None:
        return known
    found = await verified_identity(request, token)
    if isinstance(found, web.Response):
        return found
    identity, verified = found
    cache.put(token, identity, float(verified.claims["exp"]))
    return identity


async def _first_use(request: web.Request, verified: VerifiedToken) -> web.Response | None:
    """A link token works once: its `jti` is remembered in the session store (shared by
    porter's processes with Redis) until it expires. None when this is its first use."""
    jti = verified.claims.get("jti")
    if not isinstance(jti, str) or not 0 < len(jti) <= MAX_JTI:
        return _refused(request, TokenRejected("no_jti", "link tokens must carry a jti"))
    name = f"sso-link:{verified.claims['iss']}:{jti}"
    if not await request.app[SESSION_STORE].use_once(name, float(verified.claims["exp"])):
        return _refused(request, TokenRejected("replayed", "this link was used already"))
    return None


def _server_of(request: web.Request, identity: SsoIdentity) -> int:
    return identity.server_id or request.app[SETTINGS].public_session.server_id


async def session_of(request: web.Request, identity: SsoIdentity) -> SsoLogin | web.Response:
    try:
        return await request.app[SSO_SESSIONS].get(
            _server_of(request, identity), identity.username, request[SCOPE].client.address
        )
    except InvalidCredentials:
        return error_response(
            request, 403, "Your account is not known to OMERO. Please ask its administrators."
        )
    except AdminRefused:
        return error_response(request, 403, ADMIN_REFUSED)
    except HandoffFailed as exc:
        log.warning("SSO handoff failed rid=%s: %s", request[SCOPE].request_id, exc)
        return error_response(request, 502)
    except PermissionDenied as exc:
        log.error("SSO cannot create OMERO sessions: %s", exc)
        return error_response(request, 503, "Single sign-on is not available at the moment.")
    except ServerUnavailable:
        return error_response(request, 503, "The OMERO server is not responding.")
    except OmeroError as exc:
        log.warning("SSO session failed rid=%s: %s", request[SCOPE].request_id, exc)
        return error_response(request, 502)


async def as_token_user(request: web.Request, token: str) -> web.StreamResponse:
    """Serve the request as the token's user, on that user's one OMERO session."""
    identity = await identity_of(request, token)
    if isinstance(identity, web.Response):
        return identity
    login = await session_of(request, identity)
    if isinstance(login, web.Response):
        return login
    request[WHO] = Who(
        user=login.user_name,
        server_id=login.server_id,
        secrets=frozenset({token, login.session_key, *login.cookies.values()}),
        authenticated=True,
    )

    async def renew_sso() -> Mapping[str, str] | web.StreamResponse:
        request.app[SSO_SESSIONS].invalidate(login)
        renewed = await session_of(request, identity)
        return renewed if isinstance(renewed, web.StreamResponse) else renewed.cookies

    return await forward_renewing(request, login.cookies, renew_sso)


async def link_login(request: web.Request) -> web.StreamResponse:
    """`/porter/sso?token=...&url=...`: a porter session for the token's user, then a redirect
    to a URL without the token."""
    from proxy.identity.session import set_session_cookie
    from proxy.pages.login import landing

    settings = request.app[SETTINGS].sso
    token = request.query.get("token")
    if not (settings.enabled and settings.link_login) or not token:
        return error_response(request, 404)
    found = await verified_identity(request, token)
    if isinstance(found, web.Response):
        return found
    identity, verified = found
    request[WHO] = Who(user=identity.username, secrets=frozenset({token}))
    try:
        replayed = await _first_use(request, verified)
    except SessionStoreUnavailable:
        return error_response(request, 503, "The session store is unavailable. Please retry.")
    if replayed is not None:
        return replayed
    try:
        login = await request.app[SSO_SESSIONS].new_session(
            _server_of(request, identity), identity.username, request[SCOPE].client.address
        )
    except InvalidCredentials:
        return error_response(
            request, 403, "Your account is not known to OMERO. Please ask its administrators."
        )
    except AdminRefused:
        return error_response(request, 403, ADMIN_REFUSED)
    except OmeroError as exc:
        log.warning("SSO link login failed rid=%s: %s", request[SCOPE].request_id, exc)
        return error_response(request, 503, "Single sign-on is not available at the moment.")
    from proxy.pages.login import LoginFailed, start_session

    try:
        record = await start_session(request, login, kind="sso")
    except LoginFailed as failed:
        return error_response(request, failed.status, failed.message)
    response = redirect(landing(request, request.query.get("url")))
    response.headers["Referrer-Policy"] = "no-referrer"  # the token was in this URL
    set_session_cookie(request, response, record.id)
    return response


async def porter_token(request: web.Request) -> web.StreamResponse:
    """POST `/porter/token`: a short-lived JWT signed by porter, for scripts.

    With `username` and `password` (form or JSON), checked against OMERO; or for the
    porter session of the caller (then `X-Requested-With: XMLHttpRequest` is required, which
    no cross-site form can send).
    """
    from proxy.identity.session import identify
    from proxy.pages.login import FormTooLarge, LoginFailed, authenticate, read_form

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
        try:
            identity = await identify(request)
        except SessionStoreUnavailable:
            return error_response(request, 503, "The session store is unavailable.")
        if identity.record is None:
            return error_response(request, 401, "Log in first, or send username and password.")
        name, server_id = identity.record.user_name, identity.record.server_id
    token = issuer.issue(name, server_id)
    lifetime = request.app[SETTINGS].sso.porter_tokens.lifetime
    return web.json_response(
        {"access_token": token, "token_type": "Bearer", "expires_in": lifetime},
        headers=_NO_STORE,
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
