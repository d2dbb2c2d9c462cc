"""The `[oidc]` section: OpenID Connect providers users log in with ("Log in with ...").

Each `[[oidc.providers]]` table is one provider and porter's client there. Its endpoints and
keys come from the issuer's discovery document; the claims map to OMERO users with the same
templates, group map and `[sso]` allow/deny lists as bearer tokens do.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, fields

from auth.jwks import ASYMMETRIC_ALGORITHMS, KeyLoadError, family_of, load_pem_private_key_file
from auth.sso_settings import ClaimMapping, IssuerSettings, check_jwks_url

_PROVIDER_ID = re.compile(r"[a-z0-9][a-z0-9_-]{0,31}\Z")


def _check_provider_id(value: str) -> None:
    if not _PROVIDER_ID.match(value):
        raise ValueError("must be 1-32 lower-case letters, digits, - or _ (it appears in URLs)")


def _check_algorithms(value: tuple[str, ...]) -> None:
    if not value:
        raise ValueError('list at least one algorithm, e.g. ["RS256"]')
    for alg in value:
        if alg not in ASYMMETRIC_ALGORITHMS:
            raise ValueError(
                f"{alg!r}: ID tokens are verified with the provider's public keys "
                f"({', '.join(ASYMMETRIC_ALGORITHMS)}); never none or an HMAC"
            )


# what porter itself puts in every authorization request: never from the configuration
RESERVED_PARAMS = frozenset(
    {
        "response_type",
        "client_id",
        "redirect_uri",
        "scope",
        "state",
        "nonce",
        "code_challenge",
        "code_challenge_method",
        "response_mode",
        "request",
        "request_uri",
    }
)
CLIENT_AUTH = ("client_secret_basic", "client_secret_post", "private_key_jwt")


def _check_authorize_params(value: tuple[tuple[str, str], ...]) -> None:
    for name, param in value:
        if name in RESERVED_PARAMS:
            raise ValueError(f"{name!r} is set by porter itself")
        if not name or not name.isprintable() or not param.isprintable() or len(param) > 512:
            raise ValueError(f"{name!r}: names and values must be printable (values <= 512)")


def _check_scopes(value: tuple[str, ...]) -> None:
    if "openid" not in value:
        raise ValueError('must include "openid"')
    for scope in value:
        if not scope or not scope.isprintable() or " " in scope:
            raise ValueError(f"{scope!r} is not a scope")


@dataclass(frozen=True)
class OidcProviderSettings(ClaimMapping):
    """One OpenID provider and porter's client registration there."""

    id: str = field(
        default="",
        metadata={
            "doc": "Short name used in porter's URLs, e.g. keycloak (required)",
            "check": _check_provider_id,
        },
    )
    display_name: str = field(
        default="", metadata={"doc": 'Button text: "Log in with <display_name>" (default: id)'}
    )
    issuer: str = field(
        default="",
        metadata={
            "doc": "The issuer URL; its /.well-known/openid-configuration must name it exactly",
            "check": check_jwks_url,
        },
    )
    client_id: str = field(default="", metadata={"doc": "Porter's client id (required)"})
    client_secret: str | None = field(
        default=None,
        metadata={
            "doc": "Porter's client secret (use client_secret_file); unset: a public client",
            "secret": True,
        },
    )
    scopes: tuple[str, ...] = field(
        default=("openid", "profile", "email"),
        metadata={"doc": "Scopes asked for (must include openid)", "check": _check_scopes},
    )
    algorithms: tuple[str, ...] = field(
        default=("RS256",),
        metadata={
            "doc": "ID token signature algorithms accepted (asymmetric only)",
            "check": _check_algorithms,
        },
    )
    leeway: int = field(
        default=30,
        metadata={"doc": "Seconds of clock skew allowed on exp and iat", "min": 0, "max": 300},
    )
    server_id: int = field(
        default=0,
        metadata={
            "doc": "server_list id users of this provider log in to (0: the default)",
            "min": 0,
        },
    )
    end_session: bool = field(
        default=True,
        metadata={"doc": "On logout, send the browser to the provider's end_session_endpoint"},
    )
    client_auth: str = field(
        default="client_secret_basic",
        metadata={
            "doc": "How porter proves itself at the token endpoint: client_secret_basic, "
            "client_secret_post, or private_key_jwt (client_key_file); a public client "
            "(no client_secret) sends only its client_id",
            "choices": CLIENT_AUTH,
        },
    )
    client_key_file: str | None = field(
        default=None,
        metadata={"doc": "private_key_jwt: porter's PEM private key (its public key registered)"},
    )
    client_key_id: str | None = field(
        default=None, metadata={"doc": "private_key_jwt: the kid the provider knows that key by"}
    )
    client_key_alg: str = field(
        default="RS256",
        metadata={
            "doc": "private_key_jwt: the algorithm the assertion is signed with",
            "choices": ASYMMETRIC_ALGORITHMS,
        },
    )
    userinfo: bool = field(
        default=False,
        metadata={
            "doc": "Also ask the userinfo endpoint and merge its claims (same sub) before "
            "mapping: where a provider sends groups only there"
        },
    )
    authorize_params: tuple[tuple[str, str], ...] = field(
        default=(),
        metadata={
            "doc": 'More authorization request parameters, a table: { acr_values = "mfa" }',
            "check": _check_authorize_params,
        },
    )
    shared_callback: bool = field(
        default=False,
        metadata={
            "doc": "Use the callback URL every provider shared before, /porter/oidc/callback, "
            "instead of /porter/oidc/<id>/callback (one provider at most; register the new "
            "URL instead)"
        },
    )

    @property
    def label(self) -> str:
        return self.display_name or self.id

    def issuer_settings(self, jwks_uri: str | None = None) -> IssuerSettings:
        """This provider as a token issuer: audience = client id, its mapping rules."""
        mapping = {f.name: getattr(self, f.name) for f in fields(ClaimMapping)}
        return IssuerSettings(
            issuer=self.issuer,
            audience=(self.client_id,),
            algorithms=self.algorithms,
            jwks_url=jwks_uri,
            leeway=self.leeway,
            **mapping,
        )

    def problems(self) -> list[tuple[str, str]]:
        found: list[tuple[str, str]] = []
        if not self.id:
            found.append(("id", "is required: a short name for porter's URLs"))
        if not self.issuer:
            found.append(("issuer", "is required: the provider's issuer URL"))
        if not self.client_id:
            found.append(("client_id", "is required: porter's client id at the provider"))
        if self.group_required and not self.group_claim:
            found.append(("group_required", "needs group_claim"))
        found += self._client_auth_problems()
        return found

    def _client_auth_problems(self) -> list[tuple[str, str]]:
        if self.client_auth == "private_key_jwt":
            if not self.client_key_file:
                return [("client_key_file", "is required by client_auth = private_key_jwt")]
            try:
                key = load_pem_private_key_file(self.client_key_file)
            except KeyLoadError as exc:
                return [("client_key_file", str(exc))]
            if key.family != family_of(self.client_key_alg):
                return [
                    ("client_key_alg", f"{self.client_key_alg} cannot sign with a {key.family} key")
                ]
            return []
        if self.client_auth != "client_secret_basic" and self.client_secret is None:
            return [("client_secret", f"is required by client_auth = {self.client_auth}")]
        return []


