"""Decide which OMERO user a verified token stands for, or refuse it.

The username comes from the issuer's `username_template` filled with claims; the group from
`group_claim` through `group_map`. OMERO's system accounts (root, guest) are never reachable;
other admin accounts (`admin_accounts`, plus the ones the caller passes, e.g. the account
porter itself uses) only when listed in `allow_admin_accounts`. Deny lists win over allow
lists. Whether the user exists in OMERO is not decided here: OMERO answers that when porter
creates the session.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from auth.jwt_verify import SsoError, VerifiedToken
from auth.sso_settings import ALWAYS_PROTECTED, IssuerSettings, SsoSettings, template_fields

__all__ = ["IdentityRefused", "SsoIdentity", "SsoIdentityMapper"]

_MAX_USERNAME = 255


class IdentityRefused(SsoError):
    """A verified token that maps to no user porter may log in (status 403).

    Reasons: no_username (a template claim is absent or not a string), bad_username,
    email_unverified ({email} used without email_verified = true), admin_account, denied,
    not_allowed, no_group, bad_server.
    """

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(reason, message, status=403)


@dataclass(frozen=True)
class SsoIdentity:
    """Who a token stands for in OMERO.

    `groups`: the OMERO groups the claims map to, in `group_map` order (empty: the user's
    default group); a login takes the first one the user is a member of.
    `server_id`: the server_list id the token names (None: the proxy's default server).
    """

    username: str
    groups: tuple[str, ...]
    issuer: str
    subject: str
    server_id: int | None = None

    @property
    def group(self) -> str | None:
        """The first group the claims map to (None: the user's default group)."""
        return self.groups[0] if self.groups else None


class SsoIdentityMapper:
    """Maps verified tokens to identities under the `[sso]` lists; one instance per app."""

    def __init__(self, settings: SsoSettings, *, protected: Iterable[str] = ()) -> None:
        """`protected`: more OMERO admin accounts to keep out (e.g. `omero.admin_user`)."""
        names = [*ALWAYS_PROTECTED, *settings.admin_accounts, *protected]
        allowed = {n.casefold() for n in settings.allow_admin_accounts} - set(ALWAYS_PROTECTED)
        self._protected = {n.casefold() for n in names} - allowed
        self._allow = frozenset(settings.allow_users)
        self._allow_rx = [re.compile(p) for p in settings.allow_users_regex]
        self._deny = frozenset(settings.deny_users)
        self._deny_rx = [re.compile(p) for p in settings.deny_users_regex]

    def map(self, token: VerifiedToken) -> SsoIdentity:
        """The identity of `token`, or IdentityRefused with the reason."""
        issuer = token.issuer
        username = _username(issuer.username_template, token.claims)
        fields = template_fields(issuer.username_template)
        verified_email = token.claims.get("email_verified") is True
        if "email" in fields and not (verified_email or issuer.trust_unverified_email):
            # an unverified address is whatever the user typed: it must not pick an account
            raise IdentityRefused("email_unverified", "the token's email is not verified")
        self._check(username)
        return SsoIdentity(
            username=username,
            groups=_groups(issuer, token.claims),
            issuer=issuer.issuer,
            subject=str(token.claims["sub"]),
            server_id=_server(issuer, token.claims),
        )

    def _check(self, username: str) -> None:
        if username.casefold() in self._protected:
            raise IdentityRefused("admin_account", "OMERO admin accounts cannot sign in by SSO")
        if username in self._deny or any(r.fullmatch(username) for r in self._deny_rx):
            raise IdentityRefused("denied", "this user may not sign in by SSO")
        if (self._allow or self._allow_rx) and not (
            username in self._allow or any(r.fullmatch(username) for r in self._allow_rx)
        ):
            raise IdentityRefused("not_allowed", "this user is not allowed to sign in by SSO")


def _username(template: str, claims: Mapping[str, Any]) -> str:
    values: dict[str, str] = {}
    for name in template_fields(template):
        value = claims.get(name)
        if isinstance(value, bool) or not isinstance(value, (str, int)) or value == "":
            raise IdentityRefused("no_username", f"token has no usable {name!r} claim")
        values[name] = str(value)
    username = template.format_map(values)
    if len(username) > _MAX_USERNAME or username != username.strip() or not username.isprintable():
        raise IdentityRefused("bad_username", "the username from the token is not usable")
    return username


def _claim(claims: Mapping[str, Any], path: str) -> Any:
    value: Any = claims
    for part in path.split("."):
        value = value.get(part) if isinstance(value, Mapping) else None
    return value


def _groups(issuer: IssuerSettings, claims: Mapping[str, Any]) -> tuple[str, ...]:
    """Every OMERO group the claims map to, in `group_map` order (a user is often in several
    groups at the provider); without a mapped one, the claim's values as they are when
    `group_as_is`."""
    if issuer.group_claim is None:
        return ()
    raw = _claim(claims, issuer.group_claim)
    values = [raw] if isinstance(raw, str) else raw if isinstance(raw, list) else []
    present = [v for v in values if isinstance(v, str) and v]
    mapped = [group for claim_value, group in issuer.group_map if claim_value in present]
    if not mapped and issuer.group_as_is:
        mapped = [v for v in present if v.isprintable()]
    if not mapped and issuer.group_required:
        raise IdentityRefused("no_group", "the token's groups map to no OMERO group")
    return tuple(dict.fromkeys(mapped))


def _server(issuer: IssuerSettings, claims: Mapping[str, Any]) -> int | None:
    if issuer.server_claim is None:
        return None
    value = _claim(claims, issuer.server_claim)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise IdentityRefused("bad_server", "the token names no valid server id")
    return value
