"""The replay cache: names used once (a link token's jti, an OpenID login's nonce, a logout
token's jti), remembered until their own expiry, in this process or in Redis for all.

Both answer `use_once(name, until)` alike (tests/test_session_store.py runs the contract on
each): True the first time, False while the name is remembered, and False when it cannot be
remembered (a memory cache full of live names refuses rather than forgets one). Redis failing
is SessionStoreUnavailable (503)."""

from __future__ import annotations

import hashlib
import time
from typing import Protocol

from redis.asyncio import Redis

from auth.session_store import Clock, redis_errors


class ReplayCache(Protocol):
    async def use_once(self, name: str, until: float) -> bool:
        """Remember `name` until epoch time `until`: True the first time, False while it is
        remembered (a replay) or when it cannot be remembered."""
        ...


class MemoryReplayCache:
    """At most `max_names` live names in this process."""

    def __init__(self, max_names: int, clock: Clock = time.time) -> None:
        self._used: dict[str, float] = {}  # name -> until when
        self._max = max_names
        self._clock = clock

    async def use_once(self, name: str, until: float) -> bool:
        now = self._clock()
        if len(self._used) >= self._max:
            self._used = {n: t for n, t in self._used.items() if t > now}
            if len(self._used) >= self._max:
                return False  # full of live names: refuse rather than forget one
        known = self._used.get(name)
        if known is not None and known > now:
            return False
        self._used[name] = until
        return True


class RedisReplayCache:
    """`{prefix}once:<sha256 of the name>`, set if absent, expiring at `until`."""

    def __init__(self, redis: Redis, prefix: str, clock: Clock = time.time) -> None:
        self._redis = redis
        self._prefix = prefix + "once:"
        self._clock = clock

    async def use_once(self, name: str, until: float) -> bool:
        key = self._prefix + hashlib.sha256(name.encode()).hexdigest()
        ms = max(1, int((until - self._clock()) * 1000))
        with redis_errors("session store"):
            return bool(await self._redis.set(key, "1", nx=True, px=ms))
