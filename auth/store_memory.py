"""The embedded session store: one process, bounded, in memory (cachetools)."""

from __future__ import annotations

import asyncio
import heapq
import inspect
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import replace

from cachetools import Cache, LRUCache

from auth.session_store import Clock, ExpiredBatch, OnEvict, SessionTimeouts
from auth.sessions import SessionRecord, cookie_pairs, is_session_id

log = logging.getLogger("porter.auth.sessions")


class _EvictingLRU(LRUCache[str, SessionRecord]):
    """An LRU cache that reports the sessions it drops when full."""

    def __init__(self, maxsize: int, evicted: Callable[[SessionRecord], None]) -> None:
        super().__init__(maxsize)
        self._evicted = evicted

    def popitem(self) -> tuple[str, SessionRecord]:
        key, record = super().popitem()
        self._evicted(record)
        return key, record

    def peek(self, key: str) -> SessionRecord | None:
        """The record without marking it recently used."""
        try:
            return Cache.__getitem__(self, key)
        except KeyError:
            return None


class MemorySessionStore:
    """Sessions in this process's memory; at most `max_sessions`, least recently used evicted.

    An evicted session's OMERO session is closed by `on_evict(server_id, key)`, run as a task
    (at most `evict_concurrency` at once) so eviction never waits on OMERO. Expired sessions
    are invisible at once and stay until the purge (`pop_expired`) removes them.
    """

    def __init__(
        self,
        *,
        max_sessions: int,
        timeouts: SessionTimeouts,
        on_evict: OnEvict,
        clock: Clock = time.time,
        evict_concurrency: int = 8,
        end_web: Callable[[SessionRecord], Awaitable[object]] | None = None,
    ) -> None:
        """`end_web(record)`: ends what else an evicted session holds (OMERO.web's own
        session), before `on_evict` closes its OMERO session."""
        self._cache = _EvictingLRU(max_sessions, self._schedule_close)
        self._end_web = end_web
        # (deadline, id) with lazy updates: an entry popped early is pushed back at its
        # record's current deadline, so touching a session never touches the heap.
        self._deadlines: list[tuple[float, str]] = []
        self._timeouts = timeouts
        self._on_evict = on_evict
        self._clock = clock
        self._evict_slots = asyncio.Semaphore(evict_concurrency)
        self._closing: set[asyncio.Task[None]] = set()

    @property
    def timeouts(self) -> SessionTimeouts:
        return self._timeouts

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
        record = SessionRecord.new(
            self._clock(),
            server_id=server_id,
            omero_session_key=omero_session_key,
            user_id=user_id,
            user_name=user_name,
            kind=kind,
            cookies=cookies,
        )
        self._cache[record.id] = record
        heapq.heappush(self._deadlines, (self._timeouts.deadline(record), record.id))
        return record

    async def get(self, session_id: str) -> SessionRecord | None:
        if not is_session_id(session_id):
            return None
        record = self._cache.get(session_id)
        now = self._clock()
        if record is None or self._timeouts.deadline(record) <= now:
            return None
        if now - record.last_seen >= self._timeouts.touch_interval:
            record = replace(record, last_seen=now)
            self._cache[session_id] = record
        return record

    async def update_cookies(
        self, session_id: str, changes: Mapping[str, str | None]
    ) -> SessionRecord | None:
        record = self._live(session_id)
        if record is None:
            return None
        cookies = dict(record.cookies)
        for name, value in changes.items():
            if value is None:
                cookies.pop(name, None)
            else:
                cookies[name] = value
        record = replace(record, cookie_pairs=cookie_pairs(cookies))
        self._cache[session_id] = record
        return record

    async def delete(self, session_id: str) -> SessionRecord | None:
        return self._cache.pop(session_id, None)

    def pop_all(self) -> list[SessionRecord]:
        """Remove every session (at shutdown: they die with this process)."""
        records = [r for r in (self._cache.peek(i) for i in list(self._cache)) if r is not None]
        for record in records:  # by key: clear() would pop them as evictions, closed twice
            self._cache.pop(record.id, None)
        self._deadlines.clear()
        return records

    async def pop_expired(self, limit: int) -> ExpiredBatch:
        now = self._clock()
        heap = self._deadlines
        expired: list[SessionRecord] = []
        # Bound the work of one call (stale and rescheduled entries count) to keep it short.
        for _ in range(limit * 4):
            if not heap or heap[0][0] > now or len(expired) >= limit:
                break
            _, session_id = heapq.heappop(heap)
            record = self._cache.peek(session_id)
            if record is None:
                continue  # deleted or evicted since
            deadline = self._timeouts.deadline(record)
            if deadline > now:
                heapq.heappush(heap, (deadline, session_id))  # used since: reschedule
                continue
            del self._cache[session_id]
            expired.append(record)
        more = bool(heap) and heap[0][0] <= now
        return ExpiredBatch(tuple(expired), more=more)

    async def used_since(
        self, since: float, batch_size: int = 500
    ) -> AsyncIterator[list[SessionRecord]]:
        ids = list(self._cache)  # snapshot: the cache changes while the caller awaits
        for start in range(0, len(ids), batch_size):
            now = self._clock()
            batch = []
            for session_id in ids[start : start + batch_size]:
                record = self._cache.peek(session_id)
                if (
                    record is not None
                    and record.last_seen >= since
                    and self._timeouts.deadline(record) > now
                ):
                    batch.append(record)
            if batch:
                yield batch

    async def mark_pinged(self, session_id: str, previous: float) -> bool:
        record = self._cache.peek(session_id)
        if record is None or record.last_pinged != previous:
            return False
        self._cache[session_id] = replace(record, last_pinged=self._clock())
        return True

    async def count(self) -> int:
        return len(self._cache)

    async def close(self) -> None:
        if self._closing:
            await asyncio.gather(*self._closing, return_exceptions=True)

    def _live(self, session_id: str) -> SessionRecord | None:
        record = self._cache.peek(session_id)
        if record is None or self._timeouts.deadline(record) <= self._clock():
            return None
        return record

    def _schedule_close(self, record: SessionRecord) -> None:
        # Called from inside cachetools (sync): start the close, never wait for it here.
        task = asyncio.get_running_loop().create_task(self._close_evicted(record))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def _close_evicted(self, record: SessionRecord) -> None:
        server_id = record.server_id
        async with self._evict_slots:
            try:
                if self._end_web is not None:
                    await self._end_web(record)
                result = self._on_evict(server_id, record.omero_session_key)
                if inspect.isawaitable(result):
                    await result
            except Exception as exc:
                log.warning(
                    "closing an evicted session on server %s failed: %s",
                    server_id,
                    type(exc).__name__,
                )
