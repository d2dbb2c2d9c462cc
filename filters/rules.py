"""Public URL rules: may an anonymous caller be served this method and path as the public user?

`decide` takes the raw path relative to porter's mount prefix (the proxy strips the prefix,
see `filters.canonical.strip_prefix`) and never looks at the query. Order:

1. canonicalise (failure: ``bad_request``);
2. deny rules, built-in and configured, matched case-insensitively (``deny``);
3. ``public.enabled`` off: ``login``;
4. ``url_filter`` and method rules, matched against the whole canonical path (``public``);
5. otherwise ``login``.

Matching runs under a per-request time budget; running out is ``deny`` (fail closed).
The built-in deny rules are porter's own and run as one stdlib ``re`` alternation; the
admin's patterns run on `regex` under the budget, and `RuleMatcher` runs them in a worker
thread (the GIL released) with a bounded cache of decisions, so hostile paths matched
against a slow pattern never stall the event loop.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import re
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Literal

from cachetools import LRUCache

from filters.canonical import BadPath, canonical_path, forward_path
from filters.credentials import credential_params
from filters.regex_guard import GuardedPattern, MatchTimeout, compile_pattern
from filters.settings import READ_METHODS, PublicRuleSettings

log = logging.getLogger("porter.filters")

# Never public, whatever the configuration: admin pages, password reset, login and logout.
BUILTIN_DENY = (
    r"^/webadmin(/.*)?",
    r"^/webclient/(login|logout)(/.*)?",
    r"^/api/v[^/]*/login(/.*)?",
    r"^/porter(/.*)?",
)

# OMERO.web views that store what the request asks for in the Django session. Every anonymous
# visitor shares the public user's ONE Django session, so one visitor's write would be read
# back by all the others (copyImgRDef -> getImgRDef, active_group -> every view's group):
# never public. Pinned against the installed omero-web by tests/test_public_session_views.py;
# docs/security.md says why each is here.
SESSION_WRITERS = (
    r"^/webgateway/copyImgRDef(/.*)?",  # rdef / fromid, read back by getImgRDef
    r"^/webclient/([0-9]+/)?copyImgRDef(/.*)?",  # the same view, mounted in webclient
    r"^/webclient/active_group(/.*)?",  # the group every later view runs in
    r"^/webclient/activities(_json|_update)?(/.*)?",  # the session's job callbacks
    r"^/webclient/(chgrp|chown)(/.*)?",  # start jobs, kept as callbacks
    r"^/webclient/action(/.*)?",  # delete and other jobs, kept as callbacks
    r"^/webclient/(script_run|figure_script|ome_tiff_script)(/.*)?",  # script jobs
)

# Each entry a whole-path, case-insensitive pattern; one alternation, matched at once.
_BUILTIN = re.compile(
    "|".join(f"(?:{p})" for p in (*BUILTIN_DENY, *SESSION_WRITERS)), re.IGNORECASE
)

DecisionKind = Literal["public", "login", "deny", "bad_request"]


@dataclass(frozen=True)
class Decision:
    """What `decide` concluded, for anonymous callers.

    - ``public``: serve with the shared public session (a logged-in user stays themselves);
    - ``login``: not public; anonymous callers must log in (browser: redirect; AJAX: 403);
    - ``deny``: a deny rule matched, or matching ran out of time: never public; the proxy
      treats it like ``login`` (a logged-in user still goes through as themselves);
    - ``bad_request``: the path has no canonical form: 400 for everyone, nothing forwarded.

    `rule` names the rule that decided; `reason` explains; neither contains the path.
    """

    kind: DecisionKind
    rule: str
    canonical: str | None
    reason: str

    @functools.cached_property
    def forward(self) -> str | None:
        """The path to send upstream (percent-encoded canonical path), None for bad_request;
        worked out once per decision (decisions are cached and reused)."""
        if self.kind == "bad_request" or self.canonical is None:
            return None
        return forward_path(self.canonical)


CREDENTIALS_RULE = "OMERO credentials in the query"


def with_query(decision: Decision, query: str) -> Decision:
    """The decision for the whole request, raw `query` included: OMERO.web's credentials in
    it make any path a bad request (filters/credentials.py). The gate, forward-auth and
    `run.py explain` all decide through `decide` and then this."""
    if decision.forward is None:
        return decision
    found = credential_params(query)
    if not found:
        return decision
    return Decision(
        "bad_request",
        CREDENTIALS_RULE,
        decision.canonical,
        f"the query names {', '.join(found)}, which OMERO.web would log in with",
    )


@dataclass(frozen=True)
class _PublicRule:
    label: str
    pattern: GuardedPattern
    methods: frozenset[str] | None  # None: any method


@dataclass(frozen=True)
class PublicRules:
    """Compiled rules; build once with `from_settings` (patterns were checked at load)."""

    enabled: bool
    deny: tuple[tuple[str, GuardedPattern], ...]  # the admin's deny rules
    public: tuple[_PublicRule, ...]
    match_timeout: float

    @classmethod
    def from_settings(cls, settings: PublicRuleSettings) -> PublicRules:
        deny = [
            (f"public.deny[{i}] {p}", compile_pattern(p, ignore_case=True))
            for i, p in enumerate(settings.deny)
        ]
        read = frozenset(READ_METHODS)
        public: list[_PublicRule] = []
        if settings.url_filter:
            public.append(
                _PublicRule(
                    "public.url_filter " + settings.url_filter,
                    compile_pattern(settings.url_filter),
                    read if settings.get_only else None,
                )
            )
        for index, rule in enumerate(settings.rules):
            if not rule.path:
                continue
            methods = _with_head(rule.methods)
            if settings.get_only:
                methods &= read
            public.append(
                _PublicRule(
                    f"public.rules[{index}] {rule.path}", compile_pattern(rule.path), methods
                )
            )
        return cls(settings.enabled, tuple(deny), tuple(public), settings.match_timeout)


def decide(method: str, raw_path: str, rules: PublicRules) -> Decision:
    """Decide on `method` and `raw_path` (raw, relative to the mount prefix; query ignored)."""
    try:
        canonical = canonical_path(raw_path)
    except BadPath as exc:
        return Decision("bad_request", "canonical path", None, exc.reason)
    deadline = time.monotonic() + rules.match_timeout
    try:
        return _decide_canonical(method, canonical, rules, deadline)
    except MatchTimeout as exc:
        # The pattern is the admin's; the path may be hostile, so only its length is logged.
        log.warning("rule matching timed out: pattern %r, path length %d", str(exc), len(canonical))
        return Decision(
            "deny",
            f"timeout while matching {exc}",
            canonical,
            "rule matching ran out of time: not public (fail closed)",
        )


def _builtin_label(path: str) -> str:
    for source in BUILTIN_DENY:
        if re.fullmatch(source, path, re.IGNORECASE):
            return "built-in deny " + source
    for source in SESSION_WRITERS:
        if re.fullmatch(source, path, re.IGNORECASE):
            return "built-in deny (writes the shared session) " + source
    return "built-in deny"  # pragma: no cover - the alternation matched one of them


def _decide_canonical(method: str, path: str, rules: PublicRules, deadline: float) -> Decision:
    if _BUILTIN.fullmatch(path):
        return Decision("deny", _builtin_label(path), path, "deny rules win: never public")
    for label, pattern in rules.deny:
        if pattern.fullmatches(path, deadline):
            return Decision("deny", label, path, "deny rules win: never public")
    if not rules.enabled:
        return Decision("login", "public.enabled = false", path, "public access is off")
    refused: _PublicRule | None = None
    for rule in rules.public:
        if rule.pattern.fullmatches(path, deadline):
            if rule.methods is None or method in rule.methods:
                return Decision("public", rule.label, path, f"{method} is public here")
            refused = refused or rule
    if refused is not None:
        return Decision(
            "login",
            refused.label,
            path,
            f"the path is public but {method} is not ({_names(refused.methods)})",
        )
    return Decision("login", "no public rule matched", path, "not public")


def _with_head(methods: Iterable[str]) -> frozenset[str]:
    found = frozenset(methods)
    return found | {"HEAD"} if "GET" in found else found


def _names(methods: frozenset[str] | None) -> str:
    return "any method" if methods is None else "only " + ", ".join(sorted(methods))


class RuleMatcher:
    """`decide` for the request path: repeated (method, path) pairs from a bounded cache
    (decisions are pure), the rest in worker threads, so that a slow admin pattern under
    hostile paths holds up only the requests that need it, never the event loop."""

    def __init__(self, rules: PublicRules, cache_size: int = 4096) -> None:
        self.rules = rules
        self._cache: LRUCache[tuple[str, str], Decision] = LRUCache(cache_size)
        # Only the admin's patterns can be slow: without any, decide on the loop.
        self._inline = not (rules.deny or rules.public)
        self._pool: ThreadPoolExecutor | None = None

    def cached(self, method: str, raw_path: str) -> Decision | None:
        """The decision already made for (method, path), without awaiting anything."""
        return self._cache.get((method, raw_path))

    async def decide(self, method: str, raw_path: str) -> Decision:
        key = (method, raw_path)
        found = self._cache.get(key)
        if found is not None:
            return found
        if self._inline:
            decision = decide(method, raw_path, self.rules)
        else:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(2, thread_name_prefix="porter-rules")
            loop = asyncio.get_running_loop()
            decision = await loop.run_in_executor(self._pool, decide, method, raw_path, self.rules)
        if not decision.rule.startswith("timeout"):  # load-dependent: decide again next time
            self._cache[key] = decision
        return decision

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
