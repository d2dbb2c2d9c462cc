"""OpenID Connect login, RP-initiated logout and back-channel logout.

    GET  /porter/oidc/{provider}/login?url=   seal state, nonce and PKCE verifier into the
                                               pre-login cookie; off to the provider
    GET  /porter/oidc/{provider}/callback?code=&state=
                                               check, exchange, verify, map, one OMERO session,
                                               a fresh porter session; on to the target
    GET  /porter/oidc/callback                 the same, for the one provider configured with
                                               shared_callback (the URL before 2026-12)
    POST /porter/oidc/backchannel             a provider's logout_token ends every porter
                                               session of that sid (or sub)

The porter session of an OpenID login has kind "oidc:<provider id>" and is indexed in the
session store under (issuer, sid) and (issuer, sub), so a back-channel logout reaches it from
any porter process sharing the store. Each provider has its own callback URL, and a login
comes back only to the one its sealed state names: a provider cannot send another provider's
code to porter as its own (the mix-up attack; RFC 9700 4.4). No code, token, state or secret
is ever logged,
forwarded or put in a URL the browser keeps: the callback URL is answered by a redirect at
once, with no Referer leaving it.
"""

from __future__ import annotations

import contextlib
import hmac
import logging
import time
from collections.abc import Mapping

import jwt
from aiohttp import web

import metrics
from auth.jwt_verify import SsoError, VerifiedToken
from auth.oidc import (
    LOGOUT_TOKEN_MAX_AGE,
    PRELOGIN_COOKIE,
    RELOGIN_COOKIE,
    OidcError,
    OidcProvider,
    PreLogin,
)
from auth.omero_backend import OmeroLogin
from auth.omero_errors import OmeroError
from auth.session_store import SessionStoreUnavailable
from auth.sessions import SessionRecord
from auth.sso_identity import IdentityRefused, SsoIdentity
from auth.stores import Stores
from porter_errors import Refused
from proxy.answers import NO_STORE, error_response, posted_form, redirect
from proxy.identity.session import identify
from proxy.identity.tokens import sso_meanings
from proxy.keys import (
    OIDC_PROVIDERS,
    OMERO,
    PRELOGIN,
    PRINCIPAL,
    SCOPE,
    SESSION_STORE,
    SETTINGS,
    SSO_MAPPER,
    SSO_SESSIONS,
    STORES,
)
from proxy.pages.login import LoginFailed, end_session, landing, render_login, start_session
from proxy.pages.oidc_links import (
    KIND_PREFIX,
    RELOGIN,
    SHARED_CALLBACK,
    callback_path,
    callback_url,
    relogin_url,
)
from proxy.pages.oidc_refusals import LOGIN_EXPIRED, STORE_DOWN, code_of, login_location
from proxy.principal import Principal
from proxy.session_cookie import set_session_cookie

log = logging.getLogger("porter.oidc")

MAX_LOGOUT_FORM = 16 * 1024
NO_REFERRER = {"Referrer-Policy": "no-referrer"}

PROVIDER_REFUSED = "The identity provider did not sign you in."


def _prefix(request: web.Request) -> str:
    return request.app[SETTINGS].proxy.prefix


def _link_names(issuer: str, claims: Mapping[str, object]) -> list[str]:
    names = []
    if isinstance(claims.get("sid"), str) and claims["sid"]:
        names.append(f"oidc-sid\x00{issuer}\x00{claims['sid']}")
    if isinstance(claims.get("sub"), str) and claims["sub"]:
        names.append(f"oidc-sub\x00{issuer}\x00{claims['sub']}")
    return names


# -- login ----------------------------------------------------------------------------------


FORWARDED_PARAMS = ("login_hint", "ui_locales")  # from porter's login URL to the provider
MAX_FORWARDED = 256


def _asked(request: web.Request) -> dict[str, str]:
    """What porter's login URL asks the provider for: login_hint and ui_locales when given
    (printable, short; anything else is dropped, not refused)."""
    asked = {}
    for name in FORWARDED_PARAMS:
        value = request.query.get(name, "")
        if value and len(value) <= MAX_FORWARDED and value.isprintable():
            asked[name] = value
    return asked


async def start(request: web.Request) -> web.StreamResponse:
    """Seal a new login's state into the pre-login cookie and send the browser on."""
    return await _start(request, request.query.get("url"), _asked(request))


