"""Small-GET throughput and latency: straight to the upstream vs through porter vs through nginx.

Run on demand (not a test): .venv/bin/python bench/forwarding.py [--duration 5] [--rounds 3]
Needs wrk and nginx (Debian packages wrk and nginx-light; installed with apt-get if missing)
and redis-server. Porter is deny-by-default, so it runs with the Redis session store on a
private redis-server and wrk sends the cookie of a logged-in session: every request is looked
up and really forwarded, as for a user. nginx is a plain reverse proxy (keepalive pool, no
buffering). Targets are interleaved in every round; the figures are medians over the rounds.
Compare the ratios, not the absolute numbers: the machine is shared.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
from pathlib import Path

if __package__ in (None, ""):  # run as a script: import from the project, not from bench/
    sys.path[0] = str(Path(__file__).resolve().parent.parent)

from bench._common import (
    QUIET_SESSION,
    SMALL_BODY_START,
    Processes,
    Summary,
    Target,
    ensure_tools,
    expect,
    free_port,
    load_line,
    print_ratios,
    print_table,
    start_porter,
    start_small_upstream,
    wait_port,
    wrk_matrix,
)
from tests.porter_fixtures import shared_session
from tests.redis_fixture import RedisServer

PATH = "/webgateway/small"
CONCURRENCIES = (1, 32)
KEY_PREFIX = "porter-bench:"

NGINX = """
worker_processes 1;
daemon off;
error_log {dir}/nginx-error.log warn;
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


def measure(
    tmp: Path, redis: RedisServer, duration: float, rounds: int
) -> dict[tuple[str, int], Summary]:
    with Processes(tmp) as procs:
        upstream = start_small_upstream(procs)
        porter = start_porter(
            procs,
            "porter",
            upstream,
            {
                "session": {
                    "store": "redis",
                    "redis_url": redis.url,
                    "redis_password": redis.password,
                    "redis_key_prefix": KEY_PREFIX,
                    **QUIET_SESSION,
                }
            },
        )
        session_id = asyncio.run(shared_session(redis.url, redis.password, KEY_PREFIX))
        cookie = {"Cookie": f"porter_session={session_id}"}
        nginx_port = free_port()
        up_port = upstream.rsplit(":", 1)[1]
        (tmp / "nginx.conf").write_text(NGINX.format(dir=tmp, upstream=up_port, port=nginx_port))
        nginx = procs.start("nginx", ["nginx", "-c", str(tmp / "nginx.conf"), "-p", str(tmp)])
        wait_port(nginx_port, process=nginx)
        targets = [
            Target("direct", upstream + PATH, {}),
            Target("porter", porter.url + PATH, cookie),
            Target("nginx", f"http://127.0.0.1:{nginx_port}{PATH}", {}),
        ]
        for target in targets:
            expect(target.url, target.headers, 200, SMALL_BODY_START)
        expect(porter.url + PATH, {}, 302, "")  # without the cookie: to the login page
        print(
            f"small GETs ({PATH}, ~220-byte answer), wrk on loopback, {rounds} rounds "
            f"of {duration:g} s per target and concurrency, 2 shared cores; porter "
            f"with a logged-in session (Redis store); {load_line()}"
        )
        summaries = wrk_matrix(targets, CONCURRENCIES, duration, rounds)
        for target in targets:  # the session was still valid at the end
            expect(target.url, target.headers, 200, SMALL_BODY_START)
        return summaries


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--duration", type=float, default=5, help="seconds per measurement")
    parser.add_argument("--rounds", type=int, default=3, help="measurements per target")
    args = parser.parse_args()
    ensure_tools(("wrk", "nginx"), ("wrk", "nginx-light"))
    with tempfile.TemporaryDirectory() as tmp:
        redis = RedisServer(Path(tmp))
        redis.start()
        try:
            summaries = measure(Path(tmp), redis, args.duration, args.rounds)
        finally:
            redis.stop()
    print("\nmedians over rounds")
    print_table(summaries)
    print()
    print_ratios(summaries, [("porter", "nginx"), ("porter", "direct")], CONCURRENCIES)


if __name__ == "__main__":
    main()
