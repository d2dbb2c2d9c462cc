"""An OMERO session several porter processes share through Redis: one hash per slot
(`key`: the OMERO session key, `c:<name>`: each OMERO.web cookie held for it), the lock its
one creator holds while making it, and a compare-and-delete so that only the session a
process saw fail is dropped. Used by the shared public session and the SSO users' sessions.
Every Redis failure is SessionStoreUnavailable (the error boundary's 503)."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from redis.asyncio import Redis

from auth.store import redis_errors

_COOKIE = "c:"
_UNLOCK = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""
_DROP = """
if redis.call('HGET', KEYS[1], 'key') == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


def text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class SharedSlots:
    """Slots by their Redis key; `what` names them in errors."""

    def __init__(self, redis: Redis, what: str) -> None:
        self.redis = redis
        self.what = what
        self._unlock = redis.register_script(_UNLOCK)
        self._drop = redis.register_script(_DROP)

    async def read(self, key: str) -> tuple[str, Mapping[str, str]] | None:
        """The session key and cookies in slot `key`; None when it is empty."""
        with redis_errors(self.what):
            raw = await self.redis.hgetall(key)
        data = {text(k): text(v) for k, v in raw.items()}
        if not data.get("key"):
            return None
        cookies = {k[len(_COOKIE) :]: v for k, v in data.items() if k.startswith(_COOKIE)}
        return data["key"], MappingProxyType(cookies)

    async def write(
        self, key: str, session_key: str, cookies: Mapping[str, str], ttl: float | None = None
    ) -> None:
        """Fill slot `key` (replacing what it held), for `ttl` seconds if given."""
        fields: dict[Any, Any] = {"key": session_key}
        fields.update({_COOKIE + name: value for name, value in cookies.items()})
        with redis_errors(self.what):
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.delete(key)
                pipe.hset(key, mapping=fields)
                if ttl is not None:
                    pipe.pexpire(key, max(1000, int(ttl * 1000)))
                await pipe.execute()

    async def lock(self, key: str, token: str, seconds: float) -> bool:
        """Take the creation lock of slot `key` for `seconds`; False if another holds it."""
        with redis_errors(self.what):
            done = await self.redis.set(key + ":lock", token, nx=True, px=int(seconds * 1000))
        return bool(done)

    async def unlock(self, key: str, token: str) -> None:
        with redis_errors(self.what):
            await self._unlock(keys=[key + ":lock"], args=[token])

    async def drop(self, key: str, session_key: str) -> bool:
        """Empty slot `key` only if it still holds `session_key`; True if it did."""
        with redis_errors(self.what):
            return bool(await self._drop(keys=[key], args=[session_key]))
