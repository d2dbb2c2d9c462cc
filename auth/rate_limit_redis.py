"""Per-client rates in Redis, shared by every porter process and host: one Lua GCRA script.

Why a script of porter's own rather than the `limits` package: GCRA keeps one number per key
(the theoretical arrival time) and decides in one round trip, on the Redis server's clock
(hosts whose clocks differ still agree); it runs on the client porter already has, with its
bounded timeouts, so a slow Redis costs a request at most `redis_timeout`. `limits` would
add a dependency and its own connection handling for the same dozen lines.

Redis failing: the request is let through (admission still protects OMERO.web), with one
WARNING when Redis stops answering and one INFO when it is back.
"""

from __future__ import annotations

import logging

from redis.asyncio import Redis

from auth.session_store import SessionStoreUnavailable, redis_errors
from filters.limits import Rate

log = logging.getLogger("porter.limits")

# KEYS[1]: the key; ARGV: interval and tolerance in microseconds. Returns 0 (allowed, counted)
# or the microseconds until it would be allowed.
_GCRA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local tolerance = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local wait = tat - now - tolerance
if wait > 0 then return wait end
local new = tat + interval
redis.call('SET', KEYS[1], string.format('%d', new), 'PX', math.ceil((new - now) / 1000) + 1)
return 0
"""


class RedisRates:
    """The GCRA of filters.limits.MemoryRates, in Redis under `{prefix}rate:<key>`."""

    def __init__(self, redis: Redis, prefix: str) -> None:
        self._redis = redis
        self._prefix = prefix + "rate:"
        self._gcra = redis.register_script(_GCRA)
        self._down = False

    async def hit(self, key: str, rate: Rate) -> float:
        """0 when allowed (and counted), else the seconds until it would be; 0 while Redis
        cannot answer."""
        args = [int(rate.interval * 1e6), int(rate.tolerance * 1e6)]
        try:
            with redis_errors("rate limits"):
                wait = await self._gcra(keys=[self._prefix + key], args=args)
        except SessionStoreUnavailable as exc:
            if not self._down:
                self._down = True
                log.warning("%s: rate limits are off until it answers", exc)
            return 0.0
        if self._down:
            self._down = False
            log.info("rate limits: Redis answers again")
        return int(wait) / 1e6
