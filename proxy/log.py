"""Porter's log lines, text or JSON: the access line of every request and porter's own lines,
formatted and written on a thread of their own (never on the event loop).

The access line is logged as one `AccessLine` object: building it is all the event loop
does; the listener's thread renders it. It never holds a query string, a cookie, a header
value or a token: only the fields below.
"""

from __future__ import annotations

import json
import logging
import logging.handlers
import os
import queue
import threading
import time
from typing import Any

ACCESS_FIELDS = (
    "rid",  # request id (X-Request-Id)
    "client",  # the client address (behind trusted proxies: the first untrusted hop)
    "method",
    "path",  # as requested, without the query
    "status",
    "bytes",  # body bytes sent (None: not known, e.g. a websocket)
    "duration_ms",
    "upstream_ms",  # time to OMERO.web's response headers (None: not forwarded)
    "kind",  # user, token, public, porter (its own pages), denied, bad_request
    "user",  # the OMERO user name (None: nobody yet)
    "rule",  # the public-rule decision's rule (None: porter's own page)
    "cache",  # HIT, MISS, STALE (None: not a cached path)
)


class AccessLine:
    """One request's access fields; rendered only by the formatter, on the log thread."""

    __slots__ = ("values",)

    def __init__(self, *values: Any) -> None:
        self.values = values

    def fields(self) -> dict[str, Any]:
        return dict(zip(ACCESS_FIELDS, self.values, strict=True))

    def __str__(self) -> str:
        """Combined-log-like text: client user "METHOD path" status bytes, then porter's own
        fields as key=value (rendered on the log thread: kept cheap, it holds the GIL)."""
        rid, client, method, path, status, size, ms, up, kind, user, rule, cache = self.values
        upstream = "-" if up is None else f"{up:.1f}ms"
        return (
            f'{client} {user or "-"} "{method} {path}" {status} {"-" if size is None else size} '
            f"{ms:.1f}ms up={upstream} kind={kind} rule={rule or '-'} cache={cache or '-'} "
            f"rid={rid}"
        )


ACCESS_LOGGER = "porter.access"


class AccessLog:
    """Where access lines go. Under `configure_logging` straight onto the log queue, with the
    time they were made: the listener's thread makes the LogRecord, so the event loop pays a
    queue put, not the logging machinery (a LogRecord, handler lookups, locks). Without it
    (tests, an embedding application) through the standard logger, as any other line."""

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[Any] | None = None
        self._logger = logging.getLogger(ACCESS_LOGGER)

    def attach(self, records: queue.SimpleQueue[Any]) -> None:
        self._queue = records

    def detach(self, records: queue.SimpleQueue[Any]) -> None:
        """Back to the standard logger, unless another queue was attached since."""
        if self._queue is records:
            self._queue = None

    def write(self, line: AccessLine) -> None:
        if not self._logger.isEnabledFor(logging.INFO):  # e.g. log_level = warning
            return
        records = self._queue
        if records is None:
            self._logger.info("%s", line)
        else:
            records.put((time.time(), line))


ACCESS = AccessLog()


def access_record(created: float, line: AccessLine) -> logging.LogRecord:
    """The LogRecord of an access line put on the queue at `created` (on the log thread)."""
    record = logging.LogRecord(ACCESS_LOGGER, logging.INFO, "", 0, "%s", (line,), None)
    record.created = created
    record.msecs = (created - int(created)) * 1000
    return record


def _milliseconds(created: float) -> int:
    return int((created - int(created)) * 1000)  # as LogRecord.msecs


