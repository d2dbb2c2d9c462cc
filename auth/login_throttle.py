"""Login throttling: too many failures from one address or for one user name -> 429.

`MemoryLoginThrottle` counts in this process (the memory store); `RedisLoginThrottle` counts
in Redis, so every porter process and host sees the same counts (the Redis store). Both count
a window from the first failure; a success clears that address's and name's. Wrong password,
unknown user and a locked account count alike."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from cachetools import TTLCache
from redis.asyncio import Redis

from auth.session_store import redis_errors


def subjects(address: str, user: str) -> list[tuple[str, str]]:
    """What a login attempt is counted against: ("a", its address), ("u", the user name,
    case-folded) when one was given."""
    found = [("a", address)]
    if user:
        found.append(("u", user.casefold()))
    return found


class Throttle(Protocol):
    async def retry_after(self, address: str, user: str) -> int | None: ...
    async def failed(self, address: str, user: str) -> None: ...
    async def succeeded(self, address: str, user: str) -> None: ...


@dataclass
class _Failures:
    count: int
    first: float


class MemoryLoginThrottle:
    """Counts failed logins per client address and per user name within a window.

    Bounded memory: at most `max_keys` addresses and user names are tracked; the oldest
    are forgotten first. Wrong password, unknown user and a locked account count alike.
    """

    def __init__(
        self,
        *,
        max_per_address: int,
        max_per_user: int,
        window: float,
        max_keys: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._limits = {"a": max_per_address, "u": max_per_user}
        self._window = window
        self._clock = clock
        self._failures: TTLCache[tuple[str, str], _Failures] = TTLCache(
            maxsize=max_keys, ttl=window, timer=clock
        )

    def _keys(self, address: str, user: str) -> list[tuple[str, str]]:
        return subjects(address, user)

    async def retry_after(self, address: str, user: str) -> int | None:
        """Seconds to wait when the address or the user name is throttled, else None."""
        now = self._clock()
        waits = [
            self._window - (now - entry.first)
            for key in self._keys(address, user)
            if (entry := self._failures.get(key)) is not None
            and entry.count >= self._limits[key[0]]
        ]
        return max(1, int(max(waits)) + 1) if waits else None

    async def failed(self, address: str, user: str) -> None:
        now = self._clock()
        for key in self._keys(address, user):
            entry = self._failures.get(key)
            if entry is None:
                self._failures[key] = _Failures(1, now)
            else:
                entry.count += 1

    async def succeeded(self, address: str, user: str) -> None:
        for key in self._keys(address, user):
            self._failures.pop(key, None)


# INCR, and start the window at the first failure (an existing window is not extended).
_FAIL = """
local n = redis.call('INCR', KEYS[1])
if n == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
return n
"""


class RedisLoginThrottle:
    """The same counts in Redis (`{prefix}throttle:a:<address>`, `...:u:<name>`),
    shared by every porter process and host. Redis failing: SessionStoreUnavailable (503)."""

    def __init__(
        self,
        redis: Redis,
        prefix: str,
        *,
        max_per_address: int,
        max_per_user: int,
        window: float,
    ) -> None:
        self._redis = redis
        self._prefix = prefix + "throttle:"
        self._limits = {"a": max_per_address, "u": max_per_user}
        self._window_ms = int(window * 1000)
        self._fail = redis.register_script(_FAIL)

    def _keys(self, address: str, user: str) -> list[tuple[str, str]]:
        return [(kind, f"{self._prefix}{kind}:{value}") for kind, value in subjects(address, user)]

    async def retry_after(self, address: str, user: str) -> int | None:
        keys = self._keys(address, user)
        with redis_errors("login throttle"):
            async with self._redis.pipeline(transaction=False) as pipe:
                for _, key in keys:
                    pipe.get(key)
                    pipe.pttl(key)
                found = await pipe.execute()
        waits = [
            int(found[2 * i + 1])
            for i, (kind, _) in enumerate(keys)
            if found[2 * i] is not None and int(found[2 * i]) >= self._limits[kind]
        ]
        return max(1, math.ceil(max(waits) / 1000) + 1) if waits else None

    async def failed(self, address: str, user: str) -> None:
        with redis_errors("login throttle"):
            for _, key in self._keys(address, user):
                await self._fail(keys=[key], args=[self._window_ms])

    async def succeeded(self, address: str, user: str) -> None:
        with redis_errors("login throttle"):
            await self._redis.delete(*(key for _, key in self._keys(address, user)))
