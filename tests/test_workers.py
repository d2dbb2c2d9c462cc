"""Several porter processes on one Redis: `run.py serve` with [proxy] workers = 3, as an admin
runs it (real processes, SO_REUSEPORT, the OMERO test server, the echo upstream standing in
for OMERO.web). Each new connection may land on any worker; the JSON log's pid says which."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from redis.asyncio import Redis

from tests.omero_sim.fixture import OmeroSim
from tests.porter_fixtures import OPERATOR_TOKEN, ROOT, PorterProcess, Upstream, free_port
from tests.redis_fixture import RedisServer
from tests.test_session_store import everything_in_redis
from tests.test_sso import ISSUER, Idp, bearer

pytestmark = pytest.mark.slow
WORKERS = 3
FAILURES = 8  # failed logins before 429: enough that they cannot all land on one worker


def sections(
    sim: OmeroSim, redis: RedisServer, idp: Idp, metrics_port: int
) -> dict[str, dict[str, Any]]:
    return {
        "session": {
            "store": "redis",
            "redis_url": redis.url,
            "redis_password": redis.password,
            "redis_key_prefix": f"workers-{time.monotonic_ns()}:",
        },
        "omero": {
            "server_list": [list(sim.server_list_entry())],
            "admin_user": "root",
            "admin_password": sim.users["root"],
        },
        "login": {"max_failures_per_user": FAILURES},
        "sso": {
            "enabled": True,
            "link_login": True,
            "issuers": [
                {
                    "issuer": ISSUER,
                    "audience": ["omero"],
                    "algorithms": ["ES256"],
                    "public_key_files": [str(idp.public_file)],
                }
            ],
        },
        "log": {"format": "json"},
        "metrics": {"listen": f"127.0.0.1:{metrics_port}"},
    }


def public_section(sim: OmeroSim) -> dict[str, Any]:
    """[public] on, /webgateway/ public, as the shared public user of the test server."""
    return {
        "enabled": True,
        "url_filter": "^/webgateway/.*",
        "user": "public",
        "password": sim.users["public"],
    }


@dataclass
class Workers:
    handle: PorterProcess
    pids: list[int]
    idp: Idp
    metrics_port: int


StartWorkers = Callable[..., Awaitable[Workers]]


@pytest.fixture
def start_workers(
    porter_process: Callable[..., PorterProcess],
    echo_upstream: Upstream,
    omero_sim: OmeroSim,
    redis_server: RedisServer,
    tmp_path: Path,
) -> StartWorkers:
    """`await start_workers(n)`: porter with n workers on Redis, once all of them listen."""

    async def start(
        count: int, proxy_extra: dict[str, Any] | None = None, **extra: dict[str, Any]
    ) -> Workers:
        idp = Idp(tmp_path)
        metrics_port = free_port()
        handle = porter_process(
            {**sections(omero_sim, redis_server, idp, metrics_port), **extra},
            upstream=echo_upstream.url,
            workers=count,
            operator_token=OPERATOR_TOKEN,  # `run.py cache purge` reaches a worker with it
            **(proxy_extra or {}),
        )
        pids = await asyncio.to_thread(wait_workers, handle, count)
        return Workers(handle, pids, idp, metrics_port)

    return start


def log_lines(handle: PorterProcess) -> list[dict[str, Any]]:
    return [json.loads(line) for line in handle.log().splitlines() if line.startswith("{")]


def worker_pids(handle: PorterProcess) -> list[int]:
    return [
        int(m.group(1))
        for line in log_lines(handle)
        if (m := re.match(r"porter worker (\d+) listening", line.get("message", "")))
    ]


def wait_workers(handle: PorterProcess, count: int, timeout: float = 30) -> list[int]:
    deadline = time.monotonic() + timeout
    while len(live := [p for p in worker_pids(handle) if _alive(p)]) < count:
        assert time.monotonic() < deadline, handle.log()[-3000:]
        time.sleep(0.1)
    return live


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def connections_of(pid: int, port: int) -> set[int]:
    """Socket inodes of the clients' connections to `port` that process `pid` holds."""
    established = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local_port = int(fields[1].rsplit(":", 1)[1], 16)
        if local_port == port and fields[3] == "01":  # ESTABLISHED
            established.add(int(fields[9]))
    held = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            held.add(int(target[8:-1]))
    return established & held


