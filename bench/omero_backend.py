"""OMERO backend figures against the OMERO test server (real Ice, SSL endpoint).

Run: .venv/bin/python -m bench.omero_backend [--logins 300]
Prints login and join latency (p50/p99) and logins per second through porter's backend and
through raw omero.gateway.BlitzGateway.connect in the same run, then concurrent logins beyond
the thread pool (they queue; failures are counted). Asserts nothing.

Every login here is a complete cycle: connect, create the session, read the event context,
detach, and tear the client down (BlitzGateway: close(hard=False), which does the same).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import statistics
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor

from auth.omero_backend import OmeroBackend
from auth.omero_errors import OmeroError
from auth.omero_settings import OmeroSettings
from tests.omero_sim.fixture import OmeroSim, start_sim, stop_sim

USER = "alice"


def pct(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def line(label: str, samples: list[float], wall: float) -> None:
    print(
        f"  {label:<44} p50 {pct(samples, 0.5) * 1000:6.1f} ms   "
        f"p99 {pct(samples, 0.99) * 1000:6.1f} ms   {len(samples) / wall:7.1f} /s"
    )


def gateway_login(sim: OmeroSim, password: str) -> str:
    from omero.gateway import BlitzGateway

    conn = BlitzGateway(
        USER, password, host=sim.host, port=sim.ssl_port, secure=True, useragent="bench"
    )
    try:
        if not conn.connect():
            raise RuntimeError("BlitzGateway.connect failed")
        conn.getEventContext()
        return str(conn.c.getSessionId())
    finally:
        conn.close(hard=False)  # detach: the session stays, as porter's login leaves it


def gateway_join(sim: OmeroSim, key: str) -> None:
    from omero.gateway import BlitzGateway

    conn = BlitzGateway(host=sim.host, port=sim.ssl_port, secure=True, useragent="bench")
    try:
        if not conn.connect(sUuid=key):
            raise RuntimeError("BlitzGateway join failed")
        conn.getEventContext()
    finally:
        conn.close(hard=False)


def timed_sync(count: int, call: Callable[[], object]) -> tuple[list[float], float]:
    samples: list[float] = []
    start = time.perf_counter()
    for _ in range(count):
        t = time.perf_counter()
        call()
        samples.append(time.perf_counter() - t)
    return samples, time.perf_counter() - start


def threaded(count: int, threads: int, call: Callable[[], object]) -> tuple[list[float], float]:
    def one(_: int) -> float:
        t = time.perf_counter()
        call()
        return time.perf_counter() - t

    start = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        samples = list(pool.map(one, range(count)))
    return samples, time.perf_counter() - start


async def timed_async(
    count: int, concurrency: int, call: Callable[[], Awaitable[object]]
) -> tuple[list[float], float, int]:
    """Latencies (queueing included), wall time and failures of `count` calls."""
    samples: list[float] = []
    failures = 0
    gate = asyncio.Semaphore(concurrency)

    async def one() -> None:
        nonlocal failures
        async with gate:
            t = time.perf_counter()
            try:
                await call()
            except OmeroError:
                failures += 1
            samples.append(time.perf_counter() - t)

    start = time.perf_counter()
    await asyncio.gather(*(one() for _ in range(count)))
    return samples, time.perf_counter() - start, failures


def settings(sim: OmeroSim, pool_size: int) -> OmeroSettings:
    return OmeroSettings(
        server_list=((sim.host, sim.ssl_port, "sim"),), pool_size=pool_size, call_timeout=30.0
    )


async def run(sim: OmeroSim, logins: int) -> None:
    password = sim.users[USER]
    print(
        f"OMERO test server, SSL endpoint; {logins} calls per row; "
        f"latency per call, queueing included"
    )

    print("sequential (one call at a time):")
    async with OmeroBackend(settings(sim, 8)) as backend:
        key = (await backend.login(1, USER, password)).session_key
        samples, wall, _ = await timed_async(logins, 1, lambda: backend.login(1, USER, password))
        line("porter backend login", samples, wall)
        samples, wall = timed_sync(logins, lambda: gateway_login(sim, password))
        line("raw BlitzGateway.connect login", samples, wall)
        samples, wall, _ = await timed_async(logins, 1, lambda: backend.join(1, key))
        line("porter backend join", samples, wall)
        samples, wall = timed_sync(logins, lambda: gateway_join(sim, key))
        line("raw BlitzGateway.connect(sUuid) join", samples, wall)

        print("concurrent (8 callers, pool 8):")
        samples, wall, failed = await timed_async(
            logins, 8, lambda: backend.login(1, USER, password)
        )
        line(f"porter backend login ({failed} failed)", samples, wall)
        samples, wall = threaded(logins, 8, lambda: gateway_login(sim, password))
        line("raw BlitzGateway.connect login, 8 threads", samples, wall)

    for pool, callers in ((4, 50), (4, 200)):
        sim.reset()
        async with OmeroBackend(settings(sim, pool)) as backend:
            samples, wall, failed = await timed_async(
                callers, callers, lambda: backend.login(1, USER, password)
            )
        print(
            f"{callers} concurrent logins, pool {pool}: {failed} failed, "
            f"{sim.stats()['logins']} sessions created, all done in {wall * 1000:.0f} ms, "
            f"p50 {pct(samples, 0.5) * 1000:.0f} ms, max {max(samples) * 1000:.0f} ms "
            f"(mean {statistics.mean(samples) * 1000:.0f} ms)"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--logins", type=int, default=300)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)  # omero.gateway logs every connect at INFO
    sim = start_sim()
    try:
        asyncio.run(run(sim, args.logins))
    finally:
        stop_sim(sim)


if __name__ == "__main__":
    main()
