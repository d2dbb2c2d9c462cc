"""The shared session store: Redis, so several porter processes or machines share sessions.

Layout under the key prefix P, where a session's handle is an HMAC of its cookie (the
cookie itself is never written to Redis) and its secrets, the OMERO session key and the held
upstream cookies, are sealed (auth/store_seal.py):
  P s:<handle>   hash: the record (fields below; held upstream cookies as "c:<name>")
  P expiry       sorted set: handle -> logical deadline min(created + absolute, last_seen + idle)
  P seen         sorted set: handle -> last_seen (the keepalive's "used since")

Records read by handle (purge, keepalive) carry `~<handle>` as their id, which delete,
update_cookies and mark_pinged accept as they accept a cookie.

The hash's Redis TTL is the logical deadline plus `close_grace`: expiry is checked on read
against the deadline, and the purge (ZRANGEBYSCORE on `expiry`, no SCAN) still finds the
OMERO close info after the deadline. Only when no purge ran for `close_grace` does Redis drop
the key unread; that OMERO session then ends by OMERO's own idle timeout (nobody pings it).
Every multi-key change is one Lua script, so concurrent purgers, deletes and touches in
different processes see each session removed exactly once. Standalone Redis (or a primary);
not Redis Cluster (the scripts touch keys of several slots).
"""

from __future__ import annotations

import math
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import replace
from typing import Any, cast
from urllib.parse import urlsplit

from cachetools import TTLCache
from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError

from auth.session_settings import SessionSettings
from auth.session_store import Clock, ExpiredBatch, SessionTimeouts, redis_errors
from auth.sessions import SessionRecord, cookie_pairs, is_session_id
from auth.store_seal import StoreSeal, is_reference, reference

_COOKIE = "c:"

_CREATE = """
redis.call('HSET', KEYS[1], unpack(ARGV, 5))
redis.call('EXPIRE', KEYS[1], ARGV[4])
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[1])
redis.call('ZADD', KEYS[3], ARGV[3], ARGV[1])
return 1
"""

