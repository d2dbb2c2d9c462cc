"""An OMERO session several porter processes share through Redis: one hash per slot
(`key`: the OMERO session key, `c:<name>`: each OMERO.web cookie held for it, both sealed
with the store's key, auth/store_seal.py; `kh`: a keyed hash of the session key), the lock
its one creator holds while making it, and a compare-and-delete (on `kh`) so that only the
session a process saw fail is dropped. Used by the shared public session and the SSO users'
sessions. Every Redis failure is SessionStoreUnavailable (the error boundary's 503)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from types import MappingProxyType
from typing import Any

from redis.asyncio import Redis

from auth.session_store import redis_errors
from auth.store_seal import StoreSeal

Handoff = Callable[[int, str], Awaitable[Mapping[str, str]]]
"""`handoff(server_id, omero_key)`: has OMERO.web join the session; returns its cookies."""

_COOKIE = "c:"
_UNLOCK = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""
_DROP = """
local held = redis.call('HGET', KEYS[1], 'kh')
for i = 1, #ARGV do
  if held == ARGV[i] then return redis.call('DEL', KEYS[1]) end
end
return 0
"""


def text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class SharedSlots:
    """Slots by their Redis key; `what` names them in errors."""

    def __init__(self, redis: Redis, what: str, seal: StoreSeal) -> None:
        self.redis = redis
        self.what = what
        self.seal = seal
        self._unlock = redis.register_script(_UNLOCK)
        self._drop = redis.register_script(_DROP)

    async def read(self, key: str) -> tuple[str, Mapping[str, str]] | None:
        """The session key and cookies in slot `key`; None when it is empty."""
        with redis_errors(self.what):
            raw = await self.redis.hgetall(key)
        data = {text(k): text(v) for k, v in raw.items()}
        if not data.get("key"):
            return None
        opened = {
            name: self.seal.open(value, key, name)
            for name, value in data.items()
            if name == "key" or name.startswith(_COOKIE)
        }
        session_key = opened.pop("key")
        if session_key is None or None in opened.values():
            return None  # sealed under a key this process does not know: as if empty
        cookies = {k[len(_COOKIE) :]: str(v) for k, v in opened.items()}
        return session_key, MappingProxyType(cookies)

    def open_key(self, key: str, sealed: str | None) -> str | None:
        """The session key sealed in slot `key`'s hash (as a script returned it)."""
        return None if sealed is None else self.seal.open(sealed, key, "key")

    async def write(
        self, key: str, session_key: str, cookies: Mapping[str, str], ttl: float | None = None
    ) -> None:
        """Fill slot `key` (replacing what it held), for `ttl` seconds if given."""
        fields: dict[Any, Any] = {
            "key": self.seal.seal(session_key, key, "key"),
            "kh": self.seal.handle(session_key),
        }
        fields.update(
            {
                _COOKIE + name: self.seal.seal(value, key, _COOKIE + name)
                for name, value in cookies.items()
            }
        )
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
            return bool(await self._drop(keys=[key], args=self.seal.handles(session_key)))