async def _start(
    request: web.Request, url: str | None, asked: dict[str, str]
) -> web.StreamResponse:
    provider = request.app[OIDC_PROVIDERS].get(request.match_info["provider"])
    if provider is None:
        return error_response(request, 404)
    target = landing(request, url)
    try:
        found = await provider.discovery()
    except OidcError as exc:
        return _refused_here(request, exc, target)
    settings = request.app[SETTINGS].oidc
    pre = PreLogin.start(provider.id, target, settings.login_lifetime)
    response = redirect(
        provider.authorization_url(found, callback_url(request, provider.id), pre, asked), 302
    )
    response.set_cookie(
        PRELOGIN_COOKIE,
        request.app[PRELOGIN].seal(pre),
        path=_prefix(request) + callback_path(request, provider.id),
        max_age=settings.login_lifetime,
        httponly=True,
        secure=request[SCOPE].client.scheme == "https",
        samesite="Lax",  # sent on the provider's top-level redirect back, not on cross-site POSTs
    )
    return response


async def switch(request: web.Request) -> web.StreamResponse:
    """ "Log in as someone else" after a refusal: out of the provider's session (its
    end_session_endpoint), back to `relogin`, which asks the provider for a fresh login
    (prompt=login). A browser still logged in to porter confirms its logout first."""
    provider = request.app[OIDC_PROVIDERS].get(request.match_info["provider"])
    if provider is None:
        return error_response(request, 404)
    if (await identify(request)).record is not None:  # a link alone logs nobody out
        return redirect(_prefix(request) + "/porter/logout", 303)
    target = landing(request, request.query.get("url"))
    try:
        found = await provider.discovery()
    except OidcError as exc:
        return _refused_here(request, exc, target)
    location = provider.end_session_url(found, relogin_url(request, provider.id))
    if location is None:  # no logout there: prompt=login alone asks who the user is
        return await _start(request, target, {"prompt": "login"})
    response = redirect(location, 302)
    # where to land afterwards: a cookie, so no URL at the provider carries it
    response.set_cookie(
        RELOGIN_COOKIE,
        target,
        path=_prefix(request) + RELOGIN.format(provider=provider.id),
        max_age=request.app[SETTINGS].oidc.login_lifetime,
        httponly=True,
        secure=request[SCOPE].client.scheme == "https",
        samesite="Lax",
    )
    return response


async def relogin(request: web.Request) -> web.StreamResponse:
    """Back from the provider's logout of an account switch: a login that must ask."""
    response = await _start(request, request.cookies.get(RELOGIN_COOKIE), {"prompt": "login"})
    if RELOGIN_COOKIE in request.cookies:
        response.del_cookie(
            RELOGIN_COOKIE,
            path=request.path,
            httponly=True,
            secure=request[SCOPE].client.scheme == "https",
            samesite="Lax",
        )
    return response


async def callback(request: web.Request) -> web.StreamResponse:
    """The provider's redirect back: a porter session, or the login page with why not."""
    named = request.match_info.get("provider") or request.app[SETTINGS].oidc.shared_callback
    sealed = request.cookies.get(PRELOGIN_COOKIE, "")
    query = request.query
    # whatever happens next (a log line, an error mail), these are never shown
    carried = {query.get("code", ""), query.get("state", ""), sealed} - {""}
    request[PRINCIPAL] = Principal("token", "unknown", secrets=frozenset(carried))
    pre = request.app[PRELOGIN].open(sealed)
    target = pre.target if pre is not None else None
    try:
        if pre is None:
            raise OidcError("login_expired", LOGIN_EXPIRED, status=400)
        provider, code = await _callback_checked(request, pre, named)
        record = await _log_in(request, provider, pre, code)
    except SsoError as exc:
        return _refused(request, code_of(exc.reason), exc.status, target, pre, named)
    except LoginFailed as failed:
        return _refused(request, failed.code, failed.status, target, pre, named)
    except OmeroError as exc:  # OMERO went away between the session and its handoff
        log.warning("OIDC login: OMERO failed (%s) rid=%s", type(exc).__name__, _rid(request))
        return _refused(request, "omero_unavailable", 503, target, pre, named)
    response = redirect(pre.target, 303)
    response.headers.update(NO_REFERRER)
    set_session_cookie(request, response, record.id)
    _clear_prelogin(request, response, named)
    return response


async def _callback_checked(
    request: web.Request, pre: PreLogin, named: str | None
) -> tuple[OidcProvider, str]:
    """The provider and the code of a callback that answers the login `pre` began, once
    (state, callback URL, RFC 9207 issuer, a code at all); OidcError says what is wrong."""
    query = request.query
    if not _same(query.get("state", ""), pre.state):
        log.warning("OIDC callback with a wrong or missing state rid=%s", _rid(request))
        raise OidcError("bad_state", LOGIN_EXPIRED, status=400)
    provider = request.app[OIDC_PROVIDERS].get(pre.provider)
    if provider is None:  # the configuration changed meanwhile
        raise OidcError("login_expired", LOGIN_EXPIRED, status=400)
    if pre.provider != named:  # another provider's callback URL: a mix-up
        log.warning(
            "OIDC callback of %s for a login at %s rid=%s", named, provider.id, _rid(request)
        )
        raise OidcError("bad_state", LOGIN_EXPIRED, status=400)
    if not await _first_use(request, pre):  # not spent by a callback refused above
        log.warning("OIDC callback replayed rid=%s", _rid(request))
        raise OidcError("replayed", LOGIN_EXPIRED, status=400)
    if "error" in query:
        log.info("OIDC provider %s answered %.40r", provider.id, query.get("error"))
        raise OidcError("provider_denied", PROVIDER_REFUSED, status=403)
    iss = query.get("iss")
    if iss is None and (await provider.discovery()).iss_parameter:
        raise OidcError("bad_state", LOGIN_EXPIRED, status=400)  # RFC 9207: it must say
    if iss is not None and iss != provider.settings.issuer:  # RFC 9207 mix-up
        raise OidcError("bad_state", LOGIN_EXPIRED, status=400)
    code = query.get("code", "")
    if not code or len(code) > 4096:
        raise OidcError("bad_state", LOGIN_EXPIRED, status=400)
    return provider, code


