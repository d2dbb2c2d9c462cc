"""Who gets OMERO.web's time when there is not enough of it (`[limits]`).

- Admission: at most `upstream_slots` requests of this process in flight to OMERO.web;
  logged-in and token users are admitted first and keep `user_share` of the slots to
  themselves; the public principal uses at most `public_share` (proxy/admission.py).
- Fair shares: the public principal's requests are rate-limited per client network (IPv4
  /24, IPv6 /64 by default), a GCRA shared through Redis with the Redis store; logged-in
  users have their own limit, off by default.
- Bots: a User-Agent deny list (403) and a robots.txt porter serves; `allow_from` addresses
  skip the rate limits and the deny list.

This module holds the settings and the pure parts: the client's network, the GCRA, the
User-Agent policy. Refusals are made before the identity chain, and cost little.
"""

from __future__ import annotations

import functools
import ipaddress
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from cachetools import TTLCache

from filters.forwarded import check_cidrs
from filters.regex_guard import GuardedPattern, MatchTimeout, check_patterns, compile_pattern

AGENT_BUDGET = 0.05  # seconds the User-Agent patterns may take on one agent string
AGENTS_KEPT = 4096  # agent strings whose verdict is remembered


def _check_file(value: str) -> None:
    if value and not Path(value).is_file():
        raise ValueError("is not a readable file (or empty: none served)")