class _Text(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s %(message)s")
        self._second = -1
        self._stamp = ""

    def formatTime(self, record: logging.LogRecord, _datefmt: str | None = None) -> str:
        return self._time(record.created)

    def _time(self, created: float) -> str:
        """logging's own "2026-12-03 13:58:01,123", the date part made once a second (the
        log thread formats thousands of lines a second under load)."""
        second = int(created)
        if second != self._second:
            self._second = second
            self._stamp = time.strftime(self.default_time_format, self.converter(created))
        return f"{self._stamp},{_milliseconds(created):03d}"

    def format_access(self, created: float, line: AccessLine) -> str:
        """What format() makes of an access line's record, without the record."""
        return f"{self._time(created)} INFO {ACCESS_LOGGER} {line}"


class _Json(logging.Formatter):
    """One JSON object per line: time, level, logger, then the access fields or message."""

    def __init__(self) -> None:
        super().__init__()
        self._pid = os.getpid()  # records do not carry it (logging.logProcesses is off)

    def _head(self, created: float, level: str, logger: str) -> dict[str, Any]:
        return {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created))
            + f".{_milliseconds(created):03d}Z",
            "level": level,
            "logger": logger,
            "pid": self._pid,  # which worker
        }

    def format(self, record: logging.LogRecord) -> str:
        line = self._head(record.created, record.levelname, record.name)
        args = record.args
        if isinstance(args, tuple) and len(args) == 1 and isinstance(args[0], AccessLine):
            line.update(args[0].fields())
        else:
            line["message"] = record.getMessage()
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False, default=str)

    def format_access(self, created: float, line: AccessLine) -> str:
        """What format() makes of an access line's record, without the record."""
        head = self._head(created, "INFO", ACCESS_LOGGER)
        head.update(line.fields())
        return json.dumps(head, ensure_ascii=False, default=str)


def formatter(kind: str) -> logging.Formatter:
    return _Json() if kind == "json" else _Text()


FLOOD_INTERVAL = 10.0  # seconds a repeated warning's repeats are counted, not written


class _Burst:
    __slots__ = ("first", "last", "level", "logger", "repeats", "since", "started", "total")

    def __init__(self, record: logging.LogRecord, now: float) -> None:
        self.first = record.getMessage()
        self.level = record.levelno
        self.logger = record.name
        self.started = self.since = self.last = now
        self.repeats = 0  # in this interval
        self.total = 1  # since the burst began, the first line included


class FloodGate:
    """Repeated warnings and errors, per cause (logger, level and message template): the first
    line of a burst is written and its repeats counted; each interval with repeats writes one
    summary ("...: 4823 more in the last 10 s"), and a cause quiet for a whole interval writes
    one INFO that it cleared, with its total. So an outage writes tens of lines, not one per
    failed request, and the counts still add up. Access lines and anything under WARNING
    pass untouched."""

    def __init__(self, interval: float = FLOOD_INTERVAL, clock: Any = time.monotonic) -> None:
        self.interval = interval
        self._clock = clock
        self._bursts: dict[tuple[str, int, str], _Burst] = {}

    def admit(self, record: logging.LogRecord) -> bool:
        """True when `record` is to be written."""
        if not logging.WARNING <= record.levelno < logging.CRITICAL:
            return True
        key = (record.name, record.levelno, str(record.msg))
        burst = self._bursts.get(key)
        now = self._clock()
        if burst is None:
            if len(self._bursts) < 10_000:  # bounded whatever the variety of messages
                self._bursts[key] = _Burst(record, now)
            return True
        burst.repeats += 1
        burst.total += 1
        burst.last = now
        return False

    def due(self, everything: bool = False) -> list[logging.LogRecord]:
        """The summaries and all-clear lines whose time has come (`everything`: the repeats
        not yet told, at once, as porter stops)."""
        now = self._clock()
        out: list[logging.LogRecord] = []
        for key, burst in list(self._bursts.items()):
            if now - burst.since < self.interval and not (everything and burst.repeats):
                continue
            if burst.repeats:
                out.append(
                    _record(
                        burst.logger,
                        burst.level,
                        "%s: %d more in the last %.0f s",
                        (burst.first, burst.repeats, now - burst.since),
                    )
                )
                burst.repeats = 0
                burst.since = now
            elif now - burst.last >= self.interval:
                del self._bursts[key]
                if burst.total > 1:
                    out.append(
                        _record(
                            burst.logger,
                            logging.INFO,
                            "cleared: %s (%d in all over %.0f s)",
                            (burst.first, burst.total, burst.last - burst.started),
                        )
                    )
        return out


def _record(name: str, level: int, msg: str, args: tuple[Any, ...]) -> logging.LogRecord:
    return logging.LogRecord(name, level, "", 0, msg, args, None)


class _DeferredQueueHandler(logging.handlers.QueueHandler):
    """Puts records on the queue as they are: formatting (and writing) happen on the
    listener's thread, never on the event loop. Porter's log arguments are plain values."""

    def prepare(self, record: logging.LogRecord) -> logging.LogRecord:
        return record


BATCH = 4096  # most records written with one write() call
GATHER = 0.05  # seconds a first record waits for the rest of its burst


