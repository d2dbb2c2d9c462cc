"""The `[sso]` section: trusted token issuers, identity mapping, and porter's own tokens.

`[[sso.issuers]]` is an array of tables, one per identity provider, each with its own keys,
audience and claim mapping. `[sso.porter_tokens]` configures the short-lived tokens porter
signs for scripts. Key files are read and parsed while the configuration is checked, so a
missing or unusable key is reported by `run.py check`, naming its path.
"""

from __future__ import annotations

import ipaddress
import re
import string
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from auth.jwks import (
    ALGORITHMS,
    ASYMMETRIC_ALGORITHMS,
    HMAC_ALGORITHMS,
    KeyLoadError,
    check_hmac_secret,
    family_of,
    load_jwks_file,
    load_pem_private_key_file,
    load_pem_public_key_file,
)
from filters.regex_guard import compile_plain

# OMERO's system accounts (ids 0 and 1): never reachable by SSO, whatever the configuration.
ALWAYS_PROTECTED = ("root", "guest")

_COOKIE_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+\Z")  # an RFC 6265 token
_CLAIM_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_\-:]*\Z")


def _check_cookie_name(value: str) -> None:
    if not _COOKIE_NAME.match(value):
        raise ValueError(f"{value!r} is not a cookie name (letters, digits and !#$%&'*+-.^_`|~)")


def _check_algorithms(value: tuple[str, ...]) -> None:
    if not value:
        raise ValueError('list at least one algorithm, e.g. ["RS256"]')
    for alg in value:
        if alg.lower() == "none":
            raise ValueError('"none" is never allowed: unsigned tokens prove nothing')
        if alg not in ALGORITHMS:
            raise ValueError(f"{alg!r} is not one of {', '.join(ALGORITHMS)}")


def template_fields(template: str) -> list[str]:
    """The claim names a username template uses; ValueError for anything but plain `{claim}`."""
    names: list[str] = []
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise ValueError(f"is not a valid template: {exc}") from None
    for _text, name, spec, conversion in parsed:
        if name is None:
            continue
        # attribute/index access ({a.__class__}, {a[0]}) would reach into Python objects
        if not _CLAIM_NAME.match(name) or spec or conversion:
            raise ValueError(f"{{{name}}}: only plain claim names like {{email}} are allowed")
        names.append(name)
    if not names:
        raise ValueError('must name at least one claim, e.g. "{preferred_username}"')
    return names


def _check_template(value: str) -> None:
    template_fields(value)


def _check_regexes(value: tuple[str, ...]) -> None:
    for pattern in value:
        try:
            compile_plain(pattern)
        except ValueError as exc:
            raise ValueError(f"{pattern[:80]!r}: {exc}") from None


def _check_claim_path(value: str) -> None:
    if not all(_CLAIM_NAME.match(part) for part in value.split(".")):
        raise ValueError('must be a claim name or a dotted path like "realm_access.roles"')


def _check_group_map(value: tuple[tuple[str, str], ...]) -> None:
    for claim_value, group in value:
        if not claim_value or not group:
            raise ValueError("claim values and OMERO group names must not be empty")


def check_jwks_url(value: str) -> None:
    """https://, or http:// only to a loopback address; no credentials in the URL."""
    parts = urlsplit(value)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise ValueError("must be an https:// URL with a host")
    if parts.username is not None or parts.password is not None:
        raise ValueError("must not contain credentials")
    if parts.scheme == "http" and not _is_loopback(parts.hostname):
        raise ValueError("must be https:// (plain http:// only to a loopback address)")


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class ClaimMapping:
    """How verified claims name the OMERO user and group: shared by `[[sso.issuers]]` and
    `[[oidc.providers]]` (auth/sso_identity.py applies it)."""

    username_template: str = field(
        default="{preferred_username}",
        metadata={
            "doc": 'OMERO username built from claims, e.g. "{preferred_username}" or "{email}"',
            "check": _check_template,
        },
    )
    trust_unverified_email: bool = field(
        default=False,
        metadata={
            "doc": "Accept {email} in username_template without email_verified = true "
            "(only for providers that verify every address)"
        },
    )
    group_claim: str | None = field(
        default=None,
        metadata={
            "doc": 'Claim (or dotted path) holding the user\'s groups, e.g. "groups"',
            "check": _check_claim_path,
        },
    )
    group_map: tuple[tuple[str, str], ...] = field(
        default=(),
        metadata={
            "doc": "[claim value, OMERO group] pairs; the first pair present wins",
            "check": _check_group_map,
        },
    )
    group_as_is: bool = field(
        default=False,
        metadata={"doc": "Use a group claim value as the OMERO group name when group_map has none"},
    )
    group_required: bool = field(
        default=False,
        metadata={"doc": "Refuse a token whose group claim maps to no OMERO group"},
    )


