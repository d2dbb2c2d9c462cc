"""The session store interface and its errors (auth/stores.py picks an implementation).

SessionStoreUnavailable (an Unavailable of porter_errors.py): the store cannot be reached now
(Redis down), answered 503.

Both stores keep the same contract (tests/test_session_store.py runs against each):
expired sessions are invisible to `get` at once and are removed, with their OMERO close info,
by `pop_expired` (the purge job); the memory store also evicts its least recently used session
when full and hands it to `on_evict`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Protocol

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from auth.sessions import SessionRecord
from porter_errors import Unavailable

Clock = Callable[[], float]
# Called with (server_id, omero_session_key) of a session the store dropped on its own.
OnEvict = Callable[[int, str], "Awaitable[None] | None"]

# last_seen is written at most this often per session (seconds), so reads rarely write.
MAX_TOUCH_INTERVAL = 60.0


class SessionStoreUnavailable(Unavailable):
    """The session store cannot be reached; porter answers 503 "session store unavailable".
    The message never contains a secret."""


@contextlib.contextmanager
def redis_errors(what: str) -> Iterator[None]:
    """Redis failing becomes SessionStoreUnavailable: the error boundary answers 503. The one
    place porter translates Redis's errors."""
    try:
        yield
    except (RedisError, OSError, asyncio.TimeoutError) as exc:
        detail = type(exc).__name__
        # Connection errors say only where and why (no arguments, no password).
        if isinstance(exc, (RedisConnectionError, RedisTimeoutError, OSError)) and str(exc):
            detail = f"{detail}: {str(exc)[:160]}"
        raise SessionStoreUnavailable(f"{what} unavailable ({detail})") from None


@dataclass(frozen=True)
class SessionTimeouts:
    """Idle and absolute lifetimes (seconds) and how stale last_seen may get before a write."""

    idle: float
    absolute: float

    @property
    def touch_interval(self) -> float:
        """Granularity of last_seen: idle expiry may come this much early, never late."""
        return min(MAX_TOUCH_INTERVAL, self.idle / 20)

    def deadline(self, record: SessionRecord) -> float:
        """When `record` expires unless used again."""
        return record.expires_at(self.idle, self.absolute)


@dataclass(frozen=True)
class ExpiredBatch:
    """Expired sessions removed by one `pop_expired` call.

    `lost` counts expired sessions whose record was already gone (Redis dropped the key long
    after its deadline): their OMERO sessions cannot be closed by porter and end by OMERO's
    own idle timeout, since nobody pings them.
    """

    records: tuple[SessionRecord, ...]
    lost: int = 0
    # True when the store stopped early and more expired sessions may remain.
    more: bool = False

    def __len__(self) -> int:
        return len(self.records) + self.lost


class SessionStore(Protocol):
    """Where porter keeps session records. Every method may raise SessionStoreUnavailable."""

    @property
    def timeouts(self) -> SessionTimeouts:
        """The idle and absolute timeouts this store applies."""
        ...

    async def create(
        self,
        *,
        server_id: int,
        omero_session_key: str,
        user_id: int,
        user_name: str,
        kind: str = "user",
        cookies: Mapping[str, str] | None = None,
    ) -> SessionRecord:
        """Store and return a new session with a fresh random id."""
        ...

    async def get(self, session_id: str) -> SessionRecord | None:
        """The live session with this id, or None (unknown, malformed or expired).

        Marks the session used; the write happens at most once per `touch_interval`.
        """
        ...

    async def update_cookies(
        self, session_id: str, changes: Mapping[str, str | None]
    ) -> SessionRecord | None:
        """Set (value) or remove (None) held upstream cookies; None if the session is gone."""
        ...

    async def delete(self, session_id: str) -> SessionRecord | None:
        """Remove the session and return it; None if it was already gone.

        Of several concurrent deletes (or a delete racing the purge) exactly one gets the
        record, so whoever gets it closes the OMERO session exactly once.
        """
        ...

    async def pop_expired(self, limit: int) -> ExpiredBatch:
        """Remove and return up to `limit` expired sessions (for the purge)."""
        ...

    def used_since(self, since: float, batch_size: int = 500) -> AsyncIterator[list[SessionRecord]]:
        """Live sessions whose last_seen >= `since`, in batches (for the keepalive)."""
        ...

    async def mark_pinged(self, session_id: str, previous: float) -> bool:
        """Set last_pinged to now if it still equals `previous`; False if another won."""
        ...

    async def count(self) -> int:
        """Number of stored sessions (expired ones not yet purged included)."""
        ...

    async def close(self) -> None:
        """Release connections and wait for scheduled eviction closes."""
        ...
