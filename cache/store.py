"""The tiers together: memory (an LRU bounded in bytes) in front of the optional disk tier,
with the counters `run.py cache stats`, readyz and metrics read."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Coroutine
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from typing import Any

from cachetools import LRUCache, TTLCache

from cache.disk import DiskError, DiskTier
from cache.entry import Entry
from cache.key import key_path
from cache.purges import RedisPurgeLog
from cache.settings import CacheSettings
from cache.ttl_rules import CacheRules
from filters.regex_guard import GuardedPattern, MatchTimeout, guarded

log = logging.getLogger("porter.cache")

TOO_LARGE_MEMORY = 3600.0  # seconds a key stays known as too large to cache
PURGE_BUDGET = 10.0  # seconds a purge's pattern may take over the cached paths


def _found(pattern: GuardedPattern, keys: list[str], deadline: float) -> list[str]:
    return [key for key in keys if pattern.finds(key_path(key), deadline)]


@dataclass
class Counters:
    hits: int = 0  # served from memory or disk, fresh
    misses: int = 0  # fetched from OMERO.web and stored
    stale: int = 0  # served stale while one background request refreshed it
    stale_if_error: int = 0  # served stale because OMERO.web failed
    collapsed: int = 0  # waited for another request's fetch instead of sending their own
    passes: int = 0  # fetched but not storable (not 200, cookies, private, too large)
    lock_timeouts: int = 0  # waited past lock_timeout
    fetches: int = 0  # requests porter's cache sent to OMERO.web
    waiting: int = 0  # requests waiting for a fetch right now (a gauge)
    disk_errors: int = 0
    purged: int = 0


class PublicCache:
    """Public answers by key. Memory lookups are synchronous; the disk tier runs in a thread
    of its own, and a failing disk is a miss (counted, logged once), never an error."""

    def __init__(self, settings: CacheSettings, shared: RedisPurgeLog | None = None) -> None:
        """`shared`: where other porter processes hear of purges (the Redis store)."""
        self.settings = settings
        self.rules = CacheRules(settings.rules)
        self.counters = Counters()
        self._memory: LRUCache[str, Entry] = LRUCache(
            settings.memory_bytes, getsizeof=lambda entry: entry.size
        )
        self.disk = DiskTier(settings.disk_dir, settings.disk_bytes) if settings.disk_dir else None
        self._pool = ThreadPoolExecutor(2, thread_name_prefix="porter-cache-disk")
        self._disk_down = False
        self._writes: set[asyncio.Future[Any]] = set()
        self._refreshes: set[asyncio.Task[Any]] = set()
        self._purges_seen = time.time()
        self.shared = shared
        # Keys whose answer was past max_object_size: streamed without a fetch of their own.
        self.too_large: TTLCache[str, bool] = TTLCache(10000, TOO_LARGE_MEMORY)

    # memory ---------------------------------------------------------------------------

    def memory_get(self, key: str) -> Entry | None:
        return self._memory.get(key)

    @property
    def memory_bytes(self) -> int:
        return int(self._memory.currsize)

    # both tiers -----------------------------------------------------------------------

    async def get(self, key: str) -> Entry | None:
        """The entry of `key` in memory, else on disk (then kept in memory too)."""
        entry = self._memory.get(key)
        if entry is not None or self.disk is None:
            return entry
        entry = await self._on_disk(self.disk.get, key)
        if isinstance(entry, Entry) and entry.age(time.time()) <= entry.ttl + self.settings.keep:
            self._remember(key, entry)
            return entry
        return None

    def put(self, key: str, entry: Entry) -> None:
        """Keep `entry` in memory now; its disk write runs in the background."""
        self._remember(key, entry)
        if self.disk is not None:
            write = asyncio.ensure_future(
                self._on_disk(self.disk.put, key, entry, self.settings.keep)
            )
            self._writes.add(write)
            write.add_done_callback(self._writes.discard)

    def _remember(self, key: str, entry: Entry) -> None:
        if entry.size <= self._memory.maxsize:
            self._memory[key] = entry

    async def purge(self, pattern: GuardedPattern | None) -> int:
        """Drop the entries whose path `pattern` finds (all: None), from both tiers. The
        paths were chosen by visitors: matching runs in a thread, under PURGE_BUDGET seconds
        (MatchTimeout past it: what was matched by then is dropped, nothing is noted for the
        other processes)."""
        deadline = time.monotonic() + PURGE_BUDGET
        removed = 0
        try:
            removed = await self._purge_memory(pattern, time.time(), deadline)
            if self.disk is not None:
                await self.flush()
                removed += await self._on_disk(self.disk.purge, pattern, deadline) or 0
        finally:
            self.counters.purged += removed
        if self.shared is not None:
            await self.shared.note(None if pattern is None else pattern.source)
        return removed

    async def _purge_memory(
        self, pattern: GuardedPattern | None, before: float, deadline: float
    ) -> int:
        keys = [key for key, entry in list(self._memory.items()) if entry.stored <= before]
        if pattern is not None:  # the entries are read on the loop, the paths matched apart
            keys = await asyncio.to_thread(_found, pattern, keys, deadline)
        for key in keys:
            self._memory.pop(key, None)
        return len(keys)

    async def apply_purges(self) -> int:
        """Purges another process noted (in the shared disk tier, in Redis), applied to this
        memory tier."""
        purge_log: list[tuple[float, str | None]] = []
        if self.disk is not None:
            purge_log += await self._on_disk(self.disk.purge_log) or []
        if self.shared is not None:
            purge_log += await self.shared.read()
        purge_log.sort()
        removed = 0
        for when, source in purge_log:
            if when > self._purges_seen:
                removed += await self._apply_purge(source, when)
                self._purges_seen = when
        return removed

    async def _apply_purge(self, source: str | None, when: float) -> int:
        """Another process's purge, on this memory tier. A pattern that is refused or runs
        out of time drops everything stored before it: a copy too many is dropped, never
        one too few kept."""
        deadline = time.monotonic() + PURGE_BUDGET
        try:
            pattern = None if source is None else guarded(source)
            return await self._purge_memory(pattern, when, deadline)
        except (ValueError, MatchTimeout) as exc:
            log.warning("cache purge pattern not applied (%s): dropping every copy", exc)
            return await self._purge_memory(None, when, deadline)

    def run_in_background(self, refresh: Coroutine[Any, Any, object]) -> None:
        """Run a refresh of an entry without anyone waiting for it (kept until it ends)."""
        task = asyncio.get_running_loop().create_task(refresh, name="porter-cache-refresh")
        self._refreshes.add(task)
        task.add_done_callback(self._refreshes.discard)

    async def flush(self) -> None:
        """Wait until the disk writes started so far have landed."""
        if self._writes:
            await asyncio.gather(*self._writes, return_exceptions=True)

    async def _on_disk(self, call: Any, *args: Any) -> Any:
        loop = asyncio.get_running_loop()
        try:
            result = await loop.run_in_executor(self._pool, call, *args)
        except DiskError as exc:
            self.counters.disk_errors += 1
            if not self._disk_down:
                self._disk_down = True
                log.warning(
                    "cache disk tier failing (%s: %s): serving from memory and OMERO.web",
                    type(exc).__name__,
                    exc,
                )
            return None
        if self._disk_down:
            self._disk_down = False
            log.info("cache disk tier works again")
        return result

    async def disk_stats(self) -> dict[str, int] | None:
        """The disk tier's entries and bytes (None: no disk tier, or it failed)."""
        if self.disk is None:
            return None
        found = await self._on_disk(self.disk.stats)
        return found if isinstance(found, dict) else None

    async def check_disk(self) -> tuple[bool, str]:
        """Readiness of the disk tier."""
        if self.disk is None:
            return True, "memory only"
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(self._pool, self.disk.check)
            stats = await loop.run_in_executor(self._pool, self.disk.stats)
        except DiskError as exc:
            return False, f"disk tier failing ({type(exc).__name__})"
        return True, f"{stats['entries']} entries, {stats['bytes']} of {self.disk_limit} bytes"

    @property
    def disk_limit(self) -> int:
        return self.settings.disk_bytes

    async def stats(self) -> dict[str, Any]:
        report: dict[str, Any] = {
            "memory": {
                "entries": len(self._memory),
                "bytes": self.memory_bytes,
                "limit": self.settings.memory_bytes,
            },
            "counters": asdict(self.counters),
        }
        if self.disk is not None:
            disk = await self._on_disk(self.disk.stats)
            report["disk"] = {**(disk or {"error": "unavailable"}), "limit": self.disk_limit}
        return report

    async def close(self) -> None:
        for task in list(self._refreshes):
            task.cancel()
        await asyncio.gather(*self._refreshes, return_exceptions=True)
        await self.flush()
        if self.disk is not None:
            self.disk.close()
        self._pool.shutdown(wait=True)