@dataclass(frozen=True)
class IssuerSettings(ClaimMapping):
    """One trusted identity provider: its keys, audience, algorithms and claim mapping."""

    issuer: str = field(
        default="", metadata={"doc": "Exact `iss` value of this provider's tokens (required)"}
    )
    audience: tuple[str, ...] = field(
        default=(),
        metadata={"doc": "Accepted `aud` values; a token must name one of them (required)"},
    )
    algorithms: tuple[str, ...] = field(
        default=("RS256",),
        metadata={
            "doc": "Signature algorithms accepted from this issuer (never none)",
            "check": _check_algorithms,
        },
    )
    hmac_secret: str | None = field(
        default=None,
        metadata={
            "doc": "Shared secret for HS256/384/512 (use hmac_secret_file)",
            "secret": True,
        },
    )
    public_key_files: tuple[str, ...] = field(
        default=(),
        metadata={"doc": "PEM public key files (RSA, EC or Ed25519); they match any kid"},
    )
    jwks_file: str | None = field(
        default=None, metadata={"doc": "A JWKS file with the provider's public keys"}
    )
    jwks_url: str | None = field(
        default=None,
        metadata={
            "doc": "The provider's JWKS URL (https), cached and refreshed on an unknown kid",
            "check": check_jwks_url,
        },
    )
    leeway: int = field(
        default=30,
        metadata={"doc": "Seconds of clock skew allowed on exp, nbf and iat", "min": 0, "max": 300},
    )
    server_claim: str | None = field(
        default=None,
        metadata={
            "doc": "Claim naming the server_list id (integer) to log in to; unset: the default",
            "check": _check_claim_path,
        },
    )

    def problems(self) -> list[tuple[str, str]]:
        """Required values, key sources matching the algorithms, and every key file readable."""
        found: list[tuple[str, str]] = []
        if not self.issuer:
            found.append(("issuer", "is required: the exact `iss` of this provider's tokens"))
        if not self.audience or not all(self.audience):
            found.append(("audience", "is required: list the `aud` values porter accepts"))
        found += self._hmac_problems([a for a in self.algorithms if a in HMAC_ALGORITHMS])
        found += self._public_key_problems(
            [a for a in self.algorithms if a in ASYMMETRIC_ALGORITHMS]
        )
        if self.group_required and not self.group_claim:
            found.append(("group_required", "needs group_claim"))
        return found

    def _hmac_problems(self, hmac_algs: list[str]) -> list[tuple[str, str]]:
        """The HMAC secret and the HS* algorithms: both or neither, and a secret long enough."""
        if hmac_algs and not self.hmac_secret:
            return [("hmac_secret", f"{hmac_algs[0]} needs hmac_secret_file")]
        if not self.hmac_secret:
            return []
        if not hmac_algs:
            return [("hmac_secret", "is set but algorithms lists no HS256/HS384/HS512")]
        try:
            check_hmac_secret(self.hmac_secret.encode(), hmac_algs)
        except KeyLoadError as exc:
            return [("hmac_secret", str(exc))]
        return []

    def _public_key_problems(self, public_algs: list[str]) -> list[tuple[str, str]]:
        """Public keys and the RS/PS/ES/EdDSA algorithms: both or neither, every key file
        readable and of a family the algorithms name."""
        found: list[tuple[str, str]] = []
        has_public = bool(self.public_key_files or self.jwks_file or self.jwks_url)
        if public_algs and not has_public:
            found.append(
                ("algorithms", f"{public_algs[0]} needs public_key_files, jwks_file or jwks_url")
            )
        if has_public and not public_algs:
            found.append(("algorithms", "public keys are configured but no RS/PS/ES/EdDSA is"))
        families = {family_of(a) for a in public_algs}
        for path in self.public_key_files:
            try:
                key = load_pem_public_key_file(path)
            except KeyLoadError as exc:
                found.append(("public_key_files", str(exc)))
                continue
            if key.family not in families:
                found.append(
                    ("public_key_files", f"{path}: a {key.family} key, but algorithms has none")
                )
        if self.jwks_file:
            try:
                load_jwks_file(self.jwks_file)
            except KeyLoadError as exc:
                found.append(("jwks_file", str(exc)))
        return found


def _check_nonempty(value: str) -> None:
    if not value or not value.isprintable():
        raise ValueError("must be a non-empty printable string")


@dataclass(frozen=True)
class PorterTokenSettings:
    """Short-lived tokens porter signs for scripts (POST /porter/token, /porter/jwks.json)."""

    enabled: bool = field(default=False, metadata={"doc": "Issue and accept porter's own tokens"})
    signing_key_file: str | None = field(
        default=None,
        metadata={"doc": "PEM private key (EC P-256/384/521, RSA >= 2048 bits or Ed25519)"},
    )
    algorithm: str = field(
        default="ES256",
        metadata={
            "doc": "Signature algorithm; must fit the key type",
            "choices": ("ES256", "ES384", "ES512", "RS256", "PS256", "EdDSA"),
        },
    )
    key_id: str | None = field(
        default=None,
        metadata={"doc": "kid header and JWKS kid; unset: the key's RFC 7638 thumbprint"},
    )
    lifetime: int = field(
        default=600,
        metadata={"doc": "Seconds a token is valid", "min": 30, "max": 3600},
    )
    issuer: str = field(
        default="omero-porter",
        metadata={"doc": "`iss` of porter's tokens", "check": _check_nonempty},
    )
    audience: str = field(
        default="omero-porter",
        metadata={"doc": "`aud` of porter's tokens", "check": _check_nonempty},
    )

    def problems(self) -> list[tuple[str, str]]:
        """When enabled, the signing key must exist, parse and fit the algorithm."""
        if not self.enabled:
            return []
        if not self.signing_key_file:
            return [("signing_key_file", "is required when porter tokens are enabled")]
        try:
            key = load_pem_private_key_file(self.signing_key_file)
        except KeyLoadError as exc:
            return [("signing_key_file", str(exc))]
        if not key.fits(self.algorithm):
            return [
                (
                    "algorithm",
                    f"{self.algorithm} does not fit the {key.family} key in "
                    f"{self.signing_key_file}",
                )
            ]
        return []


