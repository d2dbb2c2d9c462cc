"""Dedup and rate limit: one mail per failure per window, repeats summed into one digest.

A failure's fingerprint is its exception type and innermost frames (porter exception), its
status, view (the path with ids folded) and the exception named in OMERO.web's answer
(upstream error), its status (upstream unavailable) or the client (feedback). The first
occurrence is mailed at once and opens a window; repeats inside the window are only counted,
and a digest with the counts is mailed when the window closes. Every mail, digests included,
takes a slot of an hourly cap: porter's own exceptions have a cap of their own, so that
anonymous clients provoking OMERO.web errors can never use up the mail that reports a porter
crash. Clocks are injectable for tests.
"""

from __future__ import annotations

import enum
import re
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from mailer.report import Report
from mailer.scrub import scrub_text
from mailer.settings import MailSettings

Clock = Callable[[], float]

# Bounds on memory whatever the traffic: distinct open windows, and what each remembers.
MAX_WINDOWS = 1000
MAX_PATHS = 20
MAX_REQUEST_IDS = 10
HOUR = 3600.0


class Decision(enum.Enum):
    """What to do with an observed report."""

    SEND = "send"  # first occurrence: mail it now
    FOLDED = "folded"  # a repeat: counted into the window's digest
    CAPPED = "capped"  # a first occurrence over the hourly cap: counted into the digest


@dataclass(frozen=True)
class Digest:
    """The repeats of one failure within one window."""

    fingerprint: str
    headline: str
    count: int
    first_seen: datetime
    last_seen: datetime
    first_sent: bool
    paths: tuple[tuple[str, int], ...]
    request_ids: tuple[str, ...]


@dataclass
class _Window:
    closes: float
    headline: str
    first_sent: bool
    first_seen: datetime
    last_seen: datetime
    count: int = 0
    paths: Counter[str] = field(default_factory=Counter)
    request_ids: deque[str] = field(default_factory=lambda: deque(maxlen=MAX_REQUEST_IDS))

    def add(self, report: Report, path: str) -> None:
        self.count += 1
        self.last_seen = max(self.last_seen, report.time)
        if path in self.paths or len(self.paths) < MAX_PATHS:
            self.paths[path] += 1
        self.request_ids.append(report.request_id)

    def digest(self, fingerprint: str) -> Digest:
        return Digest(
            fingerprint,
            self.headline,
            self.count,
            self.first_seen,
            self.last_seen,
            self.first_sent,
            tuple(self.paths.most_common()),
            tuple(self.request_ids),
        )


class HourlyCap:
    """At most `limit` slots in any 3600 s (0: unlimited)."""

    def __init__(self, limit: int, clock: Clock = time.monotonic) -> None:
        self._limit = limit
        self._clock = clock
        self._taken: deque[float] = deque()

    def take(self) -> bool:
        """Take a slot if one is free."""
        if self._limit == 0:
            return True
        now = self._clock()
        while self._taken and self._taken[0] <= now - HOUR:
            self._taken.popleft()
        if len(self._taken) >= self._limit:
            return False
        self._taken.append(now)
        return True


# A path segment that names an object rather than a view: a number, a long hex or uuid-like
# token, or anything with a digit run (image-123, 1_2_3).
_ID_SEGMENT = re.compile(r"[0-9]+|[0-9A-Fa-f-]{16,}|[^/]*[0-9]{2,}[^/]*")
# The exception OMERO.web's page names: Django's debug page, or a traceback's last line.
_DJANGO_EXCEPTION = re.compile(r"Exception Type:\s*</?\w*>?\s*([\w.]{1,100})")
# A traceback's last line: the first unindented line after the frames, "Name: message".
_TRACE_EXCEPTION = re.compile(
    r"Traceback \(most recent call last\):\n(?:[ \t][^\n]*\n)+([A-Za-z_][\w.]{0,100})(?::|$)",
    re.M,
)


def view_of(path: str) -> str:
    """`path` with the segments that name objects folded, so /a/1/ and /a/2/ are one view."""
    return "/".join("{id}" if _ID_SEGMENT.fullmatch(s) else s for s in path.split("/"))[:200]


def exception_named(excerpt: str) -> str:
    """The exception type an OMERO.web error page names, or '' when none is found."""
    found = _DJANGO_EXCEPTION.search(excerpt)
    if found:
        return found.group(1)
    names = _TRACE_EXCEPTION.findall(excerpt)
    return names[-1] if names else ""


def fingerprint(report: Report) -> str:
    """The key under which repeats of `report`'s failure are counted together."""
    if report.kind == "exception":
        return f"exception:{report.trace_key or 'unknown'}"
    if report.kind == "upstream_error":
        view = view_of(scrub_text(report.path, report.secrets))
        return f"upstream:{report.status}:{view}:{exception_named(report.excerpt or '')}"
    if report.kind == "unavailable":
        return f"unavailable:{report.status}"
    if report.kind in ("omero_down", "omero_up"):
        return f"{report.kind}:{report.server_id}"
    return f"feedback:{report.client}"


class Deduplicator:
    """Decides per report whether to mail now; collects digests of repeats."""

    def __init__(self, settings: MailSettings, clock: Clock = time.monotonic) -> None:
        self._settings = settings
        self._clock = clock
        self._cap = HourlyCap(settings.max_per_hour, clock)
        self._own_cap = HourlyCap(settings.max_per_hour, clock)  # porter's own exceptions
        self._windows: dict[str, _Window] = {}

    def _window_length(self, report: Report) -> float:
        s = self._settings
        outage = report.kind in ("unavailable", "omero_down", "omero_up")
        return s.unavailable_window if outage else s.dedup_window

    def observe(self, report: Report) -> Decision:
        """Record `report`: SEND it now, or fold it into its window's digest."""
        key = fingerprint(report)
        if key not in self._windows and len(self._windows) >= MAX_WINDOWS:
            key = f"overflow:{report.kind}"  # too many distinct failures: lump the rest
        window = self._windows.get(key)
        if window is not None and self._clock() < window.closes:
            window.add(report, scrub_text(report.path, report.secrets))
            return Decision.FOLDED
        length = self._window_length(report)
        sent = self._cap_of(key).take()
        if length > 0 or not sent:
            window = _Window(
                self._clock() + length, report.headline(), sent, report.time, report.time
            )
            if not sent:
                window.add(report, scrub_text(report.path, report.secrets))
            self._windows[key] = window
        return Decision.SEND if sent else Decision.CAPPED

    def due(self, everything: bool = False) -> list[Digest]:
        """Close the windows that ended (all when `everything`); digests of those with repeats."""
        now = self._clock()
        ended = [k for k, w in self._windows.items() if everything or now >= w.closes]
        closed = [(k, self._windows.pop(k)) for k in ended]
        return [window.digest(k) for k, window in closed if window.count]

    def _cap_of(self, key: str) -> HourlyCap:
        return self._own_cap if key.startswith("exception:") else self._cap

    def take_slot(self, fingerprint: str = "") -> bool:
        """Take a slot of the hourly cap for a digest of `fingerprint`."""
        return self._cap_of(fingerprint).take()

    @property
    def open_windows(self) -> int:
        """How many failures are in their dedup window now."""
        return len(self._windows)
