"""Who a request runs as: what forwarding needs, and what reports must keep secret."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Literal

# Make OMERO.web's session good again: the new held cookies. Raises porter's exception tree
# when it cannot be (SessionGone: log in again; SessionStoreUnavailable, ServerUnavailable,
# HandoffFailed, ...): the error middleware answers.
Renew = Callable[[], Awaitable[Mapping[str, str]]]
# Receives the held cookies OMERO.web set on an answer (None: deleted).
Capture = Callable[[dict[str, str | None]], Awaitable[object]]

Kind = Literal["user", "token", "public", "anonymous"]

_NO_COOKIES: Mapping[str, str] = MappingProxyType({})


async def _cannot_renew() -> Mapping[str, str]:
    raise RuntimeError("this principal has no OMERO.web session to renew")


@dataclass(frozen=True)
class Principal:
    """The identity a request is served as.

    - `kind`: ``user`` (a porter session), ``token`` (a bearer or SSO token), ``public``
      (the shared public user), ``anonymous`` (nobody yet: porter's own pages);
    - `user`, `server_id`: the OMERO user name and server;
    - `cookies`: the OMERO.web cookies porter holds for it, sent upstream (never to browsers);
    - `secrets`: values that must never appear in a log line or a mail;
    - `renew`: makes OMERO.web's session good again when it forgot it;
    - `capture`: keeps new values of held cookies OMERO.web sets (None: they are dropped).
    """

    kind: Kind
    user: str
    server_id: int | None = None
    cookies: Mapping[str, str] = field(default_factory=lambda: _NO_COOKIES, repr=False)
    secrets: frozenset[str] = field(default=frozenset(), repr=False)
    renew: Renew = field(default=_cannot_renew, repr=False, compare=False)
    capture: Capture | None = field(default=None, repr=False, compare=False)

    @property
    def authenticated(self) -> bool:
        """A user's own request: its answers must never be stored by shared caches."""
        return self.kind in ("user", "token")


ANONYMOUS = Principal("anonymous", "anonymous")
