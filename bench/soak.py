"""A bounded soak: porter (Redis store, public access on) in front of real OMERO.web and the
OMERO test server, under a steady mix of traffic, with its resources printed as it goes.

Run on demand (not a test):
    .venv/bin/python bench/soak.py [--duration 600] [--interval 30] [--connections 16]
                                   [--workers 2]

Porter runs as production would: `--workers` gunicorn workers on the Redis store, the public
cache in memory and on its shared disk tier.

The mix, per connection, request after request until the duration ends:
- public:  cookieless GETs of public paths (keepalive_ping, getImgRDef);
- user:    GETs of logged-in users (alice, bob, carol: one porter session each, kept);
- bad:     paths porter refuses (400) and query credentials (400);
- churn:   log in on porter's form, one request, log out (a new session each time).

Every `interval` seconds it prints: requests by kind, unexpected answers, porter's RSS,
open file descriptors and threads, the OMERO test server's live sessions, Redis keys and
OMERO.web's Django session files. What should hold: nothing unexpected; RSS, FDs, threads
flat; OMERO sessions = the public one + the users' + the churn in flight; Redis keys and
OMERO.web's session files flat (porter ends OMERO.web's session on every logout).
"""

from __future__ import annotations

import argparse
import asyncio
import re
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

if __package__ in (None, ""):  # run as a script: import from the project, not from bench/
    sys.path[0] = str(Path(__file__).resolve().parent.parent)

import aiohttp
from redis import Redis
from yarl import URL

from bench._common import Processes, load_line, log_in, start_porter
from tests.omero_sim.fixture import OmeroSim, start_sim, stop_sim
from tests.redis_fixture import RedisServer
from tests.web_fixture import OmeroWeb, start_web, stop_web, web_config

PUBLIC = ("/webclient/keepalive_ping/", "/webgateway/getImgRDef/")
BAD = ("/webgateway/%2e%2e/webadmin/", "/webclient/keepalive_ping/?bsession=stolen")
USERS = ("alice", "bob", "carol")
# What each kind may answer; anything else is counted as unexpected.
EXPECTED = {"public": {200}, "user": {200}, "bad": {400}, "churn": {200, 303}}


def _children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(stat.parent.name))
        except (OSError, ValueError, IndexError):
            continue
    return found


def proc_status(pid: int) -> dict[str, int]:
    """RSS (KiB), threads and FDs of porter: the process and its workers, summed."""
    fields = {"VmRSS": 0, "Threads": 0, "FDs": 0}
    for one in [pid, *_children(pid)]:
        try:
            for line in Path(f"/proc/{one}/status").read_text().splitlines():
                name, _, value = line.partition(":")
                if name in ("VmRSS", "Threads"):
                    fields[name] += int(value.split()[0])
            fields["FDs"] += len(list(Path(f"/proc/{one}/fd").iterdir()))
        except OSError:
            continue  # a worker replaced meanwhile
    return fields


def web_sessions(web: OmeroWeb) -> int:
    return sum(1 for p in web.session_dir.rglob("*") if p.is_file() and "sessionid" in p.name)


class Soak:
    def __init__(self, url: str, deadline: float) -> None:
        self.url = url
        self.deadline = deadline
        self.done: Counter[str] = Counter()
        self.unexpected: Counter[str] = Counter()

    def count(self, kind: str, status: int) -> None:
        self.done[kind] += 1
        if status not in EXPECTED[kind]:
            self.unexpected[f"{kind} {status}"] += 1

    async def get(self, session: aiohttp.ClientSession, kind: str, path: str) -> None:
        # encoded: sent as written (yarl would resolve %2e%2e before porter sees it)
        url = URL(self.url + path, encoded=True)
        async with session.get(url, allow_redirects=False) as resp:
            await resp.read()
            self.count(kind, resp.status)

    async def churn(self, sim: OmeroSim) -> None:
        jar = aiohttp.CookieJar(unsafe=True)
        async with aiohttp.ClientSession(cookie_jar=jar) as session:
            async with session.get(self.url + "/porter/login") as resp:
                page = await resp.text()
            token = re.search(r'name="csrf_token" value="([^"]+)"', page)
            assert token is not None
            form = {"csrf_token": token.group(1), "username": "bob", "password": "bob-pass"}
            async with session.post(
                self.url + "/porter/login", data=form, allow_redirects=False
            ) as resp:
                self.count("churn", resp.status)
            await self.get(session, "churn", PUBLIC[0])
            async with session.get(self.url + "/porter/logout") as resp:
                page = await resp.text()
            token = re.search(r'name="csrf_token" value="([^"]+)"', page)
            if token is None:
                self.unexpected["churn logout page"] += 1
                return
            async with session.post(
                self.url + "/porter/logout",
                data={"csrf_token": token.group(1)},
                allow_redirects=False,
            ) as resp:
                self.count("churn", resp.status)

    async def connection(self, n: int, cookies: dict[str, str], sim: OmeroSim) -> None:
        user = USERS[n % len(USERS)]
        async with (
            aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as anonymous,
            aiohttp.ClientSession(cookies={"porter_session": cookies[user]}) as logged_in,
        ):
            step = 0
            while time.monotonic() < self.deadline:
                step += 1
                try:
                    if step % 20 == 0:
                        await self.churn(sim)
                    elif step % 7 == 0:
                        await self.get(anonymous, "bad", BAD[step % len(BAD)])
                    elif step % 2 == 0:
                        await self.get(logged_in, "user", PUBLIC[0])
                    else:
                        await self.get(anonymous, "public", PUBLIC[step % len(PUBLIC)])
                except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
                    self.unexpected[type(exc).__name__] += 1


