"""Which public answers are cached, and for how long: the first ``[[cache.rules]]`` whose
methods and whole-path regex match."""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from dataclasses import dataclass

from cache.settings import CacheRule


@dataclass(frozen=True)
class _Rule:
    pattern: re.Pattern[str]
    methods: frozenset[str]
    ttl: float


class CacheRules:
    """The compiled rules. Patterns passed `check_pattern` (no nested repeats), so stdlib
    `re` matches them in linear time; answers are remembered per (method, path)."""

    def __init__(self, rules: Sequence[CacheRule]) -> None:
        self._rules = tuple(
            _Rule(re.compile(r.path), frozenset(r.methods), r.ttl) for r in rules if r.path
        )
        self.ttl = functools.lru_cache(maxsize=16384)(self._ttl)

    def _ttl(self, method: str, path: str) -> float | None:
        """Seconds an answer to `method` on the canonical `path` stays fresh; None: never
        cached."""
        for rule in self._rules:
            if method in rule.methods and rule.pattern.fullmatch(path):
                return rule.ttl
        return None