class Sent:
    """Every HTTP request sent to porter, each on a new connection (any worker may take it)."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.count = 0

    async def request(
        self, method: str, path: str, cookies: dict[str, str] | None = None, **kwargs: Any
    ) -> tuple[int, str, dict[str, str]]:
        self.count += 1
        connector = aiohttp.TCPConnector(force_close=True)
        async with (
            aiohttp.ClientSession(connector=connector, cookies=cookies or {}) as session,
            session.request(method, self.base + path, allow_redirects=False, **kwargs) as resp,
        ):
            return resp.status, await resp.text(), {k: v for k, v in resp.headers.items()}


async def login_form(sent: Sent) -> tuple[dict[str, str], str]:
    """porter's login page on some worker: its CSRF cookie and token."""
    _, page, headers = await sent.request("GET", "/porter/login")
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert csrf is not None
    cookie = headers["Set-Cookie"].split("=", 1)[1].split(";", 1)[0]
    return {"porter_csrf": cookie}, csrf.group(1)


def access(handle: PorterProcess, path: str, prefix: bool = False) -> list[dict[str, Any]]:
    """Access lines of `path` (with `prefix`: of every path starting with it)."""
    return [
        line
        for line in log_lines(handle)
        if line["logger"] == "porter.access"
        and (line["path"].startswith(path) if prefix else line["path"] == path)
    ]


