"""Small-GET throughput and latency: straight to the upstream, through a bare aiohttp proxy
(the limit of this stack), through nginx, and through porter on its three paths.

Run on demand (not a test): .venv/bin/python bench/forwarding.py [--duration 5] [--rounds 3]
Needs wrk and nginx (Debian packages wrk and nginx-light; installed with apt-get if missing)
and redis-server. The porters run as shipped: access log on (log level info, to a file).
- porter-public: a cookieless GET of a public path, on the one shared public session (the
  OMERO test server makes it);
- porter-user: a logged-in user (memory store; logged in on porter's form);
- porter-redis: a logged-in user with the Redis session store (one Redis round trip more);
- porter-redis-local: the same with `redis_local_cache = 1.0` (a session read from Redis is
  reused for a second by this process).
nginx is a plain reverse proxy (keepalive pool, no buffering); "bare" is ~40 lines of
aiohttp + uvloop that stream and drop hop-by-hop headers, and nothing else. Targets are
interleaved in every round; the figures are medians over the rounds. Compare the ratios, not
the absolute numbers: the machine is shared.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
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
    log_in,
    print_ratios,
    print_table,
    start_bare_proxy,
    start_porter,
    start_small_upstream,
    wait_port,
    wrk_matrix,
)
from tests.omero_sim.fixture import OmeroSim, start_sim, stop_sim
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
    tmp: Path,
    redis: RedisServer,
    sim: OmeroSim,
    duration: float,
    rounds: int,
    only: frozenset[str] = frozenset(),
) -> dict[tuple[str, int], Summary]:
    with Processes(tmp) as procs:
        upstream = start_small_upstream(procs)
        bare = start_bare_proxy(procs, upstream)
        bare_logged = start_bare_proxy(procs, upstream, "bare-logged", access_log=True)
        shipped = {"access_log": True, "log_level": "info"}  # as config.toml ships
        omero = {"server_list": [sim.server_list_entry()]}
        public = {
            "enabled": True,
            "url_filter": "^/webgateway/.*",
            "user": "public",
            "password": sim.users["public"],
        }
        memory = start_porter(
            procs,
            "porter",
            upstream,
            {"proxy": shipped, "omero": omero, "public": public, "session": QUIET_SESSION},
            log_level="info",
        )
        redis_session = {
            "store": "redis",
            "redis_url": redis.url,
            "redis_password": redis.password,
            "redis_key_prefix": KEY_PREFIX,
            **QUIET_SESSION,
        }
        on_redis = start_porter(
            procs,
            "porter-redis",
            upstream,
            {"proxy": shipped, "session": redis_session, "omero": omero, "public": public},
            log_level="info",
        )
        two_workers = start_porter(
            procs,
            "porter-redis-w2",
            upstream,
            {
                "proxy": {**shipped, "workers": 2},
                "session": redis_session,
                "omero": omero,
                "public": public,
            },
            log_level="info",
        )
        local = start_porter(
            procs,
            "porter-redis-local",
            upstream,
            {
                "proxy": shipped,
                "session": {**redis_session, "redis_local_cache": 1.0},
                "omero": omero,
                "public": public,
            },
            log_level="info",
        )
        time.sleep(3)  # the second worker starts too
        user = asyncio.run(log_in(memory.url, "alice", sim.users["alice"]))
        session_id = asyncio.run(shared_session(redis.url, redis.password, KEY_PREFIX))
        nginx_port = free_port()
        up_port = upstream.rsplit(":", 1)[1]
        (tmp / "nginx.conf").write_text(NGINX.format(dir=tmp, upstream=up_port, port=nginx_port))
        nginx = procs.start("nginx", ["nginx", "-c", str(tmp / "nginx.conf"), "-p", str(tmp)])
        wait_port(nginx_port, process=nginx)
        targets = [
            Target("direct", upstream + PATH, {}),
            Target("bare", bare + PATH, {}),
            Target("bare-logged", bare_logged + PATH, {}),
            Target("nginx", f"http://127.0.0.1:{nginx_port}{PATH}", {}),
            Target("porter-public", memory.url + PATH, {}),
            Target("porter-user", memory.url + PATH, {"Cookie": f"porter_session={user}"}),
            Target("porter-redis", on_redis.url + PATH, {"Cookie": f"porter_session={session_id}"}),
            Target(
                "porter-redis-w2",
                two_workers.url + PATH,
                {"Cookie": f"porter_session={session_id}"},
            ),
            Target(
                "porter-redis-local",
                local.url + PATH,
                {"Cookie": f"porter_session={session_id}"},
            ),
            Target("porter-redis-pub", on_redis.url + PATH, {}),
            Target("porter-redis-w2-pub", two_workers.url + PATH, {}),
        ]
        if only:
            targets = [t for t in targets if t.name in only]
        for target in targets:
            expect(target.url, target.headers, 200, SMALL_BODY_START)
        expect(on_redis.url + "/webclient/x", {}, 302, "")  # without the cookie: to log in
        print(
            f"small GETs ({PATH}, ~220-byte answer), wrk on loopback, {rounds} rounds "
            f"of {duration:g} s per target and concurrency, 2 shared cores; porters with "
            f"the access log on; {load_line()}"
        )
        summaries = wrk_matrix(targets, CONCURRENCIES, duration, rounds)
        for target in targets:  # the sessions were still valid at the end
            expect(target.url, target.headers, 200, SMALL_BODY_START)
        return summaries


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--duration", type=float, default=5, help="seconds per measurement")
    parser.add_argument("--rounds", type=int, default=3, help="measurements per target")
    parser.add_argument("--only", default="", help="comma-separated targets to measure")
    args = parser.parse_args()
    only = frozenset(name for name in args.only.split(",") if name)
    ensure_tools(("wrk", "nginx"), ("wrk", "nginx-light"))
    with tempfile.TemporaryDirectory() as tmp:
        redis = RedisServer(Path(tmp))
        redis.start()
        sim = start_sim()
        try:
            summaries = measure(Path(tmp), redis, sim, args.duration, args.rounds, only)
        finally:
            stop_sim(sim)
            redis.stop()
    print("\nmedians over rounds")
    print_table(summaries)
    print()
    measured = {name for name, _ in summaries}
    pairs = [(p, "bare") for p in ("porter-public", "porter-user", "porter-redis")]
    pairs += [("bare-logged", "bare")]
    pairs += [(p, "bare-logged") for p in ("porter-public", "porter-user")]
    pairs += [("bare", "nginx"), ("porter-user", "nginx")]
    pairs += [("porter-redis-w2", "porter-redis"), ("porter-redis-w2-pub", "porter-redis-pub")]
    pairs += [("porter-redis-local", "porter-redis"), ("porter-redis-local", "porter-user")]
    pairs = [(a, b) for a, b in pairs if a in measured and b in measured]
    print_ratios(summaries, pairs, CONCURRENCIES)


if __name__ == "__main__":
    main()
