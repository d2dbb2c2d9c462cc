"""Per-request cost of the session lookup: memory store vs Redis store vs a public path without
any session, same porter build, same upstream, same run; then the session store figures.

Run on demand (not a test): .venv/bin/python bench/sessions.py [--duration 5] [--rounds 3]
Needs wrk and redis-server. Starts the OMERO test server, a small upstream that answers
OMERO.web's handoff, a private redis-server and two porter processes (memory store and Redis
store, both with a public path). The logged-in cookies come from real logins through porter's
/porter/login form (alice, against the test server); the public rows send no cookie and are
served on porter's one shared public session. Targets are interleaved in every round; figures
are medians over the rounds. Afterwards it runs bench/session_store.py (memory per session at
100k sessions, purge of 100k with the longest event-loop stall) and prints its figures.
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: import from the project, not from bench/
    sys.path[0] = str(Path(__file__).resolve().parent.parent)

from bench._common import (
    QUIET_SESSION,
    ROOT,
    SMALL_BODY_START,
    Processes,
    Summary,
    Target,
    ensure_tools,
    expect,
    load_line,
    log_in,
    print_ratios,
    print_table,
    start_porter,
    start_small_upstream,
    wrk_matrix,
)
from tests.omero_sim.fixture import OmeroSim, start_sim, stop_sim
from tests.redis_fixture import RedisServer

PRIVATE = "/webclient/data/small"  # login required
PUBLIC = "/public/small"  # public (url_filter)
CONCURRENCIES = (1, 32)


def sections(sim: OmeroSim, session: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    host, port, name = sim.server_list_entry()
    return {
        "omero": {"server_list": [[host, port, name]]},
        "session": {**session, **QUIET_SESSION},
        "public": {
            "enabled": True,
            "url_filter": r"^/public/.*",
            "user": "public",
            "password": sim.users["public"],
            "server_id": 1,
        },
    }


def measure(
    tmp: Path, sim: OmeroSim, redis: RedisServer, duration: float, rounds: int
) -> dict[tuple[str, int], Summary]:
    with Processes(tmp) as procs:
        upstream = start_small_upstream(procs)
        memory = start_porter(procs, "porter-memory", upstream, sections(sim, {"store": "memory"}))
        redis_store = {
            "store": "redis",
            "redis_url": redis.url,
            "redis_password": redis.password,
            "redis_key_prefix": "porter-bench:",
        }
        shared = start_porter(procs, "porter-redis", upstream, sections(sim, redis_store))
        password = sim.users["alice"]
        memory_cookie = asyncio.run(log_in(memory.url, "alice", password))
        redis_cookie = asyncio.run(log_in(shared.url, "alice", password))
        targets = [
            Target("direct", upstream + PRIVATE, {}),
            Target("memory", memory.url + PRIVATE, {"Cookie": f"porter_session={memory_cookie}"}),
            Target("redis", shared.url + PRIVATE, {"Cookie": f"porter_session={redis_cookie}"}),
            Target("public", memory.url + PUBLIC, {}),
            Target("public-redis", shared.url + PUBLIC, {}),
        ]
        for target in targets:
            expect(target.url, target.headers, 200, SMALL_BODY_START)
        expect(memory.url + PRIVATE, {}, 302, "")  # no cookie, not public: to login
        before = sim.stats()["sessions_created"]
        print(
            f"small GETs, wrk on loopback, {rounds} rounds of {duration:g} s per target and "
            "concurrency, 2 shared cores.\n  memory/redis: porter with that session store and a "
            f"logged-in cookie ({PRIVATE}); public/public-redis: the same porter processes, "
            f"no cookie, public path ({PUBLIC}); direct: the upstream itself\n  {load_line()}"
        )
        summaries = wrk_matrix(targets, CONCURRENCIES, duration, rounds)
        for target in targets:
            expect(target.url, target.headers, 200, SMALL_BODY_START)
        created = sim.stats()["sessions_created"] - before
        print(f"OMERO sessions created while measuring: {created}")
        return summaries


def lookup_costs(summaries: Mapping[tuple[str, int], Summary]) -> None:
    """What a session lookup adds per request, against the public path of the same process."""
    for connections in CONCURRENCIES:
        for name, public in (("memory", "public"), ("redis", "public-redis")):
            s, base = summaries[(name, connections)], summaries[(public, connections)]
            extra = (1 / s.rps - 1 / base.rps) * 1e6
            p50 = (s.p50_ms - base.p50_ms) * 1000
            print(
                f"c={connections:<3} {name} lookup vs {public}: {extra:+.0f} us per request "
                f"(1/req/s), p50 {p50:+.0f} us"
            )


def store_figures(sessions: int) -> None:
    """bench/session_store.py in its own process, so its memory figure is its own."""
    print(f"\nsession store figures (bench/session_store.py --sessions {sessions}):", flush=True)
    subprocess.run(
        [sys.executable, "-m", "bench.session_store", "--sessions", str(sessions)],
        cwd=ROOT,
        check=True,
        timeout=900,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--duration", type=float, default=5, help="seconds per measurement")
    parser.add_argument("--rounds", type=int, default=3, help="measurements per target")
    parser.add_argument("--sessions", type=int, default=100_000, help="for session_store.py")
    args = parser.parse_args()
    ensure_tools(("wrk",), ("wrk",))
    with tempfile.TemporaryDirectory() as tmp:
        sim = start_sim()
        redis = RedisServer(Path(tmp))
        try:
            redis.start()
            summaries = measure(Path(tmp), sim, redis, args.duration, args.rounds)
        finally:
            redis.stop()
            stop_sim(sim)
    print("\nmedians over rounds")
    print_table(summaries)
    print()
    print_ratios(
        summaries,
        [("memory", "public"), ("redis", "public-redis"), ("redis", "memory")],
        CONCURRENCIES,
    )
    lookup_costs(summaries)
    store_figures(args.sessions)


if __name__ == "__main__":
    main()