@dataclass(frozen=True)
class SsoSettings:
    """Single sign-on with tokens from identity providers, and porter's own tokens."""

    enabled: bool = field(default=False, metadata={"doc": "Accept tokens from the issuers below"})
    issuers: tuple[IssuerSettings, ...] = field(
        default=(), metadata={"doc": "Trusted identity providers ([[sso.issuers]] tables)"}
    )
    max_token_size: int = field(
        default=8192,
        metadata={
            "doc": "Largest token in bytes; larger is refused unread",
            "min": 256,
            "max": 65536,
        },
    )
    jwks_timeout: float = field(
        default=5.0,
        metadata={"doc": "Seconds a JWKS URL may take to answer", "min": 0.1, "max": 60},
    )
    jwks_max_size: int = field(
        default=262144,
        metadata={"doc": "Largest JWKS document in bytes", "min": 1024, "max": 4194304},
    )
    jwks_refresh_interval: int = field(
        default=30,
        metadata={
            "doc": "Seconds before the same unknown kid refetches a JWKS URL again, and "
            "after a refetch that found no new key (a rotated key is always fetched at once)",
            "min": 1,
        },
    )
    jwks_max_age: int = field(
        default=600,
        metadata={"doc": "Seconds fetched JWKS keys are used before they are refetched", "min": 10},
    )
    bearer: bool = field(
        default=True, metadata={"doc": "Accept `Authorization: Bearer <token>` on any request"}
    )
    token_cookie: str | None = field(
        default=None,
        metadata={
            "doc": "Cookie a front SSO layer sets with the token; unset: no cookie is read",
            "check": _check_cookie_name,
        },
    )
    link_login: bool = field(
        default=False,
        metadata={"doc": "Accept /porter/sso?token=... links (the token appears in a URL once)"},
    )
    allow_users: tuple[str, ...] = field(
        default=(),
        metadata={"doc": "OMERO usernames allowed by SSO; with allow_users_regex empty: all"},
    )
    allow_users_regex: tuple[str, ...] = field(
        default=(),
        metadata={
            "doc": "Regexes a username may fully match to be allowed",
            "check": _check_regexes,
        },
    )
    deny_users: tuple[str, ...] = field(
        default=(), metadata={"doc": "OMERO usernames refused by SSO (deny wins over allow)"}
    )
    deny_users_regex: tuple[str, ...] = field(
        default=(),
        metadata={
            "doc": "Regexes refusing the usernames they fully match",
            "check": _check_regexes,
        },
    )
    admin_accounts: tuple[str, ...] = field(
        default=(),
        metadata={"doc": "OMERO admin accounts SSO never reaches, besides root and guest"},
    )
    allow_admin_accounts: tuple[str, ...] = field(
        default=(),
        metadata={"doc": "Admin accounts SSO may reach all the same (default: none; not root)"},
    )
    session_time_to_live: int = field(
        default=86400,
        metadata={
            "doc": "Seconds an SSO user's OMERO session lives (createSessionWithTimeouts)",
            "min": 60,
        },
    )
    session_time_to_idle: int = field(
        default=600,
        metadata={"doc": "Seconds an SSO user's OMERO session survives unused", "min": 60},
    )
    porter_tokens: PorterTokenSettings = field(
        default_factory=PorterTokenSettings,
        metadata={"doc": "Porter's own short-lived tokens ([sso.porter_tokens])"},
    )

    def problems(self) -> list[tuple[str, str]]:
        """Issuers present and distinct when enabled; root never explicitly allowed."""
        found: list[tuple[str, str]] = []
        if self.enabled and not self.issuers:
            found.append(("issuers", "SSO is enabled but no [[sso.issuers]] is configured"))
        names = [i.issuer for i in self.issuers]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            found.append(("issuers", f"issuer {duplicates[0]!r} is configured twice"))
        if self.porter_tokens.enabled and self.porter_tokens.issuer in names:
            found.append(("porter_tokens.issuer", "is also the issuer of an [[sso.issuers]]"))
        if self.jwks_max_age < self.jwks_refresh_interval:
            found.append(("jwks_max_age", "must not be shorter than jwks_refresh_interval"))
        for name in self.allow_admin_accounts:
            if name.casefold() in ALWAYS_PROTECTED:
                found.append(("allow_admin_accounts", f"{name!r} can never be reached by SSO"))
        return found
