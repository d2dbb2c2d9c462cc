"""The purge and keepalive jobs: bounds, failures, batching, and the periodic runner.

The close/ping callables are the injection point for the OMERO backend: the tests pass
real async functions that record what porter asked for.
"""

from __future__ import annotations

import asyncio
import logging

import pytest
from aiohttp import web

from auth.lifecycle import PeriodicJob, keepalive, keepalive_job, purge_expired, purge_job
from auth.session_settings import SessionSettings
from auth.session_store import SessionStore
from auth.sessions import SessionRecord
from auth.stores import create_store

IDLE = 600


class Clock:
    def __init__(self) -> None:
        self.now = 1.7e9

    def __call__(self) -> float:
        return self.now


async def no_evictions(server_id: int, key: str) -> None:
    raise AssertionError("nothing is evicted in these tests")


def memory_store(clock: Clock) -> SessionStore:
    settings = SessionSettings(session_idle_timeout=IDLE)
    return create_store(settings, on_evict=no_evictions, clock=clock)


async def logins(store: SessionStore, count: int, server_id: int = 1) -> list[SessionRecord]:
    return [
        await store.create(
            server_id=server_id,
            omero_session_key=f"key-{server_id}-{n}",
            user_id=n,
            user_name=f"u{n}",
        )
        for n in range(count)
    ]


async def test_purge_runs_at_most_concurrency_closes_at_once() -> None:
    clock = Clock()
    store = memory_store(clock)
    await logins(store, 40)
    clock.now += IDLE + 1
    running = 0
    most = 0
    closed: list[str] = []

    async def close(server_id: int, key: str) -> None:
        nonlocal running, most
        running += 1
        most = max(most, running)
        for _ in range(3):
            await asyncio.sleep(0)
        running -= 1
        closed.append(key)

    result = await purge_expired(store, close, concurrency=3)
    assert most == 3
    assert len(set(closed)) == 40
    assert result.closed == 40


