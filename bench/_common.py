"""Shared helpers of the benchmark scripts: ports, processes, porter configs, wrk, percentiles.

Everything listens on 127.0.0.1 and every process started here is stopped by `Processes`,
also when a script fails half-way.
"""

from __future__ import annotations

import http.client
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from tests.porter_fixtures import write_config

ROOT = Path(__file__).resolve().parent.parent

# A small, fast upstream (stands in for OMERO.web): a ~220-byte answer to every GET, and
# OMERO.web's handoff answer (`?bsession=` -> its own `sessionid` cookie) so porter can log in.
SMALL_UPSTREAM = """
import sys
from aiohttp import web
BODY = "hello from the upstream " + "x" * 200
async def hello(request):
    if "bsession" in request.query:
        response = web.Response(text="OK")
        response.set_cookie("sessionid", "bench-" + request.query["bsession"][-6:])
        return response
    return web.Response(text=BODY)
app = web.Application()
app.router.add_get("/{tail:.*}", hello)
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None, access_log=None)
"""
SMALL_BODY_START = "hello from the upstream"

# The limit of this stack: a bare aiohttp + uvloop reverse proxy, ~40 lines, no auth, no rules,
# streaming both ways with hop-by-hop headers dropped (what any proxy must do at least).
BARE_PROXY = """
import logging
import sys
import time
import aiohttp
import uvloop
from aiohttp import web
UPSTREAM = sys.argv[2]
LOG = len(sys.argv) > 3  # one access line per request, as porter writes it
if LOG:
    from proxy.server import configure_logging
    configure_logging("info")
access = logging.getLogger("porter.access")
HOP = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te",
       "trailer", "transfer-encoding", "upgrade", "host"}
async def client_ctx(app):
    app["client"] = aiohttp.ClientSession(
        auto_decompress=False, cookie_jar=aiohttp.DummyCookieJar(),
        connector=aiohttp.TCPConnector(limit=100),
        timeout=aiohttp.ClientTimeout(total=None, sock_connect=5, sock_read=60))
    yield
    await app["client"].close()
async def proxy(request):
    started = time.perf_counter()
    try:
        return await forward(request)
    finally:
        if LOG:
            access.info("%s %s %s %d %.1fms rid=%s", request.remote, request.method,
                        request.path, 200, (time.perf_counter() - started) * 1000, "-")
async def forward(request):
    headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP}
    body = request.content if request.body_exists else None
    async with request.app["client"].request(
            request.method, UPSTREAM + request.raw_path, headers=headers, data=body,
            allow_redirects=False) as up:
        out = {k: v for k, v in up.headers.items()
               if k.lower() not in HOP and k.lower() != "content-length"}
        if up.content_length is not None and up.content_length <= 65536:
            return web.Response(status=up.status, body=await up.read(), headers=out)
        response = web.StreamResponse(status=up.status, headers=out)
        await response.prepare(request)
        async for chunk in up.content.iter_any():
            await response.write(chunk)
        await response.write_eof()
        return response
app = web.Application()
app.cleanup_ctx.append(client_ctx)
app.router.add_route("*", "/{tail:.*}", proxy)
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None, access_log=None,
            loop=uvloop.new_event_loop())
"""

# The echo upstream of the tests (with /status/N and /django-500/... routes), as a process.
ECHO_UPSTREAM = """
import sys
from aiohttp import web
from tests.echo_upstream import create_echo_app
web.run_app(create_echo_app(), host="127.0.0.1", port=int(sys.argv[1]), print=None,
            access_log=None)
"""

# Keepalives of the benchmark's sessions would only add noise (and fail for made-up keys).
QUIET_SESSION = {"ping_interval": 3_600_000, "purge_interval": 3600}


def free_port() -> int:
    """A loopback port nobody listens on (now)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(
    port: int, timeout: float = 30, process: subprocess.Popen[bytes] | None = None
) -> None:
    """Wait until something accepts connections on `port` (fails if `process` exits first)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"process exited with {process.returncode} before listening")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port} after {timeout} s")