async def _first_use(request: web.Request, pre: PreLogin) -> bool:
    """The sealed login comes back once: a second callback with the same cookie (where the
    provider would redeem a code twice) makes no second session. Remembered in the session
    store, by every porter process sharing it, until the seal expires."""
    try:
        return await request.app[STORES].replays.use_once(f"oidc-login\x00{pre.nonce}", pre.expires)
    except SessionStoreUnavailable:
        raise LoginFailed(503, STORE_DOWN, code="store_unavailable") from None


async def _log_in(
    request: web.Request, provider: OidcProvider, pre: PreLogin, code: str
) -> SessionRecord:
    app = request.app
    found = await provider.discovery()
    tokens = await provider.exchange(found, code, pre.verifier, callback_url(request, provider.id))
    secrets = request[PRINCIPAL].secrets | {tokens.id_token, tokens.access_token or ""} - {""}
    request[PRINCIPAL] = Principal("token", "unknown", secrets=secrets)
    verified = await provider.verify_id_token(tokens.id_token, pre.nonce)
    if provider.settings.userinfo:
        verified = await provider.userinfo(found, verified, tokens.access_token)
    identity = app[SSO_MAPPER].map(verified)
    request[PRINCIPAL] = Principal("token", identity.username, secrets=secrets)
    server = provider.settings.server_id or app[SETTINGS].public_session.server_id
    login = await _omero_session(request, server, identity)
    record = await start_session(request, login, kind=KIND_PREFIX + provider.id)
    try:
        await _index(app[STORES], record, verified)
    except SessionStoreUnavailable:
        # unindexed, a back-channel logout could not find it: no session rather than that
        with contextlib.suppress(SessionStoreUnavailable):
            await app[SESSION_STORE].delete(record.id)
        with contextlib.suppress(OmeroError):
            await app[OMERO].close(record.server_id, record.omero_session_key)
        raise LoginFailed(503, STORE_DOWN, code="store_unavailable") from None
    metrics.LOGINS.labels("success").inc()
    log.info(
        "OIDC login user=%s provider=%s group=%s rid=%s",
        identity.username,
        provider.id,
        login.group_name or "-",
        _rid(request),
    )
    return record


async def _omero_session(request: web.Request, server: int, identity: SsoIdentity) -> OmeroLogin:
    """A new OMERO session of the user, in the first mapped group they are a member of (a
    provider's user is often in several groups; each mapped one is tried in `group_map`
    order). Refused when none fits: not_in_group for one mapped group, no_group for more."""
    refused: SsoError | None = None
    for group in identity.groups or (None,):
        try:
            with sso_meanings():
                return await request.app[SSO_SESSIONS].new_session(
                    server, identity.username, request[SCOPE].client.address, group
                )
        except SsoError as exc:
            if exc.reason != "not_in_group":
                raise
            refused = exc
    assert refused is not None  # the loop ran at least once
    if len(identity.groups) > 1:
        raise IdentityRefused("no_group", "the user is a member of none of the mapped groups")
    raise refused


async def _index(stores: Stores, record: SessionRecord, verified: VerifiedToken) -> None:
    until = record.created + stores.sessions.timeouts.absolute
    for name in _link_names(verified.issuer.issuer, verified.claims):
        await stores.logouts.link(name, record.id, until)


def _refused_here(request: web.Request, exc: SsoError, target: str | None) -> web.StreamResponse:
    """A login that cannot start (the provider is down): the login page, at once."""
    log.info("OIDC login refused (%s) rid=%s", exc.reason, _rid(request))
    return render_login(request, status=exc.status, error=exc.message, url=target)


