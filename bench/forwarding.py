"""Small-GET throughput and latency: straight to the upstream vs through porter vs through nginx.

Run on demand (not a test): .venv/bin/python bench/forwarding.py [--duration 5]
Needs wrk and nginx (Debian packages; installed with apt-get if missing). Every figure comes
from the same run on the same machine, so compare the ratios, not the absolute numbers.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

UPSTREAM = """
from aiohttp import web
async def hello(request):
    return web.Response(text="hello from the upstream " + "x" * 200)
app = web.Application()
app.router.add_get("/{tail:.*}", hello)
web.run_app(app, host="127.0.0.1", port=int(__import__("sys").argv[1]), print=None, access_log=None)
"""

NGINX = """
worker_processes 1;
daemon off;
error_log {dir}/error.log warn;
pid {dir}/nginx.pid;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    upstream omeroweb {{ server 127.0.0.1:{upstream}; keepalive 64; }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://omeroweb;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $http_host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_buffering off;
        }}
    }}
}}
"""


@dataclass
class Result:
    rps: float
    p50_ms: float
    p99_ms: float


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def ensure_tools() -> None:
    missing = [tool for tool in ("wrk", "nginx") if shutil.which(tool) is None]
    if not missing and Path("/usr/sbin/nginx").exists():
        return
    print(f"installing {', '.join(missing) or 'nginx'} with apt-get", file=sys.stderr)
    subprocess.run(["apt-get", "update", "-qq"], check=True, stdout=subprocess.DEVNULL)
    subprocess.run(
        ["apt-get", "install", "-y", "-qq", "wrk", "nginx-light"],
        check=True,
        stdout=subprocess.DEVNULL,
        env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
    )


def wait_port(port: int, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port}")


def _ms(value: str, unit: str) -> float:
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def wrk(url: str, connections: int, duration: int) -> Result:
    threads = 1 if connections == 1 else 2
    out = subprocess.run(
        ["wrk", f"-t{threads}", f"-c{connections}", f"-d{duration}s", "--latency", url],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    p50 = re.search(r"50%\s+([\d.]+)(us|ms|s)", out)
    p99 = re.search(r"99%\s+([\d.]+)(us|ms|s)", out)
    if rps is None or p50 is None or p99 is None:
        raise RuntimeError(f"cannot read wrk's output:\n{out}")
    return Result(float(rps.group(1)), _ms(*p50.groups()), _ms(*p99.groups()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--duration", type=int, default=5, help="seconds per measurement")
    args = parser.parse_args()
    ensure_tools()
    procs: list[subprocess.Popen[bytes]] = []
    with tempfile.TemporaryDirectory() as tmp:
        try:
            up_port, porter_port, nginx_port = free_port(), free_port(), free_port()
            procs.append(subprocess.Popen([sys.executable, "-c", UPSTREAM, str(up_port)]))
            wait_port(up_port)
            config = Path(tmp) / "porter.toml"
            config.write_text(
                f'[proxy]\nport = {porter_port}\nupstream = "http://127.0.0.1:{up_port}"\n'
                'access_log = false\nlog_level = "warning"\n'
            )
            procs.append(
                subprocess.Popen(
                    [sys.executable, str(ROOT / "run.py"), "serve", "--config", str(config)],
                    cwd=ROOT,
                )
            )
            wait_port(porter_port)
            Path(tmp, "nginx.conf").write_text(
                NGINX.format(dir=tmp, upstream=up_port, port=nginx_port)
            )
            procs.append(subprocess.Popen(["nginx", "-c", f"{tmp}/nginx.conf", "-p", tmp]))
            wait_port(nginx_port)
            targets = {
                "direct": f"http://127.0.0.1:{up_port}/webgateway/small",
                "porter": f"http://127.0.0.1:{porter_port}/webgateway/small",
                "nginx": f"http://127.0.0.1:{nginx_port}/webgateway/small",
            }
            print(f"small GETs, {args.duration} s each, wrk on loopback, 2 shared cores")
            print(f"{'target':8} {'conc':>4} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8}")
            results: dict[tuple[str, int], Result] = {}
            for connections in (1, 32):
                for name, url in targets.items():
                    wrk(url, connections, 1)  # warm up
                    r = wrk(url, connections, args.duration)
                    results[(name, connections)] = r
                    print(
                        f"{name:8} {connections:>4} {r.rps:>9.0f} {r.p50_ms:>8.2f} {r.p99_ms:>8.2f}"
                    )
            for connections in (1, 32):
                p = results[("porter", connections)]
                d = results[("direct", connections)]
                n = results[("nginx", connections)]
                print(
                    f"conc {connections}: porter/direct req/s {p.rps / d.rps:.2f}, "
                    f"porter/nginx req/s {p.rps / n.rps:.2f}, "
                    f"porter/nginx p50 {p.p50_ms / n.p50_ms:.2f}, p99 {p.p99_ms / n.p99_ms:.2f}"
                )
        finally:
            for proc in procs:
                proc.send_signal(signal.SIGTERM)
            for proc in procs:
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()


if __name__ == "__main__":
    main()