def ensure_tools(tools: Iterable[str], packages: Sequence[str]) -> None:
    """Install the Debian `packages` with apt-get when one of `tools` is missing."""
    missing = [tool for tool in tools if shutil.which(tool) is None]
    if not missing:
        return
    print(f"installing {', '.join(packages)} with apt-get", file=sys.stderr)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], check=True, stdout=subprocess.DEVNULL)
    subprocess.run(
        ["apt-get", "install", "-y", "-qq", *packages],
        check=True,
        stdout=subprocess.DEVNULL,
        env=env,
    )


class Processes:
    """Starts processes with their output in log files under `directory`; stops them all
    (SIGTERM, then SIGKILL after a grace period) on exit, last started first."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.started: list[tuple[str, subprocess.Popen[bytes]]] = []

    def start(
        self, name: str, argv: Sequence[str], env: Mapping[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        log_path = self.directory / f"{name}.log"
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                list(argv),
                cwd=ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=dict(env) if env is not None else _clean_env(),
            )
        self.started.append((name, process))
        return process

    def log(self, name: str) -> str:
        return (self.directory / f"{name}.log").read_text(errors="replace")

    def stop(self, process: subprocess.Popen[bytes], timeout: float = 20) -> int:
        """SIGTERM one process and wait for it (SIGKILL after `timeout`)."""
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        try:
            return process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            return process.wait()

    def __enter__(self) -> Processes:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        for _, process in reversed(self.started):
            self.stop(process)


def _clean_env() -> dict[str, str]:
    # PORTER_* variables would override the benchmark's config files.
    return {k: v for k, v in os.environ.items() if not k.startswith("PORTER_")}


def start_small_upstream(procs: Processes, name: str = "upstream") -> str:
    """The small upstream on a free port; its base URL."""
    port = free_port()
    process = procs.start(name, [sys.executable, "-c", SMALL_UPSTREAM, str(port)])
    wait_port(port, process=process)
    return f"http://127.0.0.1:{port}"


def start_bare_proxy(
    procs: Processes, upstream: str, name: str = "bare", access_log: bool = False
) -> str:
    """The bare aiohttp proxy in front of `upstream` (with porter's access log line per
    request when `access_log`); its base URL."""
    port = free_port()
    argv = [sys.executable, "-c", BARE_PROXY, str(port), upstream]
    process = procs.start(name, argv + (["log"] if access_log else []))
    wait_port(port, process=process)
    return f"http://127.0.0.1:{port}"


def start_echo_upstream(procs: Processes, name: str = "echo") -> str:
    """The tests' echo upstream on a free port; its base URL."""
    port = free_port()
    process = procs.start(name, [sys.executable, "-c", ECHO_UPSTREAM, str(port)])
    wait_port(port, process=process)
    return f"http://127.0.0.1:{port}"


@dataclass
class Porter:
    name: str
    url: str
    process: subprocess.Popen[bytes]


def start_porter(
    procs: Processes,
    name: str,
    upstream: str,
    sections: dict[str, dict[str, Any]] | None = None,
    log_level: str = "warning",
) -> Porter:
    """`python run.py serve` on a free port in front of `upstream`, access log off."""
    port = free_port()
    proxy = {
        "host": "127.0.0.1",
        "port": port,
        "upstream": upstream,
        "access_log": False,
        "log_level": log_level,
    }
    all_sections = {"proxy": proxy, **(sections or {})}
    all_sections["proxy"] = {**proxy, **all_sections.get("proxy", {})}
    # the small upstreams here answer as fast as porter can send: no OMERO.web to protect,
    # so [limits]' admission (sized for OMERO.web's 5 workers) would only cap the figures
    all_sections.setdefault("limits", {"enabled": False})
    if all_sections.get("session", {}).get("store") == "redis":  # names and seals sessions
        all_sections["proxy"].setdefault("secret_key", "bench-secret-key-0123456789-abcdefghij")
    config = write_config(procs.directory / f"{name}.toml", all_sections)
    argv = [sys.executable, str(ROOT / "run.py"), "serve", "--config", str(config)]
    process = procs.start(name, argv)
    try:
        wait_port(port, process=process)
    except RuntimeError:
        print(procs.log(name), file=sys.stderr)
        raise
    return Porter(name, f"http://127.0.0.1:{port}", process)