@dataclass(frozen=True)
class LimitsSettings:
    """``[limits]``: admission to OMERO.web, per-client rates, bot policy."""

    enabled: bool = field(
        default=True,
        metadata={"doc": "Admission to OMERO.web by class, rate limits and the agent list"},
    )
    omero_web_workers: int = field(
        default=5,
        metadata={
            "doc": "OMERO.web's gunicorn workers (omero.web.wsgi_workers), to derive "
            "upstream_slots",
            "min": 1,
        },
    )
    omero_web_threads: int = field(
        default=1,
        metadata={
            "doc": "Threads per OMERO.web worker (omero.web.wsgi_threads), to derive "
            "upstream_slots",
            "min": 1,
        },
    )
    upstream_slots: int = field(
        default=0,
        metadata={
            "doc": "Requests this porter process sends OMERO.web at once; 0: OMERO.web's "
            "workers x threads / proxy.workers (at least 1), plus 1",
            "min": 0,
        },
    )
    user_share: float = field(
        default=0.25,
        metadata={
            "doc": "Slots on top of upstream_slots, as a share of them, that only logged-in "
            "and token users use (their requests then take OMERO.web's next free thread)",
            "min": 0.0,
            "max": 1.0,
        },
    )
    public_share: float = field(
        default=1.0,
        metadata={
            "doc": "Share of upstream_slots the public principal may use at most (below 1: "
            "threads kept idle for users)",
            "min": 0.01,
            "max": 1.0,
        },
    )
    queue_timeout: float = field(
        default=10.0,
        metadata={
            "doc": "Seconds a request may wait for a slot before 503 with Retry-After",
            "min": 0.01,
        },
    )
    public_rate: float = field(
        default=20.0,
        metadata={
            "doc": "Public requests per second per client network (429 past it); 0: no limit",
            "min": 0.0,
        },
    )
    public_burst: int = field(
        default=100,
        metadata={"doc": "Public requests a client network may send at once", "min": 1},
    )
    ipv4_prefix: int = field(
        default=24,
        metadata={"doc": "IPv4 prefix length of a client network", "min": 8, "max": 32},
    )
    ipv6_prefix: int = field(
        default=64,
        metadata={"doc": "IPv6 prefix length of a client network", "min": 16, "max": 128},
    )
    user_rate: float = field(
        default=0.0,
        metadata={
            "doc": "Requests per second per logged-in or token user (429 past it); 0: no limit",
            "min": 0.0,
        },
    )
    user_burst: int = field(
        default=200,
        metadata={"doc": "Requests a user may send at once", "min": 1},
    )
    allow_from: tuple[str, ...] = field(
        default=("127.0.0.0/8", "::1/128"),
        metadata={
            "doc": "CIDRs the rate limits and the User-Agent list skip (monitoring, a "
            "partner's harvester; loopback: a front proxy missing from trusted_proxies "
            "would make every visitor one client)",
            "check": check_cidrs,
        },
    )
    deny_agents: tuple[str, ...] = field(
        default=(),
        metadata={
            "doc": "Regexes searched in the User-Agent; a match is answered 403 (e.g. "
            '"GPTBot|CCBot|Bytespider")',
            "check": check_patterns,
        },
    )
    robots_txt: str = field(
        default="",
        metadata={"doc": "File porter serves as /robots.txt; empty: none", "check": _check_file},
    )

    def slots(self, porter_processes: int) -> int:
        """The slots of one porter process of `porter_processes`: its part of OMERO.web's
        threads, and one more, so that a thread that frees never waits for porter to send
        the next request (bench/overload.py: 89% busy without it, 95% with, users alike)."""
        if self.upstream_slots:
            return self.upstream_slots
        total = self.omero_web_workers * self.omero_web_threads
        return max(1, total // max(1, porter_processes)) + 1


def network(address: str, ipv4_prefix: int, ipv6_prefix: int) -> str:
    """The client network `address` belongs to, as text (the address itself when it does not
    parse: it then counts alone)."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    prefix = ipv4_prefix if ip.version == 4 else ipv6_prefix
    if ip.version == 6 and ip.ipv4_mapped is not None:
        ip, prefix = ip.ipv4_mapped, ipv4_prefix
    return str(ipaddress.ip_network(f"{ip}/{prefix}", strict=False))


@functools.lru_cache(maxsize=4096)
def cached_network(address: str, ipv4_prefix: int, ipv6_prefix: int) -> str:
    return network(address, ipv4_prefix, ipv6_prefix)


class AgentPolicy:
    """The User-Agent deny list: patterns searched under a time budget, decisions cached
    per agent string (crawlers repeat theirs). A pattern that runs out of time denies."""

    def __init__(self, sources: tuple[str, ...]) -> None:
        self._patterns: list[GuardedPattern] = [compile_pattern(s) for s in sources]
        self._seen: dict[str, bool] = {}

    @property
    def active(self) -> bool:
        return bool(self._patterns)

    def denied(self, agent: str) -> bool:
        found = self._seen.get(agent)
        if found is not None:
            return found
        deadline = time.monotonic() + AGENT_BUDGET
        try:
            found = any(p.finds(agent, deadline) for p in self._patterns)
        except MatchTimeout:
            found = True
        if len(self._seen) >= AGENTS_KEPT:  # bounded: a storm of made-up agents
            self._seen.clear()
        self._seen[agent] = found
        return found


@dataclass(frozen=True)
class Rate:
    """A GCRA rate: `per_second` sustained, `burst` at once."""

    per_second: float
    burst: int

    @property
    def interval(self) -> float:
        return 1.0 / self.per_second

    @property
    def tolerance(self) -> float:
        return self.interval * (self.burst - 1)


class MemoryRates:
    """GCRA in this process (the memory store: one process): the theoretical arrival time of
    each key, bounded in number; a key unseen for long enough is forgotten, as it would be
    allowed its whole burst again anyway."""

    def __init__(self, clock: Callable[[], float] = time.monotonic, size: int = 100_000) -> None:
        self._clock = clock
        self._tat: TTLCache[str, float] = TTLCache(size, 3600, timer=clock)

    async def hit(self, key: str, rate: Rate) -> float:
        """0 when allowed (and counted), else the seconds until it would be."""
        now = self._clock()
        tat = max(self._tat.get(key, now), now)
        wait = tat - now - rate.tolerance
        if wait > 0:
            return wait
        self._tat[key] = tat + rate.interval
        return 0.0


def retry_after(seconds: float) -> str:
    """A Retry-After value: whole seconds, at least 1."""
    return str(max(1, math.ceil(seconds)))
