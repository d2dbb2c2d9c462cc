"""SSO: a JWT from the site's identity provider (or porter's own) makes a request its user's.

Two authenticators read a token: `bearer` (``Authorization: Bearer``) and `sso_cookie` (the
cookie a front SSO layer sets). The token is verified (a bounded cache remembers identities
of tokens verified lately), mapped to an OMERO user, and served on that user's one OMERO
session (auth/sso_sessions.py). The token is never forwarded, logged or mailed.

Failures are raised as `SsoError` with their status (401 bad token, 403 refused identity,
503 SSO unavailable); OMERO's errors that mean something for SSO are translated here.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from contextlib import contextmanager

from aiohttp import hdrs, web

from auth.jwt_verify import SsoError, TokenRejected, VerifiedToken
from auth.omero_errors import AdminRefused, GroupRefused, InvalidCredentials, PermissionDenied
from auth.sso_identity import SsoIdentity
from auth.sso_sessions import SsoLogin
from proxy.keys import (
    JWT_VERIFIER,
    SCOPE,
    SETTINGS,
    SSO_MAPPER,
    SSO_SESSIONS,
    VERIFIED_TOKENS,
)
from proxy.principal import Principal

log = logging.getLogger("porter.sso")

ADMIN_REFUSED = "OMERO administrators cannot sign in this way. Please use the login form."
UNKNOWN_USER = "Your account is not known to OMERO. Please ask its administrators."
NOT_IN_GROUP = (
    "You are not a member of the OMERO group your account names. Please ask its administrators."
)
SSO_UNAVAILABLE = "Single sign-on is not available at the moment."


async def bearer(request: web.Request) -> Principal | None:
    """The user of `Authorization: Bearer <token>`."""
    scheme, _, token = request.headers.get(hdrs.AUTHORIZATION, "").partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        return None
    return await token_principal(request, token)


async def sso_cookie(request: web.Request) -> Principal | None:
    """The user of the token in the cookie a front SSO layer sets."""
    token = request.cookies.get(request.app[SETTINGS].sso.token_cookie or "")
    return await token_principal(request, token) if token else None


async def token_principal(request: web.Request, token: str) -> Principal:
    """The token's user, on that user's one OMERO session."""
    identity = await identity_of(request, token)
    login = await session_of(request, identity)

    async def renew() -> Mapping[str, str]:
        await request.app[SSO_SESSIONS].invalidate(login)
        return (await session_of(request, identity)).cookies

    return Principal(
        "token",
        login.user_name,
        login.server_id,
        login.cookies,
        frozenset({token, login.session_key, *login.cookies.values()}),
        renew,
    )


async def verified_identity(request: web.Request, token: str) -> tuple[SsoIdentity, VerifiedToken]:
    """Verify `token` now (no cache) and map it to its OMERO identity; raises SsoError."""
    if not token.isascii():  # before anything hashes or decodes it (a header may hold any byte)
        raise TokenRejected("malformed", "token has non-ASCII characters")
    verified = await request.app[JWT_VERIFIER].verify(token)
    return request.app[SSO_MAPPER].map(verified), verified


async def identity_of(request: web.Request, token: str) -> SsoIdentity:
    """The OMERO identity a token stands for (cached until it expires); raises SsoError."""
    cache = request.app[VERIFIED_TOKENS]
    known = cache.get(token)
    if known is not None:
        return known
    identity, verified = await verified_identity(request, token)
    cache.put(token, identity, float(verified.claims["exp"]))
    return identity


def server_of(request: web.Request, identity: SsoIdentity) -> int:
    return identity.server_id or request.app[SETTINGS].public_session.server_id


@contextmanager
def sso_meanings() -> Iterator[None]:
    """OMERO's answers that mean something for SSO, as SsoErrors (the rest pass through)."""
    try:
        yield
    except InvalidCredentials:
        raise SsoError("unknown_user", UNKNOWN_USER, status=403) from None
    except AdminRefused:
        raise SsoError("admin_account", ADMIN_REFUSED, status=403) from None
    except GroupRefused:
        raise SsoError("not_in_group", NOT_IN_GROUP, status=403) from None
    except PermissionDenied as exc:
        log.error("SSO cannot create OMERO sessions: %s", exc)
        raise SsoError("sso_unavailable", SSO_UNAVAILABLE, status=503) from None


async def session_of(request: web.Request, identity: SsoIdentity) -> SsoLogin:
    """The one OMERO session of that user (made when needed)."""
    with sso_meanings():
        return await request.app[SSO_SESSIONS].get(
            server_of(request, identity),
            identity.username,
            request[SCOPE].client.address,
            identity.group,
        )