def fetch(url: str, headers: Mapping[str, str] | None = None) -> tuple[int, str]:
    """One GET over loopback HTTP, redirects not followed: (status, body text)."""
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=30)
    try:
        target = parts.path + (f"?{parts.query}" if parts.query else "")
        connection.request("GET", target, headers=dict(headers or {}))
        response = connection.getresponse()
        return response.status, response.read().decode(errors="replace")
    finally:
        connection.close()


def expect(url: str, headers: Mapping[str, str] | None, status: int, body_start: str) -> None:
    """Fail unless a GET of `url` answers `status` with a body starting with `body_start`
    (wrk counts a 302 to the login page as a success: check what is measured)."""
    got, body = fetch(url, headers)
    if got != status or not body.startswith(body_start):
        raise RuntimeError(f"GET {url} answered {got} {body[:120]!r}, not {status} {body_start!r}")


async def log_in(
    base_url: str, user: str, password: str, cookie_name: str = "porter_session"
) -> str:
    """Log in through porter's /porter/login form as a browser would; the session cookie."""
    jar = aiohttp.CookieJar(unsafe=True)  # cookies of 127.0.0.1
    async with aiohttp.ClientSession(cookie_jar=jar) as client:
        async with client.get(base_url + "/porter/login") as response:
            page = await response.text()
        found = re.search(r'name="csrf_token" value="([^"]+)"', page)
        if found is None:
            raise RuntimeError("porter's login page has no CSRF token")
        form = {"csrf_token": found.group(1), "username": user, "password": password}
        async with client.post(
            base_url + "/porter/login", data=form, allow_redirects=False
        ) as response:
            if response.status not in (302, 303):
                raise RuntimeError(f"login of {user} answered {response.status}")
        for cookie in jar:
            if cookie.key == cookie_name:
                return cookie.value
    raise RuntimeError(f"login of {user} set no {cookie_name} cookie")


def load_line() -> str:
    """The machine's load averages (the benchmarks share 2 cores with other work)."""
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f} {five:.2f} {fifteen:.2f} on {os.cpu_count()} cores"


def percentile(samples: Sequence[float], q: float) -> float:
    """Nearest-rank percentile, q in [0, 1]."""
    if not samples:
        return float("nan")
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))]


# ~ wrk


@dataclass(frozen=True)
class WrkResult:
    rps: float
    p50_ms: float
    p99_ms: float
    requests: int
    socket_errors: int  # connect, read, write and timeout errors
    non_2xx_3xx: int


_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}


def _ms(value: str, unit: str) -> float:
    return float(value) * _UNITS[unit]


def parse_wrk(out: str) -> WrkResult:
    """Read req/s, the 50% and 99% latencies and the error counts from `wrk --latency`."""
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    p50 = re.search(r"^\s+50%\s+([\d.]+)(us|ms|s|m)\s*$", out, re.M)
    p99 = re.search(r"^\s+99%\s+([\d.]+)(us|ms|s|m)\s*$", out, re.M)
    count = re.search(r"(\d+) requests in", out)
    if rps is None or p50 is None or p99 is None or count is None:
        raise RuntimeError(f"cannot read wrk's output:\n{out}")
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    non_ok = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return WrkResult(
        rps=float(rps.group(1)),
        p50_ms=_ms(*p50.groups()),
        p99_ms=_ms(*p99.groups()),
        requests=int(count.group(1)),
        socket_errors=sum(int(n) for n in errors.groups()) if errors else 0,
        non_2xx_3xx=int(non_ok.group(1)) if non_ok else 0,
    )


def wrk(
    url: str,
    connections: int,
    duration: float,
    headers: Mapping[str, str] | None = None,
    timeout: float = 5.0,
    script: str | None = None,
) -> WrkResult:
    """Run wrk (HTTP/1.1 keep-alive, sends no cookie of its own) against `url`; `script`: a
    Lua file choosing each request's path."""
    threads = 1 if connections == 1 else 2
    argv = [
        "wrk",
        f"-t{threads}",
        f"-c{connections}",
        f"-d{max(1, round(duration))}s",
        f"--timeout={max(1, round(timeout))}s",
        "--latency",
    ]
    for name, value in (headers or {}).items():
        argv += ["-H", f"{name}: {value}"]
    if script is not None:
        argv += ["-s", script]
    argv.append(url)
    result = subprocess.run(
        argv, capture_output=True, text=True, check=True, timeout=duration + timeout + 30
    )
    return parse_wrk(result.stdout)


