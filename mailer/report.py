"""What the proxy knows about one failure: the value it hands to the mail sender.

The report holds raw request data; nothing is scrubbed yet. Scrubbing happens when the mail is
composed (`mailer.compose`), off the request path, using `secrets` for exact known values.
"""

from __future__ import annotations

import traceback
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import PurePath
from typing import Any, Literal

from mailer.scrub import scrub_text

ReportKind = Literal[
    "exception", "upstream_error", "unavailable", "feedback", "omero_down", "omero_up"
]

TITLES: dict[str, str] = {
    "exception": "Porter error",
    "upstream_error": "OMERO.web error",
    "unavailable": "OMERO.web unavailable",
    "feedback": "Feedback",
    "omero_down": "OMERO server unreachable",
    "omero_up": "OMERO server back",
}

# How many innermost frames identify an exception for dedup.
FINGERPRINT_FRAMES = 3


def _now() -> datetime:
    return datetime.now(timezone.utc)


@dataclass(frozen=True)
class Trace:
    """A formatted traceback and the key that identifies its failure for dedup."""

    text: str
    key: str


def trace_of(exc: BaseException, frames: int = FINGERPRINT_FRAMES) -> Trace:
    """Format `exc` with its chain; key it by type and innermost `file:function` frames.

    Line numbers are left out of the key, so one bug keeps one key across small edits.
    """
    text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    stack = traceback.extract_tb(exc.__traceback__)[-frames:] if exc.__traceback__ else []
    where = "<".join(f"{PurePath(f.filename).name}:{f.name}" for f in reversed(stack))
    kind = type(exc)
    return Trace(text=text, key=f"{kind.__module__}.{kind.__qualname__}@{where}")


@dataclass(frozen=True)
class Report:
    """One failure (or one feedback message) to tell the admins about.

    `kind` is "exception" (porter raised; set `trace`/`trace_key`, see `Report.for_exception`),
    "upstream_error" (OMERO.web answered 5xx; set `status` and `excerpt`, the body as read),
    "unavailable" (502/503/504 or no answer; set `status`) or "feedback" (set `comment`).
    `secrets` are exact values the mail must never show (the request's OMERO session key,
    cookie values, a posted password); they are masked wherever they occur.
    """

    kind: ReportKind
    request_id: str
    method: str = ""
    path: str = ""
    query: str = ""
    user: str = "anonymous"
    client: str = ""
    server_id: int | None = None
    status: int | None = None
    trace: str = ""
    trace_key: str = ""
    excerpt: str = ""
    comment: str = ""
    headers: tuple[tuple[str, str], ...] = ()
    time: datetime = field(default_factory=_now)
    secrets: frozenset[str] = field(default=frozenset(), repr=False, compare=False)

    @classmethod
    def for_exception(cls, exc: BaseException, request_id: str, **fields: Any) -> Report:
        """A report of kind "exception" with `exc`'s traceback and dedup key filled in."""
        found = trace_of(exc)
        return cls(
            kind="exception", request_id=request_id, trace=found.text, trace_key=found.key, **fields
        )

    def headline(self) -> str:
        """What failed, where, scrubbed: e.g. "OMERO.web error 500: GET /webclient/x"."""
        if self.kind in ("omero_down", "omero_up"):
            return f"{TITLES[self.kind]}: server {self.server_id}"
        status = f" {self.status}" if self.status is not None else ""
        where = scrub_text(f"{self.method} {self.path}".strip(), self.secrets)
        return f"{TITLES[self.kind]}{status}: {where}"
