"""Verify a bearer JWT against the trusted issuers: size, algorithm, key, signature, claims.

The unverified `iss` only picks the issuer's settings and keys; the token is then verified in
full (signature, `exp` required, `nbf`/`iat` with leeway, `iss`, `aud`, `sub` required) with
that issuer's settings. Every failure raises `TokenRejected` with a short stable reason code:

    SsoError (reason, status)
     ├── TokenRejected        the token cannot be trusted (status 401; 503 for jwks_unavailable)
     └── IdentityRefused      a trusted token that maps to no usable OMERO user (sso_identity)

Messages never contain the token, its signature or key material: they are safe to log.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp
import jwt

from auth.jwks import (
    ALGORITHMS,
    JwksCache,
    JwksUnavailable,
    KeySource,
    StaticKeys,
    VerifyKey,
    load_jwks_file,
    load_pem_public_key_file,
)
from auth.sso_settings import IssuerSettings, SsoSettings
from porter_errors import Refused

__all__ = [
    "REASONS",
    "JwtVerifier",
    "SsoError",
    "TokenRejected",
    "TrustedIssuer",
    "VerifiedToken",
    "trusted_issuer_from_settings",
]

REASONS = frozenset(
    {
        "too_large",  # longer than max_token_size (not decoded at all)
        "malformed",  # not a compact JWS with JSON header and payload, bad claim types
        "alg_not_allowed",  # none, unknown, or not in the issuer's algorithms
        "wrong_issuer",  # no iss, or an iss no [[sso.issuers]] names
        "unknown_kid",  # no key of the issuer fits the kid and alg, even after a refetch
        "jwks_unavailable",  # the issuer's JWKS URL cannot be fetched (status 503)
        "bad_signature",  # no fitting key verifies the signature (tampered or forged)
        "expired",  # exp is past (beyond the leeway)
        "not_yet_valid",  # nbf or iat is in the future (beyond the leeway)
        "wrong_audience",  # aud names none of the issuer's audiences
        "missing_claim",  # exp, iss, aud or sub is absent
        "no_jti",  # a link-login token without a jti (links must work once)
        "replayed",  # a link-login token whose jti was used already
    }
)


class SsoError(Refused):
    """Base of SSO failures: `reason` is a stable code, `status` the HTTP status to answer."""

    def __init__(self, reason: str, message: str, *, status: int) -> None:
        super().__init__(status, message)
        self.reason = reason

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.reason!r}, {self.message!r})"


class TokenRejected(SsoError):
    """The token is not trusted: `reason` is one of REASONS; status 401 (503 when the
    issuer's keys cannot be fetched)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(reason, message, status=503 if reason == "jwks_unavailable" else 401)


REQUIRED = ("exp", "iss", "aud", "sub")


@dataclass(frozen=True)
class TrustedIssuer:
    """An issuer's settings and where its keys come from (tried in order)."""

    settings: IssuerSettings
    sources: tuple[KeySource, ...]


@dataclass(frozen=True)
class VerifiedToken:
    """A token whose signature and claims were verified; `claims` is its payload."""

    issuer: IssuerSettings
    claims: Mapping[str, Any]
    alg: str
    kid: str | None


def trusted_issuer_from_settings(
    settings: IssuerSettings,
    sso: SsoSettings,
    *,
    session: aiohttp.ClientSession | None = None,
) -> TrustedIssuer:
    """Load an `[[sso.issuers]]` entry's keys (KeyLoadError names a bad file)."""
    static: list[VerifyKey] = []
    if settings.hmac_secret:
        static.append(VerifyKey("oct", settings.hmac_secret.encode()))
    static += [load_pem_public_key_file(path) for path in settings.public_key_files]
    if settings.jwks_file:
        static += load_jwks_file(settings.jwks_file)
    sources: list[KeySource] = [StaticKeys(static)] if static else []
    if settings.jwks_url:
        cache = JwksCache(
            settings.jwks_url,
            session=session,
            timeout=sso.jwks_timeout,
            max_size=sso.jwks_max_size,
            min_refresh_interval=sso.jwks_refresh_interval,
            max_age=sso.jwks_max_age,
        )
        sources.append(cache)
    return TrustedIssuer(settings, tuple(sources))


class JwtVerifier:
    """Verifies tokens of several trusted issuers; one instance per app."""

    def __init__(self, issuers: Sequence[TrustedIssuer], *, max_token_size: int = 8192) -> None:
        self._issuers = {i.settings.issuer: i for i in issuers}
        self._max_size = max_token_size

    @classmethod
    def from_settings(
        cls,
        sso: SsoSettings,
        *,
        extra: Sequence[TrustedIssuer] = (),
        session: aiohttp.ClientSession | None = None,
    ) -> JwtVerifier:
        """The configured issuers (when `sso.enabled`) plus `extra` (e.g. porter's own)."""
        configured = sso.issuers if sso.enabled else ()
        issuers = [trusted_issuer_from_settings(i, sso, session=session) for i in configured]
        return cls([*issuers, *extra], max_token_size=sso.max_token_size)

    async def aclose(self) -> None:
        """Close the JWKS caches (their HTTP sessions and running fetches)."""
        for issuer in self._issuers.values():
            for source in issuer.sources:
                await source.aclose()

    async def verify(self, token: str, *, require: Sequence[str] = REQUIRED) -> VerifiedToken:
        """The verified token, or TokenRejected saying why not. `require`: the claims that
        must be present (a back-channel logout token may have no sub, but must have iat)."""
        if len(token) > self._max_size:  # before any decoding: a str is at least len bytes
            raise TokenRejected("too_large", f"token longer than {self._max_size} bytes")
        if not token.isascii():
            raise TokenRejected("malformed", "token has non-ASCII characters")
        header, unverified = _peek(token)
        alg, kid = header.get("alg"), header.get("kid")
        if not isinstance(alg, str) or (kid is not None and not isinstance(kid, str)):
            raise TokenRejected("malformed", "token header has no alg, or a non-string kid")
        if alg not in ALGORITHMS:  # "none" (any case) and unknown names
            raise TokenRejected("alg_not_allowed", "token algorithm is not accepted")
        iss = unverified.get("iss")
        trusted = self._issuers.get(iss) if isinstance(iss, str) else None
        if trusted is None:
            raise TokenRejected("wrong_issuer", "token issuer is not trusted")
        if alg not in trusted.settings.algorithms:
            raise TokenRejected("alg_not_allowed", f"{alg} is not accepted from this issuer")
        keys = await _candidates(trusted, kid, alg)
        if not keys:
            raise TokenRejected("unknown_kid", "no key of the issuer fits the token's kid")
        for key in keys:
            claims = _decode(token, key, alg, trusted.settings, require)
            if claims is not None:
                return VerifiedToken(trusted.settings, claims, alg, kid)
        raise TokenRejected("bad_signature", "token signature does not verify")


def _peek(token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The unverified header and payload; only used to pick the issuer and key."""
    try:
        header = jwt.get_unverified_header(token)
        payload = jwt.decode(token, options={"verify_signature": False})
    except jwt.PyJWTError:
        raise TokenRejected("malformed", "token is not a well-formed JWT") from None
    return header, payload


async def _candidates(trusted: TrustedIssuer, kid: str | None, alg: str) -> list[VerifyKey]:
    for source in trusted.sources:
        try:
            found = await source.candidates(kid, alg)
        except JwksUnavailable as exc:
            raise TokenRejected("jwks_unavailable", str(exc)) from exc
        if found:
            return found
    return []


# RFC 7519 NumericDate claims: JSON numbers only (PyJWT would take "123" as well).
_TIME_CLAIMS = ("exp", "nbf", "iat")


def _decode(
    token: str, key: VerifyKey, alg: str, issuer: IssuerSettings, require: Sequence[str]
) -> dict[str, Any] | None:
    """The verified claims; None when this key's signature check fails."""
    try:
        claims = jwt.decode(
            token,
            key.key,
            algorithms=[alg],  # the one algorithm this key's family fits
            audience=list(issuer.audience),
            issuer=issuer.issuer,
            leeway=issuer.leeway,
            options={"require": list(require)},
        )
    except jwt.InvalidSignatureError:
        return None
    except jwt.PyJWTError as exc:
        raise _translate(exc) from exc
    for name in _TIME_CLAIMS:
        value = claims.get(name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
            raise TokenRejected("malformed", f"token claim {name!r} is not a number")
    return claims


def _translate(exc: jwt.PyJWTError) -> TokenRejected:
    if isinstance(exc, jwt.ExpiredSignatureError):
        return TokenRejected("expired", "token has expired")
    if isinstance(exc, jwt.ImmatureSignatureError):
        return TokenRejected("not_yet_valid", "token is not valid yet (nbf or iat)")
    if isinstance(exc, jwt.InvalidAudienceError):
        return TokenRejected("wrong_audience", "token audience is not accepted")
    if isinstance(exc, jwt.InvalidIssuerError):
        return TokenRejected("wrong_issuer", "token issuer is not trusted")
    if isinstance(exc, jwt.MissingRequiredClaimError):
        return TokenRejected("missing_claim", f"token has no {exc.claim!r} claim")
    if isinstance(exc, jwt.InvalidAlgorithmError):
        return TokenRejected("alg_not_allowed", "token algorithm is not accepted")
    return TokenRejected("malformed", f"token claims are malformed ({type(exc).__name__})")