@dataclass(frozen=True)
class Target:
    name: str
    url: str
    headers: Mapping[str, str]
    script: str | None = None  # a wrk Lua script choosing the paths (None: always `url`)


@dataclass(frozen=True)
class Summary:
    """Medians over rounds of one target at one concurrency."""

    rps: float
    p50_ms: float
    p99_ms: float
    rps_min: float
    rps_max: float
    requests: int
    errors: int  # socket errors and non-2xx/3xx answers, all rounds


def summarise(results: Sequence[WrkResult]) -> Summary:
    return Summary(
        rps=statistics.median(r.rps for r in results),
        p50_ms=statistics.median(r.p50_ms for r in results),
        p99_ms=statistics.median(r.p99_ms for r in results),
        rps_min=min(r.rps for r in results),
        rps_max=max(r.rps for r in results),
        requests=sum(r.requests for r in results),
        errors=sum(r.socket_errors + r.non_2xx_3xx for r in results),
    )


def wrk_matrix(
    targets: Sequence[Target],
    concurrencies: Sequence[int],
    duration: float,
    rounds: int,
    timeout: float = 5.0,
    warm_up: float = 1.0,
    around: Callable[[Target], AbstractContextManager[object]] | None = None,
) -> dict[tuple[str, int], Summary]:
    """Measure every target at every concurrency `rounds` times, targets interleaved within
    each round (so that a noisy neighbour hits them alike); medians per target and
    concurrency. `around(target)` wraps every wrk run (warm-ups included), e.g. to count
    what the target did elsewhere; `warm_up` 0 skips the warm-ups."""
    raw: dict[tuple[str, int], list[WrkResult]] = {}

    def run(target: Target, connections: int, seconds: float) -> WrkResult:
        with around(target) if around is not None else nullcontext():
            return wrk(target.url, connections, seconds, target.headers, timeout, target.script)

    for connections in concurrencies:
        for target in targets:
            if warm_up > 0:
                run(target, connections, warm_up)
        for round_ in range(rounds):
            for target in targets:
                result = run(target, connections, duration)
                raw.setdefault((target.name, connections), []).append(result)
                print(
                    f"  round {round_ + 1}/{rounds} c={connections:<3} {target.name:<16} "
                    f"{result.rps:9.0f} req/s  p50 {result.p50_ms:7.2f} ms  "
                    f"p99 {result.p99_ms:7.2f} ms",
                    flush=True,
                )
    return {key: summarise(results) for key, results in raw.items()}


def print_table(summaries: Mapping[tuple[str, int], Summary]) -> None:
    print(
        f"{'target':<16} {'conc':>4} {'req/s':>9} {'(min-max)':>15} {'p50 ms':>8} "
        f"{'p99 ms':>8} {'requests':>9} {'errors':>6}"
    )
    for (name, connections), s in summaries.items():
        spread = f"{s.rps_min:.0f}-{s.rps_max:.0f}"
        print(
            f"{name:<16} {connections:>4} {s.rps:>9.0f} {spread:>15} {s.p50_ms:>8.2f} "
            f"{s.p99_ms:>8.2f} {s.requests:>9} {s.errors:>6}"
        )


def print_ratios(
    summaries: Mapping[tuple[str, int], Summary],
    pairs: Sequence[tuple[str, str]],
    concurrencies: Sequence[int],
) -> None:
    """For each (a, b): a/b of median req/s, p50 and p99 (req/s > 1 and latency < 1: a wins)."""
    for connections in concurrencies:
        for a, b in pairs:
            x, y = summaries[(a, connections)], summaries[(b, connections)]
            print(
                f"c={connections:<3} {a}/{b}: req/s {x.rps / y.rps:.2f}, "
                f"p50 {x.p50_ms / y.p50_ms:.2f}, p99 {x.p99_ms / y.p99_ms:.2f}"
            )
