"""Mail storm: 10,000 upstream 500s in 60 s through porter with admin mail on vs mail off.

Run on demand (not a test): .venv/bin/python bench/mail.py [--requests 10000] [--seconds 60]
Needs redis-server. Starts the tests' echo upstream (its /django-500/... answers OMERO.web's
debug 500 page, traceback included), a private redis-server holding one logged-in session
(porter is deny-by-default: the 500s must be forwarded), a real SMTP server (aiosmtpd on
loopback) and two porter processes: mail on (one admin, that SMTP server, default dedup and
hourly cap) and mail off (admins = [], inactive). Each gets the same open-loop load in turn
(requests sent on a fixed schedule, at most --concurrency in flight); the latency of every
request is recorded by the client. Mails are counted at the SMTP server during the run and
after porter's shutdown (which mails the open digests).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

if __package__ in (None, ""):  # run as a script: import from the project, not from bench/
    sys.path[0] = str(Path(__file__).resolve().parent.parent)

from bench._common import (
    QUIET_SESSION,
    Porter,
    Processes,
    expect,
    load_line,
    percentile,
    start_echo_upstream,
    start_porter,
)
from tests.porter_fixtures import shared_session
from tests.redis_fixture import RedisServer
from tests.smtp_fixture import SmtpServer, start_smtp_server

PATH = "/django-500/webclient/api/"  # one failure: one fingerprint (status + canonical path)
KEY_PREFIX = "porter-bench:"
ADMINS = [["Ada Admin", "ada@example.org"]]


@dataclass
class Load:
    """What the client saw for one porter."""

    name: str
    latencies: list[float] = field(default_factory=list)  # seconds, send to full body
    lags: list[float] = field(default_factory=list)  # seconds behind the schedule at send
    statuses: Counter[int | str] = field(default_factory=Counter)
    wall: float = 0.0
    mails_during: int = 0
    mails_after_stop: int = 0


async def storm(
    porter: Porter, cookie: str, requests: int, seconds: float, concurrency: int
) -> Load:
    """`requests` GETs of PATH on a fixed schedule over `seconds`, at most `concurrency` in
    flight; every latency recorded."""
    load = Load(porter.name)
    gate = asyncio.Semaphore(concurrency)
    connector = aiohttp.TCPConnector(limit=concurrency)
    timeout = aiohttp.ClientTimeout(total=30)
    url = porter.url + PATH
    headers = {"Cookie": f"porter_session={cookie}"}
    async with aiohttp.ClientSession(
        connector=connector, timeout=timeout, cookie_jar=aiohttp.DummyCookieJar()
    ) as client:
        start = time.perf_counter()

        async def one(due: float) -> None:
            sent = time.perf_counter()
            load.lags.append(sent - due)
            try:
                async with client.get(url, headers=headers) as response:
                    await response.read()
                    load.statuses[response.status] += 1
            except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
                load.statuses[type(exc).__name__] += 1
            finally:
                load.latencies.append(time.perf_counter() - sent)
                gate.release()

        in_flight: set[asyncio.Task[None]] = set()
        for index in range(requests):
            due = start + index * seconds / requests
            await asyncio.sleep(max(0.0, due - time.perf_counter()))
            await gate.acquire()  # at most `concurrency` in flight: later sends lag instead
            task = asyncio.create_task(one(due))
            in_flight.add(task)
            task.add_done_callback(in_flight.discard)
        await asyncio.gather(*in_flight)
        load.wall = time.perf_counter() - start
    return load


async def wait_mails(smtp: SmtpServer, settle: float = 2.0, limit: float = 20.0) -> int:
    """The number of mails received once no new one arrived for `settle` seconds."""
    deadline = time.monotonic() + limit
    seen, quiet_since = len(smtp.inbox.messages), time.monotonic()
    while time.monotonic() < deadline and time.monotonic() - quiet_since < settle:
        await asyncio.sleep(0.1)
        if len(smtp.inbox.messages) != seen:
            seen, quiet_since = len(smtp.inbox.messages), time.monotonic()
    return seen


def report(loads: list[Load], requests: int, seconds: float) -> None:
    print(f"\n{requests} upstream 500s per porter, scheduled over {seconds:g} s")
    print(
        f"{'porter':<10} {'wall s':>7} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} "
        f"{'lag p99 ms':>10} {'mails run':>9} {'+at stop':>8}  statuses"
    )
    for load in loads:
        ms = [x * 1000 for x in load.latencies]
        print(
            f"{load.name:<10} {load.wall:>7.1f} {percentile(ms, 0.5):>8.2f} "
            f"{percentile(ms, 0.99):>8.2f} {max(ms):>8.2f} "
            f"{percentile([x * 1000 for x in load.lags], 0.99):>10.2f} "
            f"{load.mails_during:>9} {load.mails_after_stop:>8}  {dict(load.statuses)}"
        )
    on, off = (next(x for x in loads if x.name == n) for n in ("mail-on", "mail-off"))
    on_ms, off_ms = sorted(on.latencies), sorted(off.latencies)
    print(
        f"mail-on/mail-off: p50 {percentile(on_ms, 0.5) / percentile(off_ms, 0.5):.2f}, "
        f"p99 {percentile(on_ms, 0.99) / percentile(off_ms, 0.99):.2f}, "
        f"mean {statistics.fmean(on_ms) / statistics.fmean(off_ms):.2f}"
    )


async def run(
    tmp: Path, redis: RedisServer, smtp: SmtpServer, args: argparse.Namespace
) -> list[Load]:
    session = {
        "store": "redis",
        "redis_url": redis.url,
        "redis_password": redis.password,
        "redis_key_prefix": KEY_PREFIX,
        **QUIET_SESSION,
    }
    mail_on = {
        "admins": ADMINS,
        "email_host": smtp.host,
        "email_port": smtp.port,
        "server_email": "porter@example.org",
    }
    loads: list[Load] = []
    with Processes(tmp) as procs:
        upstream = start_echo_upstream(procs)
        porters = {
            "mail-off": start_porter(
                procs, "mail-off", upstream, {"session": session, "mail": {"admins": []}}
            ),
            "mail-on": start_porter(
                procs, "mail-on", upstream, {"session": session, "mail": mail_on}
            ),
        }
        cookie = await shared_session(redis.url, redis.password, KEY_PREFIX)
        for porter in porters.values():
            expect(porter.url + "/echo/ok", {"Cookie": f"porter_session={cookie}"}, 200, "{")
        print(f"{load_line()}", flush=True)
        for name in ("mail-off", "mail-on"):
            before = len(smtp.inbox.messages)
            print(f"{name}: {args.requests} requests over {args.seconds:g} s ...", flush=True)
            load = await storm(porters[name], cookie, args.requests, args.seconds, args.concurrency)
            load.mails_during = await wait_mails(smtp) - before
            procs.stop(porters[name].process)
            load.mails_after_stop = await wait_mails(smtp) - before - load.mails_during
            loads.append(load)
        print(f"after: {load_line()}")
    for message in smtp.inbox.messages:
        print(f"  mail: {message.message['Subject']}")
    return loads


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=10_000, help="per porter")
    parser.add_argument("--seconds", type=float, default=60, help="schedule length per porter")
    parser.add_argument("--concurrency", type=int, default=32, help="most requests in flight")
    args = parser.parse_args()
    smtp = start_smtp_server()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            redis = RedisServer(Path(tmp))
            redis.start()
            try:
                loads = asyncio.run(run(Path(tmp), redis, smtp, args))
            finally:
                redis.stop()
    finally:
        smtp.stop()
    report(loads, args.requests, args.seconds)


if __name__ == "__main__":
    main()