async def test_workers_share_sessions_throttle_sso_links_and_metrics(
    start_workers: StartWorkers,
    echo_upstream: Upstream,
    omero_sim: OmeroSim,
    redis_server: RedisServer,
) -> None:
    workers = await start_workers(WORKERS)
    handle, pids, idp, metrics_port = (
        workers.handle,
        workers.pids,
        workers.idp,
        workers.metrics_port,
    )
    sent = Sent(handle.url)

    # log in on one worker, use the session on all of them
    form_cookies, csrf = await login_form(sent)
    form = {"csrf_token": csrf, "username": "alice", "password": "alice-pass"}
    status, _, headers = await sent.request("POST", "/porter/login", form_cookies, data=form)
    assert status == 303, headers
    session = headers["Set-Cookie"].split("=", 1)[1].split(";", 1)[0]
    for n in range(30):
        status, body, _ = await sent.request("GET", f"/echo/alice/{n}", {"porter_session": session})
        assert status == 200
        assert "sessionid" in body  # forwarded with alice's held OMERO.web cookie
    served_by = {line["pid"] for line in access(handle, "/echo/alice/", prefix=True)}
    assert len(served_by) >= 2, "the kernel should spread 30 connections over 3 workers"
    assert served_by <= set(pids)

    # the throttle counts across processes: FAILURES for carol, then 429 on any worker
    failures = 0
    while failures < FAILURES:
        cookies, csrf = await login_form(sent)
        wrong = {"csrf_token": csrf, "username": "carol", "password": f"wrong{failures}"}
        status, _, _ = await sent.request("POST", "/porter/login", cookies, data=wrong)
        assert status == 401
        failures += 1
    posts = access(handle, "/porter/login")
    assert len({line["pid"] for line in posts if line["method"] == "POST"}) >= 2
    for _ in range(4):
        cookies, csrf = await login_form(sent)
        right = {"csrf_token": csrf, "username": "carol", "password": "carol-pass"}
        status, _, _ = await sent.request("POST", "/porter/login", cookies, data=right)
        assert status == 429  # on whichever worker

    # 1,000 bearer requests of one SSO user over all workers: one OMERO session of bob
    token = bearer(idp.token("bob"))
    semaphore = asyncio.Semaphore(50)

    async def one(n: int) -> int:
        async with semaphore:
            return (await sent.request("GET", f"/echo/bob/{n}", headers=token))[0]

    assert set(await asyncio.gather(*(one(n) for n in range(1000)))) == {200}
    assert [s["user"] for s in omero_sim.sessions()].count("bob") == 1
    bob_cookies = {
        value
        for r in echo_upstream.state.received
        if r.raw_path.startswith("/echo/bob/")
        for value in r.headers.getall("Cookie", ())
    }
    assert len(bob_cookies) == 1  # one OMERO.web session too
    bob_pids = {line["pid"] for line in access(handle, "/echo/bob/", prefix=True)}
    assert len(bob_pids) >= 2

    # what they share in Redis gives nobody who reads it a session to replay: no porter
    # cookie, no OMERO session key (alice's, bob's SSO one), no OMERO.web cookie in clear
    raw = Redis(port=redis_server.port, password=redis_server.password)
    try:
        dump = await everything_in_redis(raw, "")
    finally:
        await raw.aclose()
    held = [value.split("=", 1)[1] for header in bob_cookies for value in header.split("; ")]
    secrets = [session, *(s["key"] for s in omero_sim.sessions()), *held]
    assert "alice" in dump  # the sessions are there
    assert [secret for secret in secrets if secret in dump] == []

    # a link token logs in once, whichever worker gets it again
    link = idp.token("carol", jti="workers-once")
    status, _, _ = await sent.request("GET", f"/porter/sso?token={link}")
    assert status == 303
    for _ in range(6):
        status, _, headers = await sent.request("GET", f"/porter/sso?token={link}")
        assert status == 401
        assert "replayed" in headers["WWW-Authenticate"]

    # the parent's metrics listener sums every worker: every request sent is counted once
    await asyncio.sleep(0.5)
    async with (
        aiohttp.ClientSession() as scraper,
        scraper.get(f"http://127.0.0.1:{metrics_port}/metrics") as resp,
    ):
        exposition = await resp.text()
    counted = sum(
        float(line.rsplit(" ", 1)[1])
        for line in exposition.splitlines()
        if line.startswith("porter_requests_total{")
    )
    assert counted == sent.count
    assert 'porter_logins_total{result="throttled"} 4.0' in exposition
    assert f'porter_logins_total{{result="failure"}} {FAILURES}.0' in exposition
    assert 'porter_omero_sessions_created_total{reason="sso"} 2.0' in exposition  # bob, carol
    assert "porter_build_info{" in exposition
    assert handle.stop() == 0
    assert all(not _alive(pid) for pid in pids)


