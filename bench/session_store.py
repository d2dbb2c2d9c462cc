"""Session store figures: memory per session, purge of 100k expired sessions, get() cost.

Run: .venv/bin/python -m bench.session_store [--sessions 100000]
Starts its own redis-server (no persistence) on a free loopback port for the Redis figures.
Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import tracemalloc
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator

from auth.lifecycle import purge_expired
from auth.session_settings import SessionSettings
from auth.session_store import SessionStore
from auth.sessions import SessionRecord
from auth.stores import create_store

IDLE = 3600


class Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


async def closed(server_id: int, key: str) -> None:
    return None


async def create(store: SessionStore, n: int) -> SessionRecord:
    return await store.create(
        server_id=1,
        omero_session_key=str(uuid.uuid4()),
        user_id=n,
        user_name=f"user{n:06d}",
        cookies={"sessionid": uuid.uuid4().hex},  # Django session keys: 32 chars
    )


async def fill(store: SessionStore, count: int, parallel: int) -> list[SessionRecord]:
    records: list[SessionRecord] = []
    for start in range(0, count, parallel):
        records += await asyncio.gather(
            *(create(store, n) for n in range(start, min(count, start + parallel)))
        )
    return records


@contextlib.asynccontextmanager
async def stall_meter() -> AsyncIterator[list[float]]:
    """Yields [longest gap seen by a 1 ms ticker, in seconds] (filled in at exit)."""
    result = [0.0]
    running = True

    async def tick() -> None:
        last = time.perf_counter()
        while running:
            await asyncio.sleep(0.001)
            now = time.perf_counter()
            result[0] = max(result[0], now - last)
            last = now

    task = asyncio.create_task(tick())
    await asyncio.sleep(0.002)
    try:
        yield result
    finally:
        running = False
        await task


async def timed_purge(store: SessionStore, clock: Clock, label: str) -> None:
    clock.now += IDLE + 1
    async with stall_meter() as stall:
        start = time.perf_counter()
        result = await purge_expired(store, closed, concurrency=8)
        wall = time.perf_counter() - start
    print(
        f"{label}: purge of {result.removed} expired sessions: {wall:.2f} s wall, "
        f"longest event-loop stall {stall[0] * 1000:.1f} ms"
    )


async def per_get(store: SessionStore, ids: list[str], label: str, rounds: int) -> None:
    get: Callable[[str], Awaitable[SessionRecord | None]] = store.get
    start = time.perf_counter()
    for i in range(rounds):
        await get(ids[i % len(ids)])
    each = (time.perf_counter() - start) / rounds
    print(f"{label}: get() {each * 1e6:.1f} us per call (sequential, {rounds} calls)")


async def memory_figures(count: int) -> None:
    clock = Clock()
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    store = create_store(
        SessionSettings(max_sessions=count, session_idle_timeout=IDLE),
        on_evict=closed,
        clock=clock,
    )
    records = await fill(store, count, 1000)
    ids = [r.id for r in records]
    del records
    gc.collect()
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    # The ids list is the benchmark's (its strings are the store's keys).
    held = after - before - sys.getsizeof(ids)
    print(f"memory: {count} sessions hold {held / 1e6:.1f} MB, {held / count:.0f} bytes/session")
    await per_get(store, ids, "memory", 200_000)
    await timed_purge(store, clock, "memory")
    await store.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def redis_server() -> Iterator[int]:
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("redis-server is not installed (apt-get install redis-server)")
    port = free_port()
    with tempfile.TemporaryDirectory() as directory:
        process = subprocess.Popen(
            [
                binary,
                "--port",
                str(port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                directory,
            ],
            stdout=subprocess.DEVNULL,
        )
        try:
            for _ in range(500):
                with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port)):
                    break
                time.sleep(0.01)
            yield port
        finally:
            process.terminate()
            process.wait()


async def redis_figures(count: int) -> None:
    with redis_server() as port:
        clock = Clock()
        settings = SessionSettings(
            store="redis", redis_url=f"redis://127.0.0.1:{port}/0", session_idle_timeout=IDLE
        )
        store = create_store(settings, on_evict=closed, clock=clock)
        start = time.perf_counter()
        records = await fill(store, count, 200)
        print(
            f"redis: created {count} sessions in {time.perf_counter() - start:.1f} s "
            f"(200 concurrent)"
        )
        ids = [r.id for r in records]
        del records  # hold only what a porter process holds
        gc.collect()
        await per_get(store, ids, "redis", 20_000)
        await timed_purge(store, clock, "redis")
        await store.close()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sessions", type=int, default=100_000)
    args = parser.parse_args()
    await memory_figures(args.sessions)
    await redis_figures(args.sessions)


if __name__ == "__main__":
    asyncio.run(main())
