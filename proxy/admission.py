"""Admission to OMERO.web by class: a few slots, users first.

OMERO.web answers a handful of requests at once (gunicorn workers x threads); whatever is sent
beyond that queues in gunicorn, first come first served, where a logged-in user's request
waits behind every crawler's. Porter keeps that queue itself instead, where it can choose:

- `slots` is OMERO.web's concurrency (this process's part of it); the public principal holds
  at most `public_max` of them, so OMERO.web's own queue stays empty;
- users (logged in or token) may also use `headroom` slots on top: their request then goes
  to the head of OMERO.web's queue and takes the next thread that frees, while OMERO.web
  stays busy with public work;
- a free slot goes to a waiting user before any public request;
- a request that waits longer than `timeout` is refused (503 with Retry-After).

Cache hits, porter's own pages and refusals never take a slot.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections import deque
from collections.abc import AsyncIterator
from typing import Literal

import metrics
from porter_errors import Unavailable

SlotClass = Literal["user", "public"]


class Overloaded(Unavailable):
    """No slot within the wait bound: 503, Retry-After `retry_after` seconds."""

    def __init__(self, retry_after: int) -> None:
        super().__init__(
            f"no slot to OMERO.web within the wait bound (retry after {retry_after} s)"
        )
        self.retry_after = retry_after


class Admission:
    """The slots of one porter process."""

    def __init__(self, slots: int, user_share: float, public_share: float, timeout: float):
        self.slots = slots
        self.headroom = math.ceil(slots * user_share)
        self.public_max = max(1, min(slots, math.ceil(slots * public_share)))
        self.timeout = timeout
        self.busy: dict[SlotClass, int] = {"user": 0, "public": 0}
        self._waiting: dict[SlotClass, deque[asyncio.Future[None]]] = {
            "user": deque(),
            "public": deque(),
        }

    def waiting(self, kind: SlotClass) -> int:
        return sum(not f.done() for f in self._waiting[kind])

    def _free_for(self, kind: SlotClass) -> bool:
        total = self.busy["user"] + self.busy["public"]
        if kind == "user":
            return total < self.slots + self.headroom
        return self.busy["public"] < self.public_max and total < self.slots

    @contextlib.asynccontextmanager
    async def slot(self, kind: SlotClass) -> AsyncIterator[None]:
        """Hold a slot of class `kind` for the block; Overloaded past the wait bound."""
        await self._take(kind)
        try:
            yield
        finally:
            self.busy[kind] -= 1
            self._wake()
            metrics.SLOTS_BUSY.labels(kind).dec()

    async def _take(self, kind: SlotClass) -> None:
        ahead = self._waiting["user"] or (kind == "public" and self._waiting["public"])
        if not ahead and self._free_for(kind):
            self.busy[kind] += 1
            metrics.SLOTS_BUSY.labels(kind).inc()
            return
        turn: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting[kind].append(turn)
        metrics.SLOTS_WAITING.labels(kind).inc()
        started = time.monotonic()
        try:
            await asyncio.wait_for(turn, self.timeout)  # granted: busy counted by _wake
        except asyncio.TimeoutError:
            metrics.LIMIT_REFUSALS.labels("wait").inc()
            raise Overloaded(max(1, math.ceil(self.timeout))) from None
        finally:
            metrics.SLOTS_WAITING.labels(kind).dec()
            metrics.SLOT_WAIT_SECONDS.labels(kind).observe(time.monotonic() - started)
            with contextlib.suppress(ValueError):
                self._waiting[kind].remove(turn)

    def _wake(self) -> None:
        """Give free slots to waiters: users first, then the public principal."""
        kinds: tuple[SlotClass, ...] = ("user", "public")
        for kind in kinds:
            queue = self._waiting[kind]
            while queue and self._free_for(kind):
                turn = queue.popleft()
                if turn.done():  # gave up (timed out, client gone)
                    continue
                self.busy[kind] += 1
                metrics.SLOTS_BUSY.labels(kind).inc()
                turn.set_result(None)
            if self._waiting["user"]:
                return  # users still wait: nothing for the public principal
