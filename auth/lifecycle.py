"""Session lifecycle jobs: purge expired sessions and keep used OMERO sessions alive.

The OMERO calls are injected (the proxy passes the backend's):
  close_omero(server_id, omero_session_key) -> None    close that OMERO session on the server
  ping_omero(server_id, omero_session_key) -> bool     keepAlive; False when the OMERO session
                                                       is gone, an exception when it could not
                                                       tell (OMERO down: the session is kept)
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from auth.session_settings import SessionSettings
from auth.session_store import Clock, SessionStore, SessionStoreUnavailable
from auth.sessions import SessionRecord

log = logging.getLogger("porter.auth.lifecycle")

CloseOmero = Callable[[int, str], Awaitable[None]]
# Ends what else a session holds (OMERO.web's own session) before its OMERO session is closed.
EndWeb = Callable[[SessionRecord], Awaitable[object]]
PingOmero = Callable[[int, str], Awaitable[bool]]

BATCH_SIZE = 500
T = TypeVar("T")


@dataclass(frozen=True)
class PurgeResult:
    """What one purge did."""

    removed: int = 0  # expired sessions taken out of the store
    closed: int = 0  # their OMERO sessions closed
    failed: int = 0  # closes that raised (logged; OMERO's idle timeout ends those)
    lost: int = 0  # expired sessions whose close info Redis had already dropped


@dataclass(frozen=True)
class KeepaliveResult:
    """What one keepalive round did."""

    pinged: int = 0  # OMERO sessions kept alive
    ended: int = 0  # porter sessions ended because their OMERO session was gone
    failed: int = 0  # pings that raised (session kept, tried again next round)
    skipped: int = 0  # pinged recently, by this or another porter process


async def purge_expired(
    store: SessionStore,
    close_omero: CloseOmero,
    *,
    concurrency: int = 8,
    batch_size: int = BATCH_SIZE,
    end_web: EndWeb | None = None,
) -> PurgeResult:
    """Remove every expired session and close its OMERO session, `concurrency` at a time.

    Works in batches and yields to the event loop between them. Each session is removed by
    exactly one purger, so concurrent purges (several processes) close each OMERO session once.
    """

    close = _ender(close_omero, end_web, "an expired session")
    removed = closed = lost = 0
    while True:
        batch = await store.pop_expired(batch_size)
        removed += len(batch.records)
        lost += batch.lost
        closed += sum(await _each(batch.records, close, concurrency))
        if not batch.more:
            break
        await asyncio.sleep(0)
    return PurgeResult(removed=removed, closed=closed, failed=removed - closed, lost=lost)


def _ender(
    close_omero: CloseOmero, end_web: EndWeb | None, what: str
) -> Callable[[SessionRecord], Awaitable[bool]]:
    """Ends a removed session's OMERO.web session and OMERO session; False when that failed
    (logged, naming `what`)."""

    async def close(record: SessionRecord) -> bool:
        try:
            if end_web is not None:
                await end_web(record)
            await close_omero(record.server_id, record.omero_session_key)
        except Exception as exc:
            log.warning(
                "closing the OMERO session of %s (user %s, server %s) failed: %s",
                what,
                record.user_name,
                record.server_id,
                type(exc).__name__,
            )
            return False
        return True

    return close


async def end_all(
    records: Sequence[SessionRecord],
    close_omero: CloseOmero,
    *,
    end_web: EndWeb | None = None,
    concurrency: int = 8,
) -> int:
    """End every one of `records` (removed from a store that dies with the process) on
    OMERO.web and OMERO, `concurrency` at a time; how many were closed."""
    close = _ender(close_omero, end_web, "a session at shutdown")
    return sum(await _each(records, close, concurrency))


async def keepalive(
    store: SessionStore,
    ping_omero: PingOmero,
    since: float,
    *,
    now: float | None = None,
    concurrency: int = 8,
    batch_size: int = BATCH_SIZE,
) -> KeepaliveResult:
    """Ping the OMERO session of every session used since `since` (the previous round).

    A session pinged in the last three quarters of the round's interval (by another porter
    process sharing the store) is skipped; of processes racing, one pings. A ping answering
    False ends porter's session.
    """
    now = time.time() if now is None else now
    recent = now - 0.75 * (now - since)
    counts = {"pinged": 0, "ended": 0, "failed": 0, "skipped": 0}

    async def ping(record: SessionRecord) -> str:
        if record.last_pinged > recent:
            return "skipped"
        if not await store.mark_pinged(record.id, record.last_pinged):
            return "skipped"  # another process claimed this round's ping
        try:
            alive = await ping_omero(record.server_id, record.omero_session_key)
        except Exception as exc:
            log.warning(
                "keepalive of user %s on server %s failed: %s",
                record.user_name,
                record.server_id,
                type(exc).__name__,
            )
            return "failed"
        if alive:
            return "pinged"
        await store.delete(record.id)
        log.info("session of user %s ended: its OMERO session is gone", record.user_name)
        return "ended"

    # last_seen lags the last request by up to touch_interval: widen the window by as much.
    window = since - store.timeouts.touch_interval
    async for batch in store.used_since(window, batch_size):
        for outcome in await _each(batch, ping, concurrency):
            counts[outcome] += 1
        await asyncio.sleep(0)
    return KeepaliveResult(**counts)


async def _each(
    records: Sequence[SessionRecord],
    action: Callable[[SessionRecord], Awaitable[T]],
    concurrency: int,
) -> list[T]:
    """`action` on every record, `concurrency` at a time, by that many workers (few tasks)."""
    pending = iter(records)
    results: list[T] = []

    async def worker() -> None:
        for record in pending:  # shared: each record goes to one worker
            results.append(await action(record))

    await asyncio.gather(*(worker() for _ in range(min(concurrency, len(records)))))
    return results


class PeriodicJob:
    """Runs `run_round()` every `interval` seconds in a background task.

    A failing round is logged and the loop goes on. Use `cleanup_ctx` with aiohttp:
    `app.cleanup_ctx.append(job.cleanup_ctx)`.
    """

    def __init__(
        self, name: str, interval: float, run_round: Callable[[], Awaitable[object]]
    ) -> None:
        self.name = name
        self.interval = interval
        self.rounds = 0  # finished rounds, failed ones included
        self.failures = 0
        self._run_round = run_round
        self._task: asyncio.Task[None] | None = None
        self._store_down = False  # said once when the store goes, once when it is back

    def start(self) -> None:
        """Start the loop (needs a running event loop)."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._loop(), name=self.name)

    async def stop(self) -> None:
        """Cancel the loop and wait until it has stopped."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def cleanup_ctx(self, app: object) -> AsyncIterator[None]:
        """aiohttp cleanup context: started with the app, stopped with it."""
        self.start()
        yield
        await self.stop()

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                result = await self._run_round()
            except SessionStoreUnavailable as exc:
                self.failures += 1
                if not self._store_down:
                    self._store_down = True
                    log.warning(
                        "%s: the session store is unavailable (%s); trying every %g s",
                        self.name,
                        exc,
                        self.interval,
                    )
            except Exception:
                self.failures += 1
                log.exception("%s failed; trying again in %s s", self.name, self.interval)
            else:
                if self._store_down:
                    self._store_down = False
                    log.info("%s: the session store is available again", self.name)
                log.debug("%s: %s", self.name, result)
            self.rounds += 1


def purge_job(
    store: SessionStore,
    close_omero: CloseOmero,
    settings: SessionSettings,
    end_web: EndWeb | None = None,
) -> PeriodicJob:
    """The purge, every `purge_interval` seconds."""

    async def run_round() -> PurgeResult:
        return await purge_expired(
            store, close_omero, concurrency=settings.lifecycle_concurrency, end_web=end_web
        )

    return PeriodicJob("session purge", settings.purge_interval, run_round)


def keepalive_job(
    store: SessionStore,
    ping_omero: PingOmero,
    settings: SessionSettings,
    *,
    clock: Clock = time.time,
) -> PeriodicJob:
    """The keepalive, every `ping_interval` milliseconds (OMERO.web's unit)."""
    since = clock()

    async def run_round() -> KeepaliveResult:
        nonlocal since
        now = clock()
        result = await keepalive(
            store, ping_omero, since, now=now, concurrency=settings.lifecycle_concurrency
        )
        since = now
        return result

    return PeriodicJob("session keepalive", settings.ping_interval / 1000, run_round)