# What the log queue carries: a record, AccessLog.write's (time, line), or stop()'s None.
Queued = logging.LogRecord | tuple[float, Any] | None


class LogWriter:
    """The log thread: takes every record waiting on the queue at once, formats them, and
    writes them with one write and one flush: one system call for a burst of lines, not one
    per line (the thread holds the GIL the event loop needs while it works).

    Its own small thread over the queue, not logging's QueueListener: that one's batching
    would need its private `_monitor` overridden, which a Python release may change."""

    def __init__(
        self,
        records: queue.SimpleQueue[Any],
        output: logging.StreamHandler[Any],
        gate: FloodGate | None = None,
    ):
        self._records = records
        self._output = output
        self._gate = gate or FloodGate()
        self._next_watch = 0.0
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="porter-log", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Write every line logged so far, then end the thread (access lines from now on
        go through the standard logger)."""
        ACCESS.detach(self._records)
        if self._thread is not None:
            self._records.put(None)
            self._thread.join()
            self._thread = None

    def _access(self, created: float, line: AccessLine) -> str:
        formatter = self._output.formatter
        if isinstance(formatter, (_Text, _Json)):
            return formatter.format_access(created, line)
        return self._output.format(access_record(created, line))

    def _run(self) -> None:
        gate = self._gate
        stop = False
        while not stop:
            batch = self._gather()
            lines, stop = self._render(batch)
            lines += [self._output.format(record) for record in gate.due(everything=stop)]
            if lines:
                last = batch[-1] if batch else None
                if isinstance(last, tuple):  # a failed write is reported with a record
                    last = access_record(*last)
                self._write("\n".join(lines) + "\n", last)

    def _gather(self) -> list[Queued]:
        """The next batch: waits at most a second (the flood gate's summaries are due in
        time), then lets a burst gather for GATHER seconds, up to BATCH items."""
        records = self._records
        try:
            batch = [records.get(timeout=1.0)]
        except queue.Empty:
            return []
        # one wake-up of this thread per GATHER seconds under load, not one per line (each
        # wake-up takes the GIL from the event loop)
        time.sleep(GATHER)
        while len(batch) < BATCH:
            try:
                batch.append(records.get_nowait())
            except queue.Empty:
                break
        return batch

    def _render(self, batch: list[Queued]) -> tuple[list[str], bool]:
        """The text of each item the level and the flood gate let through; True when stop()'s
        sentinel was among them."""
        output, gate = self._output, self._gate
        lines: list[str] = []
        stop = False
        for record in batch:
            if record is None:  # stop()'s sentinel
                stop = True
            elif isinstance(record, tuple):  # AccessLog.write's (time, line): no record
                try:
                    lines.append(self._access(*record))
                except Exception:
                    output.handleError(access_record(*record))
            elif record.levelno >= output.level and gate.admit(record):
                try:
                    lines.append(output.format(record))
                except Exception:  # as logging does: report it, keep logging
                    output.handleError(record)
        return lines, stop

    def _write(self, text: str, record: logging.LogRecord | None) -> None:
        output = self._output
        output.acquire()
        try:
            if isinstance(output, logging.handlers.WatchedFileHandler):
                now = time.monotonic()
                if now >= self._next_watch:  # moved away by logrotate: a new file
                    self._next_watch = now + 1.0
                    output.reopenIfNeeded()
            output.stream.write(text)
            output.flush()
        except Exception:  # a full disk must not stop the listener
            if record is not None:
                output.handleError(record)
        finally:
            output.release()


def configure_logging(level: str, kind: str = "text", file: str = "") -> LogWriter:
    """Log lines go through a queue to a thread that formats and writes them; the listener
    returned is started (stop it to flush at exit).

    A record carries only what porter's formats use: not the caller's file and line (no
    frame walk per line), not the thread or process (the JSON format's pid is read once)."""
    logging._srcfile = None  # the logging HOWTO's "Optimization": no findCaller() per record
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    output: logging.StreamHandler[Any] = (
        logging.handlers.WatchedFileHandler(file) if file else logging.StreamHandler()
    )
    output.setFormatter(formatter(kind))
    records: queue.SimpleQueue[Any] = queue.SimpleQueue()
    root = logging.getLogger()
    root.handlers[:] = [_DeferredQueueHandler(records)]
    root.setLevel(getattr(logging, level.upper()))
    listener = LogWriter(records, output)
    listener.start()
    ACCESS.attach(records)
    return listener