@dataclass(frozen=True)
class OidcSettings:
    """OpenID Connect login: buttons on porter's login page, one per provider."""

    providers: tuple[OidcProviderSettings, ...] = field(
        default=(), metadata={"doc": "OpenID providers ([[oidc.providers]] tables)"}
    )
    timeout: float = field(
        default=10.0,
        metadata={
            "doc": "Seconds the provider may take for discovery, keys and the token exchange",
            "min": 0.5,
            "max": 60,
        },
    )
    login_lifetime: int = field(
        default=600,
        metadata={
            "doc": "Seconds a user has at the provider before the login must restart",
            "min": 60,
            "max": 3600,
        },
    )
    public_url: str | None = field(
        default=None,
        metadata={
            "doc": "Porter's public base URL, e.g. https://omero.example.org (callback and "
            "logout URLs); unset: from the request (scheme and Host, trusted proxies applied)",
            "check": check_jwks_url,
        },
    )

    @property
    def enabled(self) -> bool:
        return bool(self.providers)

    @property
    def shared_callback(self) -> str | None:
        """The id of the provider that keeps the shared callback URL, if one does."""
        return next((p.id for p in self.providers if p.shared_callback), None)

    def problems(self) -> list[tuple[str, str]]:
        ids = [p.id for p in self.providers]
        twice = sorted({i for i in ids if ids.count(i) > 1})
        if twice:
            return [("providers", f"provider id {twice[0]!r} is configured twice")]
        if sum(p.shared_callback for p in self.providers) > 1:
            return [
                (
                    "providers",
                    "shared_callback is set for more than one provider: the callback URL "
                    "must say which provider a login came back from",
                )
            ]
        return []
