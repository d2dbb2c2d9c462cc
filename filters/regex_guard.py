"""Admin-written regexes matched under a time budget, so a hostile path cannot stall porter.

Python's `re` cannot be interrupted and RE2 has no lookaheads (which OMERO.web filters such as
``^/(?!webadmin)`` need), so patterns run on the `regex` package: `re`-compatible syntax,
lookaheads, and a ``timeout`` that aborts a runaway match. A timed-out match is reported
as `MatchTimeout`; callers fail closed.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import regex


class MatchTimeout(Exception):
    """A pattern did not finish within the budget (the caller fails closed)."""


@dataclass(frozen=True)
class GuardedPattern:
    """A compiled pattern and its source text (for explain and logs)."""

    source: str
    compiled: regex.Pattern[str]

    def fullmatches(self, text: str, deadline: float) -> bool:
        """Whether the pattern matches the whole of `text`, before monotonic `deadline`."""
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise MatchTimeout(self.source)
        try:
            return self.compiled.fullmatch(text, timeout=remaining) is not None
        except TimeoutError:
            raise MatchTimeout(self.source) from None


def compile_pattern(source: str, *, ignore_case: bool = False) -> GuardedPattern:
    """Compile `source` (Python regex syntax); raises ValueError naming the regex error."""
    flags = regex.IGNORECASE if ignore_case else 0
    try:
        return GuardedPattern(source, regex.compile(source, flags))
    except regex.error as exc:
        raise ValueError(f"not a valid regular expression: {exc}") from None


def check_pattern(source: str) -> None:
    """Settings ``check``: raises ValueError when `source` does not compile."""
    compile_pattern(source)


def check_patterns(sources: tuple[str, ...]) -> None:
    """Settings ``check`` for a list of patterns: names the first one that does not compile."""
    for index, source in enumerate(sources):
        try:
            compile_pattern(source)
        except ValueError as exc:
            raise ValueError(f"item {index}: {exc}") from None
