"""No Ice communicator, thread or socket outlives a backend call ("too many open files").

Counts are taken after one warm-up call: the first omero-py call in a process loads IceSSL and
OpenSSL once for good, which is not a per-call leak. After that, open file descriptors and
threads (Python's and the OS's, which include Ice's C++ threads) must come back to the
baseline exactly: every call destroys its communicator synchronously, which joins its threads
and closes its sockets before the call returns.
"""

from __future__ import annotations

import asyncio
import gc
import os
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable

from auth.omero_backend import OmeroBackend
from auth.omero_errors import InvalidCredentials, OmeroError, ServerUnavailable, SessionGone
from auth.omero_settings import OmeroSettings
from tests.omero_sim.fixture import OmeroSim, start_sim, stop_sim

LOGINS = 1000
CONCURRENCY = 8


def resources() -> tuple[int, int, int]:
    """(open file descriptors, Python threads, OS threads) of this process."""
    return (
        len(os.listdir("/proc/self/fd")),
        threading.active_count(),
        len(os.listdir("/proc/self/task")),
    )


async def settled() -> tuple[int, int, int]:
    """resources() once every OS thread is a live Python thread (or after 5 s): a thread
    that Python has joined may still be leaving the kernel's task list for a moment, and
    Ice's threads are not Python threads, so any left would show here. Garbage of earlier
    tests (an unclosed socket) is collected first, so its closing cannot count here."""
    gc.collect()
    deadline = time.monotonic() + 5.0
    while True:
        now = resources()
        if now[1] == now[2] or time.monotonic() > deadline:
            return now
        await asyncio.sleep(0.02)


def settings_for(sim: OmeroSim, pool_size: int = 4) -> OmeroSettings:
    return OmeroSettings(
        server_list=((sim.host, sim.ssl_port, "ssl"), (sim.tcp_url, sim.tcp_port, "tcp")),
        pool_size=pool_size,
        call_timeout=10.0,
    )


async def run_many(count: int, call: Callable[[int], Awaitable[object]]) -> None:
    gate = asyncio.Semaphore(CONCURRENCY)

    async def one(i: int) -> None:
        async with gate:
            await call(i)

    await asyncio.gather(*(one(i) for i in range(count)))


async def test_a_thousand_logins_leave_no_descriptor_or_thread_behind(
    omero_sim: OmeroSim,
) -> None:
    password = omero_sim.users["alice"]
    warm = OmeroBackend(settings_for(omero_sim))
    await warm.login(1, "alice", password)
    await warm.aclose()
    baseline = await settled()

    backend = OmeroBackend(settings_for(omero_sim))
    await run_many(2 * 4, lambda i: backend.login(1 + i % 2, "alice", password))  # fill pool
    with_pool = await settled()
    started = time.monotonic()
    await run_many(LOGINS, lambda i: backend.login(1 + i % 2, "alice", password))
    elapsed = time.monotonic() - started
    during = await settled()
    await backend.aclose()
    after = await settled()

    print(
        f"{LOGINS} logins (SSL and TCP alternating, {CONCURRENCY} at a time, pool 4): "
        f"{elapsed:.1f} s; fds/threads/tasks baseline {baseline}, with pool {with_pool}, "
        f"after logins {during}, after close {after}"
    )
    assert omero_sim.stats()["logins"] == LOGINS + 1 + 8
    assert during == with_pool  # nothing grows while the pool lives
    assert after == baseline  # and nothing is left once it is closed


async def test_failing_calls_leave_no_descriptor_or_thread_behind() -> None:
    sim = start_sim()  # private: it is taken down below
    try:
        warm = OmeroBackend(settings_for(sim))
        await warm.login(1, "alice", sim.users["alice"])
        await warm.aclose()
        baseline = await settled()

        backend = OmeroBackend(settings_for(sim))

        failures: Counter[str] = Counter()

        def failing(
            error: type[OmeroError], call: Callable[[int], Awaitable[object]]
        ) -> Callable[[int], Awaitable[None]]:
            async def run(i: int) -> None:
                try:
                    await call(i)
                except error:
                    failures[error.__name__] += 1

            return run

        await run_many(
            200,
            failing(InvalidCredentials, lambda i: backend.login(1 + i % 2, "alice", "wrong-pass")),
        )
        await run_many(
            200,
            failing(
                SessionGone, lambda i: backend.join(1 + i % 2, f"00000000-0000-4000-8000-{i:012d}")
            ),
        )
        sim.down()
        await run_many(
            200,
            failing(ServerUnavailable, lambda i: backend.login(1 + i % 2, "alice", "alice-pass")),
        )
        await backend.aclose()
        after = await settled()
    finally:
        stop_sim(sim)
    print(f"600 failing calls: fds/threads/tasks baseline {baseline}, after {after}")
    assert failures == {"InvalidCredentials": 200, "SessionGone": 200, "ServerUnavailable": 200}
    assert after == baseline
