"""The session record: what porter knows about one logged-in browser or client."""

from __future__ import annotations

import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

# token_urlsafe(32): 32 random bytes = 256 bits, 43 URL-safe characters.
_ID_BYTES = 32
_ID_PATTERN = re.compile(r"[A-Za-z0-9_-]{43}\Z")


def new_session_id() -> str:
    """A fresh, unguessable session id (256 random bits, URL-safe, 43 characters)."""
    return secrets.token_urlsafe(_ID_BYTES)


def is_session_id(value: str) -> bool:
    """True when `value` has the shape of an id from `new_session_id` (cheap pre-check)."""
    return _ID_PATTERN.match(value) is not None


def cookie_pairs(cookies: Mapping[str, str] | None = None) -> tuple[tuple[str, str], ...]:
    """`cookies` as the sorted (name, value) pairs a record keeps."""
    return tuple(sorted((cookies or {}).items()))


# slots and plain tuples: one object the garbage collector tracks per session (100k sessions
# must not make every full collection stall the event loop).
@dataclass(frozen=True, slots=True)
class SessionRecord:
    """One porter session. Times are epoch seconds from the store's clock.

    `id` is the value of porter's cookie; it, the OMERO session key and the held upstream
    cookies are secrets: repr() shows none of them.
    """

    id: str = field(repr=False)
    server_id: int
    omero_session_key: str = field(repr=False)
    user_id: int
    user_name: str
    kind: str
    created: float
    last_seen: float
    last_pinged: float
    # Upstream (OMERO.web) cookies porter holds for this session; read them as `cookies`.
    cookie_pairs: tuple[tuple[str, str], ...] = field(default=(), repr=False)

    @classmethod
    def new(
        cls,
        now: float,
        *,
        server_id: int,
        omero_session_key: str,
        user_id: int,
        user_name: str,
        kind: str = "user",
        cookies: Mapping[str, str] | None = None,
    ) -> SessionRecord:
        """A fresh session with a new random id, created, seen and pinged `now`."""
        return cls(
            id=new_session_id(),
            server_id=server_id,
            omero_session_key=omero_session_key,
            user_id=user_id,
            user_name=user_name,
            kind=kind,
            created=now,
            last_seen=now,
            last_pinged=now,
            cookie_pairs=cookie_pairs(cookies),
        )

    @property
    def cookies(self) -> Mapping[str, str]:
        """The held upstream cookies, name -> value (read-only)."""
        return MappingProxyType(dict(self.cookie_pairs))

    def expires_at(self, idle_timeout: float, absolute_timeout: float) -> float:
        """When this session ends unless used again: the earlier of the two deadlines."""
        return min(self.created + absolute_timeout, self.last_seen + idle_timeout)