def _refused(
    request: web.Request,
    code: str,
    status: int,
    target: str | None,
    pre: PreLogin | None,
    named: str | None,
) -> web.StreamResponse:
    """Every refusal at the callback: a 303 to porter's login page, which says why from the
    code alone; the provider's code and state stay behind in the redirect."""
    if status not in (502, 503):
        metrics.LOGINS.labels("failure").inc()
    log.info("OIDC login refused (%s) rid=%s", code, _rid(request))
    provider = pre.provider if pre is not None else named or ""
    response = redirect(
        login_location(_prefix(request), code, provider, landing(request, target)), 303
    )
    response.headers.update(NO_REFERRER)
    _clear_prelogin(request, response, named)
    return response


def _clear_prelogin(
    request: web.Request, response: web.StreamResponse, provider: str | None
) -> None:
    """The pre-login cookie of `provider`'s callback URL, which this request was sent to."""
    if PRELOGIN_COOKIE in request.cookies and provider is not None:
        response.del_cookie(
            PRELOGIN_COOKIE,
            path=_prefix(request) + callback_path(request, provider),
            httponly=True,
            secure=request[SCOPE].client.scheme == "https",
            samesite="Lax",
        )


def _same(a: str, b: str) -> bool:
    return bool(a) and hmac.compare_digest(a.encode(), b.encode())


def _rid(request: web.Request) -> str:
    return request[SCOPE].request_id


# -- logout ---------------------------------------------------------------------------------


async def backchannel(request: web.Request) -> web.StreamResponse:
    """OpenID Connect Back-Channel Logout 1.0: end every session of the token's sid (or,
    without a sid, of its sub), in every porter process sharing the store."""
    token = await _logout_token(request)
    if isinstance(token, web.Response):
        return token
    request[PRINCIPAL] = Principal("token", "unknown", secrets=frozenset({token}))
    provider = _logout_provider(request, token)
    if provider is None:
        return _logout_error(400, "invalid logout token")
    try:
        await provider.discovery()
        verified = await provider.verify_logout_token(token)
    except OidcError as exc:
        return _logout_error(exc.status, exc.message)
    claims = verified.claims
    until = time.time() + 2 * (LOGOUT_TOKEN_MAX_AGE + provider.settings.leeway)
    if not await request.app[STORES].replays.use_once(
        f"oidc-jti\x00{provider.settings.issuer}\x00{claims['jti']}", until
    ):
        log.warning("back-channel logout token replayed (provider %s)", provider.id)
        return _logout_error(400, "logout token already used")
    names = _link_names(provider.settings.issuer, claims)
    ended = 0
    for session_id in await request.app[STORES].logouts.linked(names[0]):
        ended += await end_session(request, session_id)
    log.info(
        "OIDC back-channel logout provider=%s by=%s sessions=%d rid=%s",
        provider.id,
        "sid" if names[0].startswith("oidc-sid") else "sub",
        ended,
        _rid(request),
    )
    return web.Response(status=200, headers=NO_STORE)


async def _logout_token(request: web.Request) -> str | web.Response:
    """The logout_token of the posted form, or the answer refusing the form."""
    if (request.content_length or 0) > MAX_LOGOUT_FORM:
        return _logout_error(413, "request too large")
    try:
        form = await posted_form(request)
    except Refused:
        return _logout_error(400, "the form could not be read")
    token = form.get("logout_token")
    if not isinstance(token, str) or not token:
        return _logout_error(400, "logout_token is required")
    if len(token) > request.app[SETTINGS].sso.max_token_size:  # before it is even peeked at
        return _logout_error(400, "invalid logout token")
    return token


def _logout_provider(request: web.Request, token: str) -> OidcProvider | None:
    """The provider the (not yet verified) token names as issuer, with porter's client among
    its audiences; None when none is configured so."""
    try:
        unverified = jwt.decode(token, options={"verify_signature": False})
    except jwt.PyJWTError:
        return None
    iss, aud = unverified.get("iss"), unverified.get("aud")
    audiences = aud if isinstance(aud, list) else [aud]
    for provider in request.app[OIDC_PROVIDERS].values():
        if provider.settings.issuer == iss and provider.settings.client_id in audiences:
            return provider
    log.warning("back-channel logout token of an unknown issuer or audience")
    return None


def _logout_error(status: int, message: str) -> web.Response:
    return web.json_response(
        {"error": "invalid_request", "error_description": message}, status=status, headers=NO_STORE
    )


def add_routes(app: web.Application, prefix: str) -> None:
    if not app[SETTINGS].oidc.enabled:
        return
    if app[SETTINGS].oidc.shared_callback:
        app.router.add_get(prefix + SHARED_CALLBACK, callback)
    app.router.add_get(prefix + "/porter/oidc/{provider}/callback", callback)
    app.router.add_post(prefix + "/porter/oidc/backchannel", backchannel)
    app.router.add_get(prefix + "/porter/oidc/{provider}/login", start)
    app.router.add_get(prefix + "/porter/oidc/{provider}/switch", switch)
    app.router.add_get(prefix + RELOGIN, relogin)
