"""A crawler storm against a small OMERO.web: how long a logged-in user waits, with [limits]
and without (porter as it was: one FIFO pool to OMERO.web), in the same run.

OMERO.web is modelled (tests/echo_upstream.py /busy): THREADS requests at once, SERVICE
seconds each, a FIFO queue behind them as gunicorn's. Porter has [public] on and no cache.
Anonymous clients walk distinct public URLs, each from its own /24 (through a trusted
proxy's X-Forwarded-For); alice, logged in, asks for a page every 100 ms throughout.

Printed per storm size (0, 32, 96, 300 clients) and porter kind: the user's median and p99,
OMERO.web's utilisation (busy thread-seconds / available), public answers and refusals by
status. Then the CPU of a refusal against aiohttp's floor (a constant answer), with wrk.

    .venv/bin/python bench/overload.py [--seconds 6]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import (
    QUIET_SESSION,
    Processes,
    ensure_tools,
    free_port,
    log_in,
    percentile,
    start_porter,
    start_small_upstream,
    wait_port,
    wrk,
)
from tests.omero_sim.fixture import OmeroSim, start_sim, stop_sim

THREADS = 4
SERVICE = 0.025
STORMS = (0, 32, 96, 300)

MODELLED_WEB = """
import sys
from aiohttp import web
from tests.echo_upstream import STATE, create_echo_app
app = create_echo_app()
app[STATE].threads, app[STATE].service_time = int(sys.argv[2]), float(sys.argv[3])
async def stats(request):
    return web.json_response({"served": len(request.app[STATE].served)})
