"""Failed logins counted in Redis, so that every porter process and host throttles alike (the
in-process counter for the memory store is filters.throttle.LoginThrottle; same rules)."""

from __future__ import annotations

import math

from redis.asyncio import Redis

from auth.store import redis_errors

# INCR, and start the window at the first failure (an existing window is not extended).
_FAIL = """
local n = redis.call('INCR', KEYS[1])
if n == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
return n
"""


class RedisLoginThrottle:
    """filters.throttle's counts in Redis (`{prefix}throttle:a:<address>`, `...:u:<name>`),
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
        keys = [("a", f"{self._prefix}a:{address}")]
        if user:
            keys.append(("u", f"{self._prefix}u:{user.casefold()}"))
        return keys

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
