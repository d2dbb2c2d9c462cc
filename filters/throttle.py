"""Login throttling: too many failures from one address or for one user name → 429.

`LoginThrottle` counts in this process (the memory store); auth's `RedisLoginThrottle`
counts in Redis, so every porter process and host sees the same counts (the Redis store).
Both count a window from the first failure; a success clears that address's and name's."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from cachetools import TTLCache


class Throttle(Protocol):
    async def retry_after(self, address: str, user: str) -> int | None: ...
    async def failed(self, address: str, user: str) -> None: ...
    async def succeeded(self, address: str, user: str) -> None: ...


@dataclass
class _Failures:
    count: int
    first: float


class LoginThrottle:
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
        keys = [("a", address)]
        if user:
            keys.append(("u", user.casefold()))
        return keys

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