async def test_a_killed_worker_is_replaced_and_its_requests_fail_cleanly(
    start_workers: StartWorkers,
) -> None:
    workers = await start_workers(WORKERS)
    handle, pids, idp = workers.handle, workers.pids, workers.idp
    sent = Sent(handle.url)
    token = bearer(idp.token("bob"))

    port = int(handle.url.rsplit(":", 1)[1])

    async def slow() -> int | str:
        """One request on a raw connection (an HTTP client might retry it elsewhere)."""
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        request = (
            f"GET /slow/3 HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            f"Authorization: {token['Authorization']}\r\nConnection: close\r\n\r\n"
        )
        writer.write(request.encode())
        try:
            data = await reader.read()
        except ConnectionResetError:
            data = b""
        finally:
            writer.close()
        return int(data.split(b" ", 2)[1]) if data.startswith(b"HTTP/1.1 ") else "closed"

    requests: list[asyncio.Task[int | str]] = []
    # new connections until two workers hold some (the kernel's spread is a hash)
    while sum(1 for pid in pids if connections_of(pid, port)) < 2:
        assert len(requests) < 60
        requests += [asyncio.create_task(slow()) for _ in range(4)]
        await asyncio.sleep(0.3)
    victim = max(pids, key=lambda pid: len(connections_of(pid, port)))
    os.kill(victim, signal.SIGKILL)
    started = time.monotonic()
    outcomes = await asyncio.gather(*requests)
    took = time.monotonic() - started
    assert took < 10  # nobody hangs
    failed = [o for o in outcomes if o != 200]
    assert failed, "the killed worker had requests in flight"
    assert set(failed) == {"closed"}  # cut: no status line, never a 500 or a partial answer
    assert 200 in outcomes  # the other workers finished theirs
    live = await asyncio.to_thread(wait_workers, handle, WORKERS)
    assert victim not in live
    assert len(set(live) - set(pids)) == 1  # one new worker
    messages = [line.get("message", "") for line in log_lines(handle)]
    assert f"Worker (pid:{victim}) was sent SIGKILL! Perhaps out of memory?" in messages
    for n in range(20):  # and porter serves on, on every worker
        assert (await sent.request("GET", f"/echo/after/{n}", headers=token))[0] == 200
    assert handle.stop() == 0


