"""Anonymous requests: through porter's public gateway vs straight to OMERO.web's built-in
public user, same run, same path, with the OMERO sessions each created.

Run on demand (not a test): .venv/bin/python bench/public.py [--duration 4] [--rounds 3]
Needs wrk. Starts the OMERO test server and two real OMERO.web (gunicorn, 1 worker, 8
threads, OMERO.web's default DummyCache): one plain, behind porter (public path
/webclient/keepalive_ping/ through porter's one shared public session), one with OMERO.web's
own public user on the same path. wrk sends no cookie: every request is a first-time visitor
or a crawler. OMERO sessions created are read from the test server's counters around every
wrk run. Durations are bounded, not request counts (the built-in public user is slow).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: import from the project, not from bench/
    sys.path[0] = str(Path(__file__).resolve().parent.parent)

from bench._common import (
    QUIET_SESSION,
    Processes,
    Summary,
    Target,
    ensure_tools,
    expect,
    load_line,
    print_ratios,
    print_table,
    start_porter,
    wrk_matrix,
)
from tests.omero_sim.fixture import OmeroSim, start_sim, stop_sim
from tests.redis_fixture import RedisServer
from tests.web_fixture import OmeroWeb, start_web, stop_web, web_config

PATH = "/webclient/keepalive_ping/"
CONCURRENCIES = (1, 8)
COUNTERS = ("sessions_created", "logins", "joins")


class Counted:
    """OMERO test server counters attributed to each target (only one runs at a time)."""

    def __init__(self, sim: OmeroSim) -> None:
        self.sim = sim
        self.by_target: dict[str, dict[str, int]] = {}

    def settled(self, quiet: float = 0.5, limit: float = 15.0) -> dict[str, int]:
        """The counters once they stopped moving: requests wrk left in flight finish (and are
        counted) before the next target runs."""
        deadline = time.monotonic() + limit
        last = self.sim.stats()
        while time.monotonic() < deadline:
            time.sleep(quiet)
            now = self.sim.stats()
            if all(now[key] == last[key] for key in COUNTERS):
                break
            last = now
        return {key: int(last[key]) for key in COUNTERS}

    @contextmanager
    def __call__(self, target: Target) -> Iterator[None]:
        before = self.sim.stats()
        try:
            yield
        finally:
            after = self.settled()
            counts = self.by_target.setdefault(target.name, dict.fromkeys(COUNTERS, 0))
            for key in COUNTERS:
                counts[key] += after[key] - before[key]
            created = after["sessions_created"] - before["sessions_created"]
            if created and target.name.startswith("porter"):
                print(f"  porter created {created} OMERO session(s) in this run", flush=True)


def measure(
    tmp: Path,
    sim: OmeroSim,
    plain: OmeroWeb,
    builtin: OmeroWeb,
    redis: RedisServer,
    duration: float,
    rounds: int,
) -> tuple[dict[tuple[str, int], Summary], Counted]:
    host, port, name = sim.server_list_entry()
    with Processes(tmp) as procs:
        sections: dict[str, Any] = {
            "omero": {"server_list": [[host, port, name]]},
            "session": QUIET_SESSION,
            "public": {
                "enabled": True,
                "url_filter": f"^{PATH}$",
                "user": "public",
                "password": sim.users["public"],
                "server_id": 1,
            },
        }
        porter = start_porter(
            procs,
            "porter",
            plain.base_url,
            sections,
            log_level="info",  # the public session's life: created, invalidated, ...
        )
        redis_session = {
            "store": "redis",
            "redis_url": redis.url,
            "redis_password": redis.password,
            "redis_key_prefix": "bench-public:",
            **QUIET_SESSION,
        }
        two = start_porter(
            procs,
            "porter-w2",
            plain.base_url,
            {**sections, "proxy": {"workers": 2}, "session": redis_session},
            log_level="info",
        )
        time.sleep(3)  # the second worker starts too
        targets = [
            Target("porter", porter.url + PATH, {}),
            Target("porter-w2", two.url + PATH, {}),
            Target("omeroweb-public", builtin.url(PATH), {}),
        ]
        counted = Counted(sim)
        for target in targets:  # served as the public user ("OK"), not "Connection Failed"
            with counted(target):
                expect(target.url, target.headers, 200, "OK")
        print(
            f"cookieless GETs of {PATH}, wrk on loopback, {rounds} rounds of {duration:g} s per "
            f"target and concurrency, 2 shared cores; {load_line()}",
            flush=True,
        )
        summaries = wrk_matrix(
            targets, CONCURRENCIES, duration, rounds, timeout=10, warm_up=0, around=counted
        )
        for target in targets:
            with counted(target):
                expect(target.url, target.headers, 200, "OK")
        print(f"after: {load_line()}")
        events = [line for line in procs.log("porter").splitlines() if "public session" in line]
        print("porter's log about the public session:", *events, sep="\n  ")
        return summaries, counted


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--duration", type=float, default=4, help="seconds per measurement")
    parser.add_argument("--rounds", type=int, default=3, help="measurements per target")
    args = parser.parse_args()
    ensure_tools(("wrk",), ("wrk",))
    with tempfile.TemporaryDirectory() as tmp:
        sim = start_sim()
        redis = RedisServer(Path(tmp))
        redis.start()
        webs: list[OmeroWeb] = []
        try:
            webs.append(start_web(web_config(sim), Path(tmp)))
            webs.append(start_web(web_config(sim, public_user=True), Path(tmp)))
            plain, builtin = webs
            summaries, counted = measure(
                Path(tmp), sim, plain, builtin, redis, args.duration, args.rounds
            )
        finally:
            for web in webs:
                stop_web(web)
            redis.stop()
            stop_sim(sim)
    print("\nmedians over rounds")
    print_table(summaries)
    print()
    print_ratios(summaries, [("porter", "omeroweb-public"), ("porter-w2", "porter")], CONCURRENCIES)
    print("\nOMERO test server counters over the whole run (checks included):")
    for name, counts in counted.by_target.items():
        served = sum(s.requests for (n, _), s in summaries.items() if n == name) + 2
        print(
            f"  {name:<16} {served:>7} requests: {counts['sessions_created']:>6} OMERO sessions "
            f"created, {counts['logins']:>6} logins, {counts['joins']:>6} joins"
        )


if __name__ == "__main__":
    main()
