"""Short-lived JWTs porter signs with its own key for scripts, and the JWKS that verifies them.

Porter's tokens carry `sub` (the OMERO username), `omero_server` (the server_list id) and,
when given, `omero_group`. `trusted_issuer()` lets the same `JwtVerifier` accept them.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from typing import Any

import jwt
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

from auth.jwks import KeyLoadError, StaticKeys, VerifyKey, jwk_thumbprint, load_pem_private_key_file
from auth.jwt_verify import TrustedIssuer
from auth.sso_settings import IssuerSettings, PorterTokenSettings

__all__ = ["SERVER_CLAIM", "PorterTokenIssuer"]

SERVER_CLAIM = "omero_server"
GROUP_CLAIM = "omero_group"

_TO_JWK: dict[str, Callable[..., Any]] = {
    "RSA": RSAAlgorithm.to_jwk,
    "EC": ECAlgorithm.to_jwk,
    "OKP": OKPAlgorithm.to_jwk,
}


class PorterTokenIssuer:
    """Signs porter's tokens; built once from `[sso.porter_tokens]` (KeyLoadError if unusable)."""

    def __init__(
        self, settings: PorterTokenSettings, *, clock: Callable[[], float] = time.time
    ) -> None:
        if not settings.signing_key_file:
            raise KeyLoadError("sso.porter_tokens.signing_key_file is not set")
        signing = load_pem_private_key_file(settings.signing_key_file)
        if not signing.fits(settings.algorithm):
            raise KeyLoadError(
                f"{settings.signing_key_file}: {settings.algorithm} does not fit this key"
            )
        self._settings = settings
        self._clock = clock
        self._private = signing.key
        self._public = signing.key.public_key()
        self._family = signing.family
        public_jwk: dict[str, Any] = _TO_JWK[signing.family](self._public, as_dict=True)
        self.key_id: str = settings.key_id or jwk_thumbprint(public_jwk)
        self._jwk = {**public_jwk, "kid": self.key_id, "alg": settings.algorithm, "use": "sig"}

    def issue(
        self,
        username: str,
        server_id: int,
        *,
        group: str | None = None,
        lifetime: int | None = None,
    ) -> str:
        """A signed token for `username` on server `server_id`, valid for `lifetime` seconds
        (at most, and by default, the configured lifetime)."""
        if not username or not username.isprintable():
            raise ValueError("username must be a non-empty printable string")
        if isinstance(server_id, bool) or server_id < 1:
            raise ValueError("server_id must be a server_list id (1 or more)")
        ttl = (
            self._settings.lifetime if lifetime is None else min(lifetime, self._settings.lifetime)
        )
        if ttl < 1:
            raise ValueError("lifetime must be at least 1 second")
        now = int(self._clock())
        claims: dict[str, Any] = {
            "iss": self._settings.issuer,
            "aud": self._settings.audience,
            "sub": username,
            "iat": now,
            "nbf": now,
            "exp": now + ttl,
            "jti": secrets.token_urlsafe(16),
            SERVER_CLAIM: server_id,
        }
        if group is not None:
            claims[GROUP_CLAIM] = group
        headers = {"kid": self.key_id, "typ": "JWT"}
        return jwt.encode(claims, self._private, self._settings.algorithm, headers=headers)

    def jwks(self) -> dict[str, Any]:
        """The public JWKS (`/porter/jwks.json`): public members only, never the private key."""
        return {"keys": [dict(self._jwk)]}

    def trusted_issuer(self, *, leeway: int = 30) -> TrustedIssuer:
        """Porter's own tokens as an issuer for `JwtVerifier` (`extra=`)."""
        settings = IssuerSettings(
            issuer=self._settings.issuer,
            audience=(self._settings.audience,),
            algorithms=(self._settings.algorithm,),
            leeway=leeway,
            username_template="{sub}",
            group_claim=GROUP_CLAIM,
            group_as_is=True,
            server_claim=SERVER_CLAIM,
        )
        key = VerifyKey(self._family, self._public, self.key_id, self._settings.algorithm)
        return TrustedIssuer(settings, (StaticKeys([key]),))