_TOUCH = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], 'seen', ARGV[2])
redis.call('EXPIRE', KEYS[1], ARGV[4])
redis.call('ZADD', KEYS[2], 'XX', ARGV[3], ARGV[1])
redis.call('ZADD', KEYS[3], 'XX', ARGV[2], ARGV[1])
return 1
"""

_COOKIES = """
if redis.call('EXISTS', KEYS[1]) == 0 then return {} end
local n = tonumber(ARGV[1])
for i = 0, n - 1 do redis.call('HSET', KEYS[1], 'c:' .. ARGV[2 + 2 * i], ARGV[3 + 2 * i]) end
for i = 2 + 2 * n, #ARGV do redis.call('HDEL', KEYS[1], 'c:' .. ARGV[i]) end
return redis.call('HGETALL', KEYS[1])
"""

_DELETE = """
local data = redis.call('HGETALL', KEYS[1])
redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('ZREM', KEYS[3], ARGV[1])
return data
"""

_POP_EXPIRED = """
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, ARGV[2])
local out = {}
for _, id in ipairs(ids) do
  local key = ARGV[3] .. id
  out[#out + 1] = id
  out[#out + 1] = redis.call('HGETALL', key)
  redis.call('DEL', key)
  redis.call('ZREM', KEYS[1], id)
  redis.call('ZREM', KEYS[2], id)
end
return out
"""

_MARK_PINGED = """
if redis.call('HGET', KEYS[1], 'pinged') ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'pinged', ARGV[2])
return 1
"""


def _encode(record: SessionRecord, seal: StoreSeal, handle: str) -> dict[str, str]:
    fields = {
        "server": str(record.server_id),
        "key": seal.seal(record.omero_session_key, handle, "key"),
        "uid": str(record.user_id),
        "uname": record.user_name,
        "kind": record.kind,
        "created": repr(record.created),
        "seen": repr(record.last_seen),
        "pinged": repr(record.last_pinged),
    }
    fields.update(
        {
            _COOKIE + name: seal.seal(value, handle, _COOKIE + name)
            for name, value in record.cookie_pairs
        }
    )
    return fields


def _pairs(flat: Sequence[str]) -> dict[str, str]:
    return dict(zip(flat[::2], flat[1::2], strict=True))


def _decode(
    session_id: str, data: Mapping[str, str], seal: StoreSeal, handle: str
) -> SessionRecord | None:
    """The record in `data`; None when it is gone, not porter's, or does not open."""
    opened = {
        name: seal.open(value, handle, name)
        for name, value in data.items()
        if name == "key" or name.startswith(_COOKIE)
    }
    if None in opened.values():
        return None  # sealed under another key, or moved from another session
    try:
        return SessionRecord(
            id=session_id,
            server_id=int(data["server"]),
            omero_session_key=cast(str, opened["key"]),
            user_id=int(data["uid"]),
            user_name=data["uname"],
            kind=data["kind"],
            created=float(data["created"]),
            last_seen=float(data["seen"]),
            last_pinged=float(data["pinged"]),
            cookie_pairs=cookie_pairs(
                {k[len(_COOKIE) :]: cast(str, v) for k, v in opened.items() if k != "key"}
            ),
        )
    except (KeyError, ValueError):
        return None  # empty (gone) or not a record porter wrote


def redis_client(settings: SessionSettings) -> Redis:
    """Porter's one Redis client (sessions, the public session, SSO sessions, the throttle,
    one-time tokens): straight to `redis_url`, or to the primary the Sentinels name, found
    again after a failover. Timeouts are bounded: a Redis that cannot answer is a 503."""
    common: dict[str, Any] = {
        "password": settings.redis_password,
        "decode_responses": True,
        "socket_connect_timeout": settings.redis_connect_timeout,
        "socket_timeout": settings.redis_timeout,
        "max_connections": settings.redis_max_connections,
        # One immediate retry replaces a pooled connection that died with a restart.
        "retry": Retry(NoBackoff(), 1, (RedisConnectionError,)),
        "health_check_interval": 30,
    }
    if not settings.redis_sentinels:
        pool = BlockingConnectionPool.from_url(
            settings.redis_url,
            timeout=settings.redis_timeout,  # wait for a free pooled connection
            **common,
        )
        return Redis(connection_pool=pool)
    sentinel = Sentinel(  # type: ignore[no-untyped-call]
        [(host, int(port)) for host, port in settings.redis_sentinels],
        sentinel_kwargs={
            "password": settings.redis_sentinel_password,
            "socket_connect_timeout": settings.redis_connect_timeout,
            "socket_timeout": settings.redis_timeout,
        },
    )
    database = int(urlsplit(settings.redis_url).path.strip("/") or 0)
    client: Redis = sentinel.master_for(settings.redis_sentinel_master, db=database, **common)
    return client


class RedisSessionStore:
    """Sessions in Redis, shared by every porter process using the same server and prefix."""

    def __init__(
        self,
        redis: Redis,
        *,
        timeouts: SessionTimeouts,
        seal: StoreSeal,
        key_prefix: str = "porter:",
        clock: Clock = time.time,
        close_grace: float = 3600.0,
        local_cache: float = 0.0,
        local_size: int = 10_000,
    ) -> None:
        """`local_cache`: seconds this process reuses a session read from Redis (0: none);
        a session ended by another process ends here at most that much later."""
        self._redis = redis
        self._seal = seal
        # by handle: a record read from Redis at most local_cache seconds ago
        self._local: TTLCache[str, SessionRecord] | None = (
            TTLCache(maxsize=local_size, ttl=local_cache) if local_cache > 0 else None
        )
        self._timeouts = timeouts
        self._prefix = key_prefix
        self._expiry = key_prefix + "expiry"
        self._seen = key_prefix + "seen"
        self._clock = clock
        self._grace = close_grace
        self._create = redis.register_script(_CREATE)
        self._touch = redis.register_script(_TOUCH)
        self._cookies = redis.register_script(_COOKIES)
        self._delete = redis.register_script(_DELETE)
        self._pop_expired = redis.register_script(_POP_EXPIRED)
        self._mark_pinged = redis.register_script(_MARK_PINGED)

    @classmethod
    def from_settings(
        cls,
        settings: SessionSettings,
        *,
        redis: Redis | None = None,
        timeouts: SessionTimeouts,
        seal: StoreSeal,
        clock: Clock = time.time,
    ) -> RedisSessionStore:
        """A store configured from `[session]`, on `redis` (default: a client of its own)."""
        return cls(
            redis if redis is not None else redis_client(settings),
            timeouts=timeouts,
            seal=seal,
            key_prefix=settings.redis_key_prefix,
            clock=clock,
            close_grace=max(3600.0, 10.0 * settings.purge_interval),
            local_cache=settings.redis_local_cache,
        )

    @property
    def timeouts(self) -> SessionTimeouts:
        return self._timeouts

    def _key(self, handle: str) -> str:
        return f"{self._prefix}s:{handle}"

    def _handles(self, session_id: str) -> list[str]:
        """Where the session of a cookie, or of a reference the store gave, may live."""
        if not (is_session_id(session_id) or is_reference(session_id)):
            return []
        return self._seal.handles(session_id)

    def _ttl(self, deadline: float, now: float) -> int:
        return max(1, math.ceil(deadline - now + self._grace))

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
        now = self._clock()
        record = SessionRecord.new(
            now,
            server_id=server_id,
            omero_session_key=omero_session_key,
            user_id=user_id,
            user_name=user_name,
            kind=kind,
            cookies=cookies,
        )
        deadline = self._timeouts.deadline(record)
        handle = self._seal.handle(record.id)
        keys = [self._key(handle), self._expiry, self._seen]
        args: list[str | int] = [handle, repr(deadline), repr(now), self._ttl(deadline, now)]
        for name, value in _encode(record, self._seal, handle).items():
            args += [name, value]
        with redis_errors("session store"):
            await self._create(keys=keys, args=args)
        return record

    async def get(self, session_id: str) -> SessionRecord | None:
        if not is_session_id(session_id):  # a request's cookie: never a reference
            return None
        for handle in self._seal.handles(session_id):
            record = await self._get(session_id, handle)
            if record is not None:
                return record
        return None

    async def _get(self, session_id: str, handle: str) -> SessionRecord | None:
        local = self._local
        if local is not None:
            held = local.get(handle)
            now = self._clock()
            if (
                held is not None
                and self._timeouts.deadline(held) > now
                and now - held.last_seen < self._timeouts.touch_interval
            ):
                return held  # read from Redis at most local_cache seconds ago
        with redis_errors("session store"):
            data = await self._redis.hgetall(self._key(handle))
        record = _decode(session_id, cast(dict[str, str], data), self._seal, handle)
        now = self._clock()
        if record is None or self._timeouts.deadline(record) <= now:
            self._forget(handle)
            return None
        if now - record.last_seen >= self._timeouts.touch_interval:
            record = await self._touched(record, handle, now)
        if local is not None:
            local[handle] = record
        return record

    def _forget(self, handle: str, record: SessionRecord | None = None) -> None:
        """This process's copy: replaced by `record`, or dropped."""
        local = self._local
        if local is None:
            return
        if record is None:
            local.pop(handle, None)
        elif handle in local:
            local[handle] = record

    async def _touched(self, record: SessionRecord, handle: str, now: float) -> SessionRecord:
        deadline = min(record.created + self._timeouts.absolute, now + self._timeouts.idle)
        keys = [self._key(handle), self._expiry, self._seen]
        args: list[str | int] = [handle, repr(now), repr(deadline), self._ttl(deadline, now)]
        with redis_errors("session store"):
            await self._touch(keys=keys, args=args)
        return replace(record, last_seen=now)

    async def update_cookies(
        self, session_id: str, changes: Mapping[str, str | None]
    ) -> SessionRecord | None:
        sets = [(n, v) for n, v in changes.items() if v is not None]
        for handle in self._handles(session_id):
            args: list[str | int] = [len(sets)]
            for name, value in sets:
                args += [name, self._seal.seal(value, handle, _COOKIE + name)]
            args += [n for n, v in changes.items() if v is None]
            with redis_errors("session store"):
                flat = await self._cookies(keys=[self._key(handle)], args=args)
            if not flat:
                continue  # not under this handle
            record = _decode(session_id, _pairs(flat), self._seal, handle)
            if record is None or self._timeouts.deadline(record) <= self._clock():
                self._forget(handle)
                return None
            self._forget(handle, record)
            return record
        return None

    async def delete(self, session_id: str) -> SessionRecord | None:
        for handle in self._handles(session_id):
            self._forget(handle)
            keys = [self._key(handle), self._expiry, self._seen]
            with redis_errors("session store"):
                flat = await self._delete(keys=keys, args=[handle])
            if flat:
                return _decode(session_id, _pairs(flat), self._seal, handle)
        return None

    async def pop_expired(self, limit: int) -> ExpiredBatch:
        args: list[str | int] = [repr(self._clock()), limit, self._prefix + "s:"]
        with redis_errors("session store"):
            flat = await self._pop_expired(keys=[self._expiry, self._seen], args=args)
        records: list[SessionRecord] = []
        lost = 0
        for handle, data in zip(flat[::2], flat[1::2], strict=True):
            record = _decode(reference(handle), _pairs(data), self._seal, handle)
            self._forget(handle)
            if record is None:
                lost += 1
            else:
                records.append(record)
        return ExpiredBatch(tuple(records), lost=lost, more=len(flat) // 2 >= limit)

    async def used_since(
        self, since: float, batch_size: int = 500
    ) -> AsyncIterator[list[SessionRecord]]:
        with redis_errors("session store"):
            ids = cast(list[str], await self._redis.zrangebyscore(self._seen, repr(since), "+inf"))
        for start in range(0, len(ids), batch_size):
            chunk = ids[start : start + batch_size]
            with redis_errors("session store"):
                async with self._redis.pipeline(transaction=False) as pipe:
                    for session_id in chunk:
                        pipe.hgetall(self._key(session_id))
                    found = await pipe.execute()
            now = self._clock()
            batch = []
            for handle, data in zip(chunk, found, strict=True):
                record = _decode(reference(handle), data, self._seal, handle)
                if (
                    record is not None
                    and record.last_seen >= since
                    and self._timeouts.deadline(record) > now
                ):
                    batch.append(record)
            if batch:
                yield batch

    async def mark_pinged(self, session_id: str, previous: float) -> bool:
        args = [repr(previous), repr(self._clock())]
        for handle in self._handles(session_id):
            with redis_errors("session store"):
                if await self._mark_pinged(keys=[self._key(handle)], args=args):
                    return True
        return False

    async def count(self) -> int:
        with redis_errors("session store"):
            return int(await self._redis.zcard(self._expiry))

    async def close(self) -> None:
        with redis_errors("session store"):
            await self._redis.aclose(close_connection_pool=True)
