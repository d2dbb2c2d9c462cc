"""The mail sender: a bounded queue the request path fills and one background task that empties it.

`submit` never blocks and never raises: a report is deduplicated, then queued; what cannot be
queued or delivered is counted in `counters()` and logged. The task delivers with retries and
exponential backoff, mails digests when dedup windows close, and drains for a bounded time
on `stop`. With `spool_dir`, a mail whose retries ran out (and what is still queued at
shutdown) is kept on disk and delivered when the SMTP server answers again, also by a later
porter process; while the server is known to be down, new mail goes to the spool at once.
Use it as an async context manager in the app's cleanup context:

    async def mail_ctx(app):
        async with app[MAILER]:
            yield
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import Awaitable
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path
from types import TracebackType

import metrics
from mailer.compose import digest_message, report_message
from mailer.dedup import Clock, Decision, Deduplicator, Digest
from mailer.report import Report
from mailer.settings import MailSettings
from mailer.smtp import DeliveryError, deliver
from mailer.spool import MailSpool

log = logging.getLogger("porter.mailer")


@dataclass
class MailCounters:
    """What happened to the reports handed to the sender (for metrics and health)."""

    submitted: int = 0  # reports handed to submit()
    inactive: int = 0  # submitted while mail is disabled or has no admins: not mailed
    folded: int = 0  # repeats counted into a digest instead of mailed
    capped: int = 0  # first occurrences over the hourly cap, counted into a digest
    sent: int = 0  # mails delivered, digests included
    digests_sent: int = 0  # of which digests
    retries: int = 0  # failed attempts tried again
    lost_queue_full: int = 0  # mails dropped because the queue was full
    lost_undeliverable: int = 0  # mails dropped after the last retry or a permanent error
    lost_rate_limited: int = 0  # digests dropped by the hourly cap
    lost_shutdown: int = 0  # mails still queued when the drain at shutdown ended
    spooled: int = 0  # mails kept on disk for later delivery
    spool_delivered: int = 0  # spooled mails delivered later
    lost_spool_full: int = 0  # mails the spool's bounds did not let in

    @property
    def lost(self) -> int:
        """Mails that should have gone out and did not."""
        return (
            self.lost_queue_full
            + self.lost_undeliverable
            + self.lost_rate_limited
            + self.lost_shutdown
            + self.lost_spool_full
        )


for _event in dataclasses.fields(MailCounters):  # every series from the start, at 0
    metrics.MAIL_EVENTS.labels(_event.name)


class MailSender:
    """Queue and background delivery of admin mail. `clock` drives dedup windows (tests)."""

    def __init__(
        self, settings: MailSettings, *, clock: Clock = time.monotonic, tick: float = 1.0
    ) -> None:
        self._settings = settings
        self._dedup = Deduplicator(settings, clock)
        self._queue: asyncio.Queue[Report | Digest] = asyncio.Queue(settings.queue_size)
        self._tick = tick
        self._counters = MailCounters()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._spool = (
            MailSpool(
                Path(settings.spool_dir),
                max_files=settings.spool_max_files,
                max_bytes=settings.spool_max_bytes,
            )
            if settings.spool_dir and settings.active
            else None
        )
        self._smtp_down = False  # the last try failed: new mail goes to the spool at once
        self._next_spool_try = 0.0  # monotonic time

    def counters(self) -> MailCounters:
        """A snapshot of the counters."""
        return dataclasses.replace(self._counters)

    def _count(self, event: str, n: int = 1) -> None:
        """Count `event` (a MailCounters field) here and in porter_admin_mail_events_total."""
        if n:
            setattr(self._counters, event, getattr(self._counters, event) + n)
            metrics.MAIL_EVENTS.labels(event).inc(n)

    @property
    def waiting(self) -> int:
        """Mails queued now."""
        return self._queue.qsize()

    def submit(self, report: Report) -> bool:
        """Hand over a report; True if it will be mailed or counted into a digest.

        Never blocks, never raises. False when mail is inactive, stopping, or the queue is full.
        """
        self._count("submitted")
        if not self._settings.active:
            self._count("inactive")
            return False
        if self._stopping:
            self._count("lost_shutdown")
            metrics.MAILS.labels("dropped").inc()
            log.warning("admin mail lost: sender stopped (request %s)", report.request_id)
            return False
        decision = self._dedup.observe(report)
        if decision is Decision.FOLDED:
            metrics.MAILS.labels("deduplicated").inc()
            self._count("folded")
            return True
        if decision is Decision.CAPPED:
            self._count("capped")
            return True
        return self._enqueue(report, report.request_id)

    def _enqueue(self, item: Report | Digest, label: str) -> bool:
        try:
            self._queue.put_nowait(item)
        except asyncio.QueueFull:
            self._count("lost_queue_full")
            metrics.MAILS.labels("dropped").inc()
            log.warning(
                "admin mail lost: queue full (%d waiting) for %s", self._queue.qsize(), label
            )
            return False
        return True

    def _enqueue_due_digests(self, everything: bool = False) -> None:
        for digest in self._dedup.due(everything):
            if self._dedup.take_slot(digest.fingerprint):
                self._enqueue(digest, f"digest of {digest.fingerprint}")
            else:
                self._count("lost_rate_limited")
                metrics.MAILS.labels("dropped").inc()
                log.warning(
                    "admin mail lost: hourly cap reached, digest of %d for %s dropped",
                    digest.count,
                    digest.fingerprint,
                )

    async def start(self) -> None:
        """Start the background task (once)."""
        if self._task is None:
            self._stopping = False
            self._task = asyncio.create_task(self._run(), name="porter-mailer")

    async def stop(self, drain_timeout: float | None = None) -> None:
        """Mail open digests, deliver what is queued for at most `drain_timeout` s, stop.

        `drain_timeout` defaults to the setting. What is left is counted as lost_shutdown.
        """
        timeout = self._settings.drain_timeout if drain_timeout is None else drain_timeout
        self._stopping = True
        lost_before = self._counters.lost_shutdown
        self._enqueue_due_digests(everything=True)
        task, self._task = self._task, None
        if task is not None:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._queue.join(), timeout)
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        left = 0
        while not self._queue.empty():
            item = self._queue.get_nowait()
            self._queue.task_done()
            if not self._keep(item, "still queued at shutdown"):
                left += 1
        self._count("lost_shutdown", left)
        lost = self._counters.lost_shutdown - lost_before
        if lost:
            log.warning("admin mail lost: %d mail(s) undelivered at shutdown", lost)

    async def __aenter__(self) -> MailSender:
        await self.start()
        return self

    async def __aexit__(
        self,
        _exc_type: type[BaseException] | None,
        _exc: BaseException | None,
        _tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def _run(self) -> None:
        while True:
            self._enqueue_due_digests()
            await self._deliver_spooled()
            try:
                item = await asyncio.wait_for(self._queue.get(), self._tick)
            except asyncio.TimeoutError:
                continue
            try:
                await self._deliver(item)
            except asyncio.CancelledError:
                if not self._keep(item, "interrupted at shutdown"):
                    self._count("lost_shutdown")  # stopped mid-delivery: lost
                    metrics.MAILS.labels("dropped").inc()
                raise
            except Exception as exc:  # a bug must not end the sender; no details: secrets
                self._count("lost_undeliverable")
                metrics.MAILS.labels("dropped").inc()
                log.error("admin mail lost: unexpected %s while delivering", type(exc).__name__)
            finally:
                self._queue.task_done()

    def _compose(self, item: Report | Digest) -> EmailMessage:
        if isinstance(item, Digest):
            return digest_message(item, self._settings)
        return report_message(item, self._settings)

    async def _deliver(self, item: Report | Digest) -> None:
        label = f"digest of {item.fingerprint}" if isinstance(item, Digest) else item.request_id
        try:
            message = self._compose(item)
        except Exception as exc:  # a bug here must not stop the sender; no details: secrets
            self._count("lost_undeliverable")
            metrics.MAILS.labels("dropped").inc()
            log.error("admin mail lost: cannot compose mail for %s (%s)", label, type(exc).__name__)
            return
        if self._smtp_down and self._spool is not None:
            self._spool_message(message, label)
            return
        for attempt in range(self._settings.retries + 1):
            try:
                delivered = await deliver(message, self._settings)
            except DeliveryError as exc:
                if self._given_up(exc, attempt, message, label):
                    return
                delay = min(self._settings.backoff * 2**attempt, self._settings.backoff_max)
                self._count("retries")
                log.warning(
                    "admin mail for %s not delivered (%s); retry in %.1f s",
                    label,
                    exc.reason,
                    delay,
                )
                await asyncio.sleep(delay)
            else:
                self._smtp_down = False
                if delivered.refused:
                    log.warning(
                        "admin mail for %s refused for %s", label, ", ".join(delivered.refused)
                    )
                self._count("sent")
                metrics.MAILS.labels("sent").inc()
                self._count("digests_sent", isinstance(item, Digest))
                return

    def _given_up(
        self, exc: DeliveryError, attempt: int, message: EmailMessage, label: str
    ) -> bool:
        """After a failed attempt: True when it was the last one (the mail spooled, or lost
        and counted), False when it is worth trying again."""
        last = attempt == self._settings.retries
        if exc.transient and last and self._spool is not None:
            self._smtp_down = True
            self._next_spool_try = time.monotonic() + self._settings.spool_retry_interval
            self._spool_message(message, label)
            return True
        if not exc.transient or last:
            self._count("lost_undeliverable")
            metrics.MAILS.labels("dropped").inc()
            log.error(
                "admin mail lost for %s after %d attempt(s): %s", label, attempt + 1, exc.reason
            )
            return True
        return False

    def _keep(self, item: Report | Digest, why: str) -> bool:
        """Spool a queued item that cannot be delivered now; False without a spool."""
        if self._spool is None:
            return False
        try:
            message = self._compose(item)
        except Exception:  # counted lost by the caller; no details: secrets
            return False
        label = f"digest of {item.fingerprint}" if isinstance(item, Digest) else item.request_id
        log.info("admin mail for %s spooled (%s)", label, why)
        return self._spool_message(message, label)

    def _spool_message(self, message: EmailMessage, label: str) -> bool:
        assert self._spool is not None
        if self._spool.put(message):
            self._count("spooled")
            log.warning(
                "admin mail for %s kept in %s until the SMTP server answers",
                label,
                self._spool.directory,
            )
            return True
        self._count("lost_spool_full")
        metrics.MAILS.labels("dropped").inc()
        log.error("admin mail lost for %s: the spool %s is full", label, self._spool.directory)
        return False

    async def _finish_even_if_stopped(self, path: Path, sending: Awaitable[object]) -> None:
        """Await one spooled mail's delivery. Stopped half-way, porter still finishes it
        (the SMTP server may have taken it already: cut off, a later porter would send it
        again), within email_timeout, then drops or returns its claim and stops."""
        assert self._spool is not None
        task = asyncio.ensure_future(sending)
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.shield(task), self._settings.email_timeout)
            if task.done() and not task.cancelled() and task.exception() is None:
                self._spool.remove(path)
                self._count("spool_delivered")
                self._count("sent")
            else:
                task.cancel()
                self._spool.unclaim(path)
            raise

    async def _deliver_spooled(self) -> None:
        """Every `spool_retry_interval`: deliver spooled mail, oldest first, until one fails."""
        if self._spool is None or time.monotonic() < self._next_spool_try:
            return
        self._next_spool_try = time.monotonic() + self._settings.spool_retry_interval
        self._spool.release_stale()
        for queued in self._spool.files():
            path = self._spool.claim(queued)
            if path is None:
                continue  # another process is delivering it
            message = self._spool.read(path)
            if message is None:
                continue
            try:
                await self._finish_even_if_stopped(path, deliver(message, self._settings))
            except DeliveryError as exc:
                if exc.transient:
                    self._smtp_down = True
                    self._spool.unclaim(path)
                    return
                self._count("lost_undeliverable")
                metrics.MAILS.labels("dropped").inc()
                log.error("spooled admin mail %s refused for good: %s", path.name, exc.reason)
            else:
                self._smtp_down = False
                self._count("spool_delivered")
                self._count("sent")
                metrics.MAILS.labels("sent").inc()
            self._spool.remove(path)