def test_workers_need_the_redis_store(tmp_path: Path) -> None:
    import subprocess
    import sys

    config = tmp_path / "c.toml"

    def refused(*command: str) -> str:
        """What run.py says when it refuses `command` with the configuration (exit 2)."""
        found = subprocess.run(
            [sys.executable, str(ROOT / "run.py"), *command, "--config", str(config)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert found.returncode == 2
        return found.stderr

    config.write_text("[proxy]\nworkers = 2\n")
    for command in (["check"], ["serve"]):
        said = refused(*command)
        assert "proxy.workers" in said
        assert "session.store = 'redis'" in said
    config.write_text("[proxy]\nport = 1\n")
    said = refused("serve", "--workers", "2")
    assert "2 workers need session.store = 'redis'" in said
    assert "proxy.workers (from --workers)" in said  # the command line is named
    # checked like the file's own values
    assert "proxy.port (from --port)" in refused("serve", "--port", "70000")


async def test_sigterm_lets_every_workers_requests_finish(start_workers: StartWorkers) -> None:
    workers = await start_workers(2)
    handle, pids, idp = workers.handle, workers.pids, workers.idp
    sent = Sent(handle.url)
    token = bearer(idp.token("bob"))
    port = int(handle.url.rsplit(":", 1)[1])
    requests: list[asyncio.Task[tuple[int, str, dict[str, str]]]] = []
    # new connections until both workers hold some (the kernel's spread is a hash)
    while not all(connections_of(pid, port) for pid in pids):
        assert len(requests) < 60
        requests += [
            asyncio.create_task(sent.request("GET", "/slow/3", headers=token)) for _ in range(4)
        ]
        await asyncio.sleep(0.3)
    handle.process.send_signal(signal.SIGTERM)
    outcomes = await asyncio.gather(*requests)
    assert [status for status, _, _ in outcomes] == [200] * len(requests)  # finished, not cut
    assert await asyncio.to_thread(handle.process.wait, 30) == 0
    assert all(not _alive(pid) for pid in pids)


async def test_a_cache_purge_reaches_every_workers_memory(
    start_workers: StartWorkers, omero_sim: OmeroSim, tmp_path: Path
) -> None:
    public = public_section(omero_sim)
    workers = await start_workers(2, public=public, cache={"enabled": True})
    handle = workers.handle
    sent = Sent(handle.url)
    path = "/webgateway/render_thumbnail/7/"

    def number(body: str) -> int:
        return int(body.split("#", 1)[1].split("|", 1)[0])

    # until both workers hold the tile in memory (each fetched it once)
    before: list[int] = []
    for _ in range(60):
        status, body, _ = await sent.request("GET", path + "?tile=1")
        assert status == 200
        before.append(number(body))
        hits = {line["pid"] for line in access(handle, path) if line["cache"] == "HIT"}
        if len(hits) == 2:
            break
    assert len(hits) == 2
    config = next(tmp_path.glob(f"porter-{handle.url.rsplit(':', 1)[1]}.toml"))
    purge = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, str(ROOT / "run.py"), "cache", "purge", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert purge.returncode == 0, purge.stderr  # it reached one worker over HTTP
    await asyncio.sleep(3)  # the other reads the purge from Redis within 2 s
    after = [number((await sent.request("GET", path + "?tile=1"))[1]) for _ in range(20)]
    assert min(after) > max(before)  # no worker answered from before the purge
    assert len({line["pid"] for line in access(handle, path)}) == 2


async def test_two_workers_share_one_rate_limit_through_redis(
    start_workers: StartWorkers, omero_sim: OmeroSim
) -> None:
    public = public_section(omero_sim)
    # loopback is the client here (no front proxy): take it off the allow list
    limits = {"public_rate": 0.2, "public_burst": 4, "allow_from": []}
    workers = await start_workers(2, public=public, limits=limits)
    sent = Sent(workers.handle.url)
    statuses = [
        (await sent.request("GET", f"/webgateway/render_thumbnail/{n}/"))[0] for n in range(16)
    ]
    assert statuses.count(200) in (4, 5)  # one burst for both (a fifth if 5 s went by)
    assert statuses.count(429) == 16 - statuses.count(200)
    lines = access(workers.handle, "/webgateway/render_thumbnail/", prefix=True)
    refused = [line for line in lines if line["status"] == 429]
    assert {line["rule"] for line in refused} == {"limit:rate"}
    assert len({line["pid"] for line in refused}) == 2  # both workers refused: one count


async def test_hup_reloads_the_configuration_without_dropping_a_request(
    start_workers: StartWorkers, omero_sim: OmeroSim, tmp_path: Path
) -> None:
    public = public_section(omero_sim)
    workers = await start_workers(2, public=public)
    handle = workers.handle
    sent = Sent(handle.url)
    assert (await sent.request("GET", "/webclient/open/1"))[0] == 302  # not public yet
    config = next(tmp_path.glob(f"porter-{handle.url.rsplit(':', 1)[1]}.toml"))
    config.write_text(
        config.read_text().replace(
            'url_filter = "^/webgateway/.*"', 'url_filter = "^/webclient/open/.*"'
        )
    )
    statuses: list[int] = []
    stop = asyncio.Event()

    async def steady() -> None:  # a visitor who never stops asking, through the reload
        n = 0
        while not stop.is_set():
            n += 1
            statuses.append((await sent.request("GET", f"/webgateway/img/{n}"))[0])

    visitors = [asyncio.create_task(steady()) for _ in range(4)]
    await asyncio.sleep(0.5)
    handle.process.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 30
    while (await sent.request("GET", "/webclient/open/2"))[0] != 200:  # the new filter
        assert time.monotonic() < deadline, handle.log()[-3000:]
        await asyncio.sleep(0.2)
    await asyncio.sleep(0.5)
    stop.set()
    await asyncio.gather(*visitors)
    # the old filter's paths, before and after: 200 (old workers), then 302 (new ones);
    # never a failed request during the reload
    assert set(statuses) <= {200, 302}, statuses
    assert statuses[0] == 200
    assert statuses[-1] == 302
    deadline = time.monotonic() + 30
    while any(_alive(pid) for pid in workers.pids):  # the old ones finish and leave
        assert time.monotonic() < deadline, handle.log()[-3000:]
        await asyncio.sleep(0.1)
    live = await asyncio.to_thread(wait_workers, handle, 2)
    assert not set(live) & set(workers.pids)  # every worker replaced
    # the workers' shared metrics directory outlives the old workers (they once removed it
    # on their way out, and the new ones could not start)
    environ = Path(f"/proc/{handle.process.pid}/environ").read_bytes().split(b"\0")
    [metrics_dir] = [e.split(b"=", 1)[1] for e in environ if e.startswith(b"PROMETHEUS_")]
    assert Path(metrics_dir.decode()).is_dir()
    assert handle.stop() == 0
    assert not Path(metrics_dir.decode()).exists()  # the arbiter's to remove, at its exit


async def test_a_hung_worker_is_replaced(start_workers: StartWorkers) -> None:
    workers = await start_workers(2, proxy_extra={"worker_timeout": 2})
    handle, pids = workers.handle, workers.pids
    victim = pids[0]
    os.kill(victim, signal.SIGSTOP)  # alive, but never answers its heartbeat again
    try:
        deadline = time.monotonic() + 30
        while _alive(victim):
            assert time.monotonic() < deadline, handle.log()[-3000:]
            await asyncio.sleep(0.2)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(victim, signal.SIGCONT)
    live = await asyncio.to_thread(wait_workers, handle, 2)
    assert victim not in live
    messages = [line.get("message", "") for line in log_lines(handle)]
    assert f"WORKER TIMEOUT (pid:{victim})" in messages
    sent = Sent(handle.url)
    token = bearer(workers.idp.token("bob"))
    answers = {(await sent.request("GET", f"/echo/after/{n}", headers=token))[0] for n in range(10)}
    assert answers == {200}
    assert handle.stop() == 0


def _spool_mails(directory: Path, count: int) -> set[str]:
    """`count` admin mails waiting in a spool, as an SMTP outage leaves them; their ids."""
    from email.message import EmailMessage

    from mailer.spool import MailSpool

    spool = MailSpool(directory, max_files=10_000, max_bytes=100_000_000)
    ids = set()
    for n in range(count):
        message = EmailMessage()
        message["From"] = "porter@example.org"
        message["To"] = "ada@example.org"
        message["Subject"] = f"[porter] spooled {n}"
        message["Message-ID"] = f"<spooled-{n}@porter.test>"
        message.set_content(f"mail {n}")
        assert spool.put(message)
        ids.add(message["Message-ID"])
    return ids


@pytest.mark.parametrize("count", [2, 4])
async def test_spooled_mail_is_delivered_exactly_once_by_workers_and_across_a_restart(
    start_workers: StartWorkers, start_smtp: Callable[..., Any], tmp_path: Path, count: int
) -> None:
    """Every worker delivers the shared spool; a claim (an atomic rename) makes each mail one
    worker's, so none is sent twice, also when porter is restarted half-way."""
    spool = tmp_path / "spool"
    spool.mkdir(mode=0o700)
    wanted = _spool_mails(spool, 120)
    smtp = start_smtp()
    smtp.inbox.delay = 0.05  # slow enough for the restart to fall in the middle
    mail = {
        "enabled": True,
        "admins": [["Ada Admin", "ada@example.org"]],
        "email_host": "127.0.0.1",
        "email_port": smtp.port,
        "server_email": "porter@example.org",
        "spool_dir": str(spool),
        "spool_retry_interval": 0.2,
    }
    first = await start_workers(count, mail=mail)
    await smtp.inbox.wait_for(20)
    assert first.handle.stop() == 0  # a restart in the middle of the delivery
    assert len(smtp.inbox.messages) < len(wanted), "all delivered before the restart"
    second = await start_workers(count, mail=mail)
    await smtp.inbox.wait_for(len(wanted), timeout=60)
    await asyncio.sleep(1.0)  # a duplicate, if any, would arrive now
    assert second.handle.stop() == 0
    ids = [m.message["Message-ID"] for m in smtp.inbox.messages]
    assert len(ids) == len(wanted)  # none twice
    assert set(ids) == wanted  # none lost
    assert list(spool.iterdir()) == []  # nothing left claimed or queued
