"""Admin-written regexes matched under a time budget, so a hostile path cannot stall porter.

Python's `re` cannot be interrupted and RE2 has no lookaheads (which OMERO.web filters such as
``^/(?!webadmin)`` need), so patterns run on the `regex` package: `re`-compatible syntax,
lookaheads, and a ``timeout`` that aborts a runaway match. A timed-out match is reported
as `MatchTimeout`; callers fail closed. Patterns are compiled with ``concurrent=True``, so a
match run in a worker thread releases the GIL and the event loop keeps serving.

`check_pattern` also refuses the classic catastrophic shape, a repeat over an alternation or
over another repeat (``(a|a)+``, ``(a+)+``): OMERO.web's documented filters never need one.
"""

from __future__ import annotations

import re
import re._constants as sre  # type: ignore[import-not-found]
import re._parser as sre_parse  # type: ignore[import-not-found]
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import regex

from porter_errors import Internal


class MatchTimeout(Internal):
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
            return self.compiled.fullmatch(text, timeout=remaining, concurrent=True) is not None
        except TimeoutError:
            raise MatchTimeout(self.source) from None

    def finds(self, text: str, deadline: float) -> bool:
        """Whether the pattern occurs anywhere in `text`, before monotonic `deadline`."""
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise MatchTimeout(self.source)
        try:
            return self.compiled.search(text, timeout=remaining, concurrent=True) is not None
        except TimeoutError:
            raise MatchTimeout(self.source) from None


# What compiling a hostile pattern raises besides the regex error: nesting too deep for the
# parser, a repeat count too large for an int.
_COMPILE_FAILURES = (RecursionError, OverflowError)


def compile_pattern(source: str, *, ignore_case: bool = False) -> GuardedPattern:
    """Compile `source` (Python regex syntax); raises ValueError naming the regex error."""
    flags = regex.IGNORECASE if ignore_case else 0
    try:
        return GuardedPattern(source, regex.compile(source, flags))
    except (regex.error, *_COMPILE_FAILURES) as exc:
        raise ValueError(f"not a valid regular expression: {_why(exc)}") from None


def compile_plain(source: str) -> re.Pattern[str]:
    """`re.compile(source)`, with every way it can fail a ValueError naming why (for the
    patterns porter matches only against trusted text: user names, cache keys)."""
    try:
        return re.compile(source)
    except (re.error, *_COMPILE_FAILURES) as exc:
        raise ValueError(f"not a valid regular expression: {_why(exc)}") from None


def _why(exc: BaseException) -> str:
    if isinstance(exc, RecursionError):
        return "nested too deeply"
    if isinstance(exc, OverflowError):
        return "a repeat count is too large"
    return str(exc)


_REPEATS = (sre.MAX_REPEAT, sre.MIN_REPEAT, sre.POSSESSIVE_REPEAT)


def _nested_repeat(items: Iterable[tuple[Any, Any]], inside: bool) -> bool:
    """Whether a repeat (max > 1) holds another repeat or an alternation."""
    for op, av in items:
        if op in _REPEATS:
            high, sub = av[1], av[2]
            repeats = high is sre.MAXREPEAT or high > 1
            if (repeats and inside) or _nested_repeat(sub, inside or repeats):
                return True
        elif op is sre.BRANCH:
            if inside or any(_nested_repeat(branch, inside) for branch in av[1]):
                return True
        elif any(_nested_repeat(child, inside) for child in _groups(op, av)):
            return True
    return False


def _groups(op: Any, av: Any) -> list[Any]:
    """The sub-patterns inside one parsed group, assertion or conditional."""
    if op is sre.SUBPATTERN:
        return [av[3]]
    if op in (sre.ASSERT, sre.ASSERT_NOT):
        return [av[1]]
    if op is sre.ATOMIC_GROUP:
        return [av]
    if op is sre.GROUPREF_EXISTS:
        return [part for part in av[1:] if part is not None]
    return []


def backtracking_hazard(source: str) -> bool:
    """Whether `source` repeats an alternation or a repeat, the shape whose matching time
    can explode on a crafted input. Syntax only `regex` knows is not judged (False)."""
    try:
        parsed = sre_parse.parse(source)
    except (sre.error, RecursionError, OverflowError):
        return False
    return _nested_repeat(parsed, False)


def check_pattern(source: str) -> None:
    """Settings ``check``: raises ValueError when `source` does not compile, or repeats an
    alternation or a repeat."""
    compile_pattern(source)
    if backtracking_hazard(source):
        raise ValueError(
            "repeats an alternation or a repeat (e.g. (a|b)+ or (a+)*): matching can take "
            "exponential time on a crafted path; write it without the nested repeat"
        )


def guarded(source: str) -> GuardedPattern:
    """`source` compiled for matching text visitors chose, once `check_pattern` accepts it
    (raises ValueError saying why not)."""
    check_pattern(source)
    return compile_pattern(source)


def check_patterns(sources: tuple[str, ...]) -> None:
    """Settings ``check`` for a list of patterns: names the first one that is refused."""
    for index, source in enumerate(sources):
        try:
            check_pattern(source)
        except ValueError as exc:
            raise ValueError(f"item {index}: {exc}") from None
