"""Purges every porter process must hear of: with several processes, each holds its own
memory tier, and `run.py cache purge` reaches only one of them. The purge is noted where all
of them look every two seconds: the shared disk tier's purge log (cache/disk.py) and/or, with
the Redis store, a short list in Redis."""

from __future__ import annotations

import json
import logging
import time

from redis.asyncio import Redis
from redis.exceptions import RedisError

log = logging.getLogger("porter.cache")

KEEP = 100  # purges remembered


class RedisPurgeLog:
    """`{prefix}cache:purges`: the last purges as JSON [time, regex or null]."""

    def __init__(self, redis: Redis, prefix: str) -> None:
        self._redis = redis
        self._key = prefix + "cache:purges"

    async def note(self, source: str | None) -> None:
        """Note a purge made now (failures are logged: the purge itself stands)."""
        try:
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.rpush(self._key, json.dumps([time.time(), source]))
                pipe.ltrim(self._key, -KEEP, -1)
                await pipe.execute()
        except (RedisError, OSError, TimeoutError) as exc:
            log.warning("cache purge not shared through Redis (%s)", type(exc).__name__)

    async def read(self) -> list[tuple[float, str | None]]:
        try:
            raw = await self._redis.lrange(self._key, 0, -1)
        except (RedisError, OSError, TimeoutError):
            return []  # read again next time
        found = []
        for item in raw:
            try:
                when, source = json.loads(item)
                found.append((float(when), None if source is None else str(source)))
            except (ValueError, TypeError):
                continue
        return found