async def test_purge_counts_failed_closes_and_goes_on(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    store = memory_store(clock)
    await logins(store, 5, server_id=1)
    await logins(store, 3, server_id=2)
    clock.now += IDLE + 1
    closed: list[str] = []

    async def close(server_id: int, key: str) -> None:
        if server_id == 2:
            raise ConnectionError(f"server 2 down while closing {key}")
        closed.append(key)

    with caplog.at_level(logging.WARNING, logger="porter.auth.lifecycle"):
        result = await purge_expired(store, close)
    assert (result.removed, result.closed, result.failed) == (8, 5, 3)
    assert len(closed) == 5
    assert await store.count() == 0
    assert "ConnectionError" in caplog.text
    assert "key-2-" not in caplog.text  # the OMERO key never reaches a log line


async def test_purge_yields_to_the_event_loop_between_batches() -> None:
    clock = Clock()
    store = memory_store(clock)
    await logins(store, 1000)
    clock.now += IDLE + 1
    ticks = 0
    stop = asyncio.Event()

    async def ticker() -> None:
        nonlocal ticks
        while not stop.is_set():
            ticks += 1
            await asyncio.sleep(0)

    async def close(server_id: int, key: str) -> None:
        return None

    task = asyncio.create_task(ticker())
    result = await purge_expired(store, close, batch_size=100)
    stop.set()
    await task
    assert result.removed == 1000
    assert ticks >= 10  # at least one tick per batch of 100


async def test_failed_ping_keeps_the_session() -> None:
    clock = Clock()
    store = memory_store(clock)
    [record] = await logins(store, 1)
    since = clock.now + 30
    clock.now += 60
    assert await store.get(record.id) is not None

    async def ping(server_id: int, key: str) -> bool:
        raise TimeoutError("OMERO did not answer")

    result = await keepalive(store, ping, since, now=clock.now + 60)
    assert (result.pinged, result.failed, result.ended) == (0, 1, 0)
    assert await store.get(record.id) is not None


async def test_session_used_between_touches_is_still_pinged() -> None:
    clock = Clock()
    store = memory_store(clock)
    [record] = await logins(store, 1)
    clock.now += 60
    assert await store.get(record.id) is not None  # touch: last_seen = t+60
    clock.now += 20
    assert await store.get(record.id) is not None  # within touch interval: not written
    since = clock.now - 5  # the last round ran after the last write of last_seen
    clock.now += 60
    pinged: list[str] = []

    async def ping(server_id: int, key: str) -> bool:
        pinged.append(key)
        return True

    result = await keepalive(store, ping, since, now=clock.now)
    assert pinged == [record.omero_session_key]
    assert result.pinged == 1


async def test_periodic_job_logs_a_failing_round_and_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    calls = 0
    second = asyncio.Event()

    async def run_round() -> str:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("round one breaks")
        second.set()
        return "ok"

    job = PeriodicJob("test job", 0.001, run_round)
    with caplog.at_level(logging.ERROR, logger="porter.auth.lifecycle"):
        job.start()
        await asyncio.wait_for(second.wait(), 10)  # hang guard only
        await job.stop()
    assert job.failures == 1
    assert calls >= 2
    assert "test job failed" in caplog.text


async def test_jobs_start_and_stop_with_the_aiohttp_app() -> None:
    clock = Clock()
    store = memory_store(clock)

    async def close(server_id: int, key: str) -> None:
        return None

    async def ping(server_id: int, key: str) -> bool:
        return True

    settings = SessionSettings(purge_interval=1, ping_interval=1000)
    purge = purge_job(store, close, settings)
    keep = keepalive_job(store, ping, settings, clock=clock)
    assert (purge.interval, keep.interval) == (1, 1.0)
    purge.interval = 0.001

    app = web.Application()
    app.cleanup_ctx.extend([purge.cleanup_ctx, keep.cleanup_ctx])
    runner = web.AppRunner(app)
    await runner.setup()
    while purge.rounds == 0:
        await asyncio.sleep(0.001)
    await runner.cleanup()
    rounds = purge.rounds
    await asyncio.sleep(0.01)
    assert purge.rounds == rounds  # stopped
    assert purge.failures == 0


def test_keepalive_interval_is_read_in_milliseconds() -> None:
    async def ping(server_id: int, key: str) -> bool:
        return True

    job = keepalive_job(memory_store(Clock()), ping, SessionSettings())
    assert job.interval == 60.0


async def test_a_store_outage_is_one_warning_and_its_end_one_info(
    redis_server_factory: object, caplog: pytest.LogCaptureFixture
) -> None:
    from tests.keys import TEST_SEAL
    from tests.redis_fixture import RedisServer, redis_sessions, stopped

    server: RedisServer = redis_server_factory()  # type: ignore[operator]
    settings = redis_sessions(server, redis_timeout=0.2, redis_connect_timeout=0.2)
    store = create_store(settings, on_evict=no_evictions, seal=TEST_SEAL)

    async def purge_round() -> object:
        return await purge_expired(store, no_evictions)

    job = PeriodicJob("session purge", 0.05, purge_round)
    with caplog.at_level(logging.INFO, logger="porter.auth"):
        job.start()
        await asyncio.sleep(0.2)
        with stopped(server):
            while job.failures < 4:  # several rounds meet the outage
                await asyncio.sleep(0.05)
        rounds = job.rounds
        while job.rounds < rounds + 3:
            await asyncio.sleep(0.05)
        await job.stop()
    await store.close()
    mine = [r for r in caplog.records if r.getMessage().startswith("session purge")]
    assert [r.levelname for r in mine] == ["WARNING", "INFO"]
    assert "unavailable" in mine[0].getMessage()
    assert "available again" in mine[1].getMessage()
    assert not [r for r in caplog.records if r.exc_info]  # no traceback, round after round
