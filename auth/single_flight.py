"""One run at a time per key, however many callers wait for it.

    flights: SingleFlight[int, str] = SingleFlight("admin login")
    key = await flights.run(server_id, lambda: login(server_id))
    await flights.close()   # cancels what is still running, and waits for it

Every caller of a key awaits the same task. A caller that goes away (cancelled) never cancels
the run the others wait for. The run's own exception reaches every waiting caller.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Hashable
from typing import Any, Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class SingleFlight(Generic[K, V]):
    """The runs in flight of one kind of work, keyed (one per key at a time)."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._flights: dict[K, asyncio.Task[V]] = {}
        self._closed = False

    def running(self, key: K) -> bool:
        """Whether a run for `key` is in flight now."""
        return key in self._flights

    async def run(self, key: K, work: Callable[[], Coroutine[Any, Any, V]]) -> V:
        """The result of the run in flight for `key`, starting `work()` when there is none.
        Raises RuntimeError after close()."""
        task = self._flights.get(key)
        if task is None:
            if self._closed:
                raise RuntimeError(f"{self._name}: closed")
            task = asyncio.create_task(work(), name=f"{self._name} {key!r}")
            self._flights[key] = task
            task.add_done_callback(lambda done: self._landed(key, done))
        return await asyncio.shield(task)

    def _landed(self, key: K, task: asyncio.Task[V]) -> None:
        if self._flights.get(key) is task:
            del self._flights[key]
        if not task.cancelled():
            task.exception()  # retrieved: a run nobody awaited any more is not "never retrieved"

    async def close(self) -> None:
        """Start no more runs; cancel the ones in flight and wait until they have ended."""
        self._closed = True
        tasks = list(self._flights.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