async def soak(args: argparse.Namespace, directory: Path) -> int:
    sim = start_sim()
    redis = RedisServer(directory / "redis-data")
    (directory / "redis-data").mkdir()
    redis.start()
    web = start_web(web_config(sim), directory)
    try:
        with Processes(directory) as procs:
            porter = start_porter(
                procs,
                "porter",
                web.base_url,
                sections={
                    "omero": {"server_list": [sim.server_list_entry()]},
                    "session": {
                        "store": "redis",
                        "redis_url": redis.url,
                        "redis_password": redis.password,
                    },
                    "public": {
                        "enabled": True,
                        "url_filter": r"^/(webclient/keepalive_ping/|webgateway/getImgRDef/)",
                        "user": "public",
                        "password": sim.users["public"],
                    },
                    "proxy": {"workers": args.workers},
                    "cache": {  # memory and the shared disk tier, as production would
                        "enabled": True,
                        "disk_dir": str(directory / "cache-disk"),
                        "rules": [
                            {"path": "/webclient/keepalive_ping/", "methods": ["GET"], "ttl": 1.0}
                        ],
                    },
                },
            )
            cookies = {user: await log_in(porter.url, user, sim.users[user]) for user in USERS}
            keys = Redis(port=redis.port, password=redis.password)
            start = time.monotonic()
            run = Soak(porter.url, start + args.duration)
            workers = [
                asyncio.create_task(run.connection(n, cookies, sim))
                for n in range(args.connections)
            ]
            print(f"soak of {args.duration:g} s, {args.connections} connections; {load_line()}")
            print(
                f"{'t s':>5} {'public':>8} {'user':>8} {'bad':>6} {'churn':>6} {'unexp':>5} "
                f"{'RSS MiB':>8} {'FDs':>5} {'thr':>4} {'OMERO':>6} {'Redis':>6} {'web':>5}"
            )

            def line() -> tuple[int, ...]:
                status = proc_status(porter.process.pid)
                row = (
                    int(time.monotonic() - start),
                    run.done["public"],
                    run.done["user"],
                    run.done["bad"],
                    run.done["churn"],
                    sum(run.unexpected.values()),
                    status["VmRSS"] // 1024,
                    status["FDs"],
                    status["Threads"],
                    int(sim.stats()["sessions_active"]),
                    int(keys.dbsize()),
                    web_sessions(web),
                )
                widths = (5, 8, 8, 6, 6, 5, 8, 5, 4, 6, 6, 5)
                print(" ".join(f"{v:>{w}}" for v, w in zip(row, widths, strict=True)), flush=True)
                return row

            rows = [line()]
            while time.monotonic() < run.deadline:
                await asyncio.sleep(min(args.interval, max(0.1, run.deadline - time.monotonic())))
                rows.append(line())
            await asyncio.gather(*workers)
            await asyncio.sleep(2)  # logouts finish, OMERO.web flushes
            rows.append(line())
            keys.close()
    finally:
        stop_web(web)
        redis.stop()
        stop_sim(sim)
    total = sum(run.done.values())
    first, last = rows[1] if len(rows) > 2 else rows[0], rows[-1]
    print(f"\n{total} requests; unexpected: {dict(run.unexpected) or 'none'}")
    print(
        f"from the first report to the end: RSS {last[6] - first[6]:+d} MiB, FDs "
        f"{last[7] - first[7]:+d}, threads {last[8] - first[8]:+d}, OMERO sessions "
        f"{first[9]} -> {last[9]}, Redis keys {first[10]} -> {last[10]}, OMERO.web sessions "
        f"{first[11]} -> {last[11]} ({run.done['churn'] // 3} logins churned)"
    )
    print(f"after: {load_line()}")
    return 1 if run.unexpected else 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--duration", type=float, default=600, help="seconds of traffic")
    parser.add_argument("--interval", type=float, default=30, help="seconds between reports")
    parser.add_argument("--connections", type=int, default=16, help="concurrent clients")
    parser.add_argument("--workers", type=int, default=2, help="porter's gunicorn workers")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        sys.exit(asyncio.run(soak(args, Path(tmp))))


if __name__ == "__main__":
    main()