app.router.add_get("/__stats", stats)
app.router._resources.insert(0, app.router._resources.pop())  # before the catch-all
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None, access_log=None)
"""


def sections(sim: OmeroSim, limits: bool, slots: int = 0) -> dict[str, Any]:
    entry = sim.server_list_entry()
    return {
        "proxy": {"trusted_proxies": ["127.0.0.1/32"], "upstream_connections": 1000},
        "omero": {"server_list": [list(entry)]},
        "session": QUIET_SESSION,
        "public": {
            "enabled": True,
            "url_filter": "^/busy/.*",
            "user": "public",
            "password": sim.users["public"],
        },
        "limits": {
            "enabled": limits,
            "omero_web_workers": THREADS,  # what the site says of its OMERO.web
            "upstream_slots": slots,
            "allow_from": [],
        },
    }


async def served(web: str, http: aiohttp.ClientSession) -> int:
    async with http.get(web + "/__stats") as resp:
        return int((await resp.json())["served"])


async def storm(base: str, web: str, cookie: str, clients: int, seconds: float) -> dict[str, Any]:
    """`clients` crawlers and alice for `seconds`: the figures of one round."""
    stop = asyncio.Event()
    statuses: Counter[int] = Counter()
    user_ms: list[float] = []
    connector = aiohttp.TCPConnector(limit=0)
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(
        connector=connector, timeout=timeout, cookie_jar=aiohttp.DummyCookieJar()
    ) as http:

        async def crawler(n: int) -> None:
            page = 0
            headers = {"X-Forwarded-For": f"10.{n // 250}.{n % 250}.7"}
            while not stop.is_set():
                page += 1
                async with http.get(f"{base}/busy/c{n}/{page}", headers=headers) as resp:
                    await resp.read()
                    statuses[resp.status] += 1

        async def alice() -> None:
            n = 0
            while not stop.is_set():
                n += 1
                started = time.perf_counter()
                async with http.get(
                    f"{base}/busy/alice/{n}", headers={"Cookie": f"porter_session={cookie}"}
                ) as resp:
                    await resp.read()
                    if resp.status == 200:
                        user_ms.append((time.perf_counter() - started) * 1000)
                    else:
                        statuses[-resp.status] += 1  # a user refused: must never happen
                await asyncio.sleep(0.1)

        before = await served(web, http)
        started = time.perf_counter()
        tasks = [asyncio.create_task(crawler(n)) for n in range(clients)]
        await asyncio.sleep(min(1.0, seconds / 4))  # the storm settles
        user = asyncio.create_task(alice())
        await asyncio.sleep(seconds)
        stop.set()
        await asyncio.gather(user, *tasks, return_exceptions=True)
        elapsed = time.perf_counter() - started
        done = await served(web, http) - before
    return {
        "median": percentile(user_ms, 0.5),
        "p99": percentile(user_ms, 0.99),
        "busy": done * SERVICE / (THREADS * elapsed),
        "statuses": statuses,
    }


def refusal_cost(procs: Processes, porter_url: str, seconds: float) -> None:
    """Requests/s of porter refusing (a denied User-Agent, 403) against the aiohttp floor: on
    one process each, their ratio is the CPU a refusal costs per request."""
    floor = start_small_upstream(procs, "floor")
    bot = {"User-Agent": "bench-bot/1.0"}
    rounds = []
    for _ in range(3):
        f = wrk(floor + "/", 32, seconds)
        r = wrk(porter_url + "/busy/x", 32, seconds, headers=bot)
        rounds.append((f.rps, r.rps))
    floors = sorted(f for f, _ in rounds)
    refusals = sorted(r for _, r in rounds)
    print("\nA refusal's CPU against aiohttp's floor (wrk c=32, 3 interleaved rounds, medians)")
    print(f"  aiohttp floor (constant answer)  {floors[1]:9.0f} req/s")
    print(f"  porter 403 (denied User-Agent)   {refusals[1]:9.0f} req/s")
    print(f"  CPU per refusal / floor          {floors[1] / refusals[1]:9.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--slots", type=int, default=0, help="upstream_slots (0: derived)")
    args = parser.parse_args()
    ensure_tools(["wrk"], ["wrk"])
    sim = start_sim()
    try:
        with tempfile.TemporaryDirectory() as tmp, Processes(Path(tmp)) as procs:
            port = free_port()
            web_process = procs.start(
                "web",
                [sys.executable, "-c", MODELLED_WEB, str(port), str(THREADS), str(SERVICE)],
            )
            wait_port(port, process=web_process)
            web = f"http://127.0.0.1:{port}"
            porters = {
                "limits": start_porter(procs, "limits", web, sections(sim, True, args.slots)),
                "fifo": start_porter(procs, "fifo", web, sections(sim, False)),
            }
            print(
                f"OMERO.web modelled: {THREADS} threads x {SERVICE * 1000:.0f} ms; "
                f"alice every 100 ms; {args.seconds:g} s per round"
            )
            header = (
                f"{'clients':>7} {'porter':>7} {'user med':>9} {'user p99':>9} "
                f"{'x idle':>7} {'web busy':>8}  answers to crawlers"
            )
            print(header)
            idle: dict[str, float] = {}
            for clients in STORMS:
                for kind, porter in porters.items():
                    cookie = asyncio.run(log_in(porter.url, "alice", sim.users["alice"]))
                    found = asyncio.run(storm(porter.url, web, cookie, clients, args.seconds))
                    idle.setdefault(kind, found["median"])
                    ratio = found["median"] / idle[kind]
                    answers = ", ".join(
                        f"{status}: {count}" for status, count in sorted(found["statuses"].items())
                    )
                    print(
                        f"{clients:>7} {kind:>7} {found['median']:8.1f}ms {found['p99']:8.1f}ms "
                        f"{ratio:6.1f}x {found['busy'] * 100:7.0f}%  {answers or '-'}"
                    )
            bots = sections(sim, True)
            bots["limits"]["deny_agents"] = ["bench-bot"]
            refusal_cost(procs, start_porter(procs, "bots", web, bots).url, 5.0)
    finally:
        stop_sim(sim)


if __name__ == "__main__":
    main()
