"""The logout index: porter sessions filed under a name (an OpenID provider's `sid`, or its
issuer and `sub`) until their absolute deadline, so that a back-channel logout finds every
session it ends. In this process, or in Redis for every process.

Both keep the same contract (tests/test_session_store.py runs it on each): `linked(name)`
lists the ids filed under `name` whose deadline has not passed; sessions may have ended since
(the store's `delete` answers None for those). In Redis the index holds references to the
sessions' handles (auth/store_seal.py), never the cookies. Redis failing is
SessionStoreUnavailable (503)."""

from __future__ import annotations

import hashlib
import time
from typing import Protocol

from redis.asyncio import Redis

from auth.session_store import Clock, redis_errors
from auth.sessions import is_session_id
from auth.store_seal import StoreSeal, is_reference, reference

_PER_NAME = 16  # a user's logins over time: past this, the ended ones are forgotten


class LogoutIndex(Protocol):
    async def link(self, name: str, session_id: str, until: float) -> None:
        """File session `session_id` under `name` until epoch time `until`."""
        ...

    async def linked(self, name: str) -> list[str]:
        """The ids filed under `name` and not past their `until`."""
        ...


class MemoryLogoutIndex:
    """At most about `max_names` names in this process."""

    def __init__(self, max_names: int, clock: Clock = time.time) -> None:
        self._links: dict[str, dict[str, float]] = {}  # name -> session id -> until
        self._max = max_names
        self._clock = clock

    async def link(self, name: str, session_id: str, until: float) -> None:
        now = self._clock()
        links = self._links.setdefault(name, {})
        links[session_id] = until
        if len(links) > _PER_NAME:
            self._links[name] = {i: t for i, t in links.items() if t > now}
        if len(self._links) > self._max:
            self._links = {
                n: live
                for n, ids in self._links.items()
                if (live := {i: t for i, t in ids.items() if t > now})
            }

    async def linked(self, name: str) -> list[str]:
        now = self._clock()
        return [i for i, t in self._links.get(name, {}).items() if t > now]


class RedisLogoutIndex:
    """`{prefix}link:<sha256 of the name>`: a sorted set of session references by deadline."""

    def __init__(
        self, redis: Redis, prefix: str, seal: StoreSeal, clock: Clock = time.time
    ) -> None:
        self._redis = redis
        self._prefix = prefix + "link:"
        self._seal = seal
        self._clock = clock

    def _key(self, name: str) -> str:
        return self._prefix + hashlib.sha256(name.encode()).hexdigest()

    async def link(self, name: str, session_id: str, until: float) -> None:
        if not (is_session_id(session_id) or is_reference(session_id)):
            return
        key = self._key(name)
        now = self._clock()
        member = reference(self._seal.handles(session_id)[0])  # the cookie stays out
        with redis_errors("session store"):
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.zadd(key, {member: until})
                pipe.zremrangebyscore(key, "-inf", now)
                pipe.expire(key, max(1, int(until - now) + 1), gt=True)
                pipe.expire(key, max(1, int(until - now) + 1), nx=True)
                await pipe.execute()

    async def linked(self, name: str) -> list[str]:
        with redis_errors("session store"):
            found = await self._redis.zrangebyscore(self._key(name), self._clock(), "+inf")
        return [i.decode() if isinstance(i, bytes) else str(i) for i in found]
