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
import queue
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


class _Text(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s %(message)s")


class _Json(logging.Formatter):
    """One JSON object per line: time, level, logger, then the access fields or message."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "pid": record.process,  # which worker
        }
        args = record.args
        if isinstance(args, tuple) and len(args) == 1 and isinstance(args[0], AccessLine):
            line.update(args[0].fields())
        else:
            line["message"] = record.getMessage()
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False, default=str)


FORMATS = ("text", "json")


def formatter(kind: str) -> logging.Formatter:
    return _Json() if kind == "json" else _Text()


class _DeferredQueueHandler(logging.handlers.QueueHandler):
    """Puts records on the queue as they are: formatting (and writing) happen on the
    listener's thread, never on the event loop. Porter's log arguments are plain values."""

    def prepare(self, record: logging.LogRecord) -> logging.LogRecord:
        return record


def configure_logging(level: str, kind: str = "text") -> logging.handlers.QueueListener:
    """Log lines go through a queue to a thread that formats and writes them; the listener
    returned is started (stop it to flush at exit)."""
    output = logging.StreamHandler()
    output.setFormatter(formatter(kind))
    records: queue.SimpleQueue[logging.LogRecord] = queue.SimpleQueue()
    root = logging.getLogger()
    root.handlers[:] = [_DeferredQueueHandler(records)]
    root.setLevel(getattr(logging, level.upper()))
    listener = logging.handlers.QueueListener(records, output, respect_handler_level=True)
    listener.start()
    return listener
