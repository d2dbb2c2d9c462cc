"""Forward-auth: nginx alone vs nginx asking porter (auth_request) vs porter as the full proxy,
small GETs at concurrency 32 on a logged-in session and on a public path; and a 200 MB
download through nginx + forward-auth, with porter's CPU time during it.

Run on demand (not a test): .venv/bin/python bench/forward_auth.py [--duration 5] [--rounds 3]
Needs wrk and nginx (installed with apt-get if missing). The upstream is the tests' echo
server standing in for OMERO.web (it answers OMERO.web's handoff); the OMERO test server makes
the sessions. nginx runs docs/forward-auth.md's configuration (public answers cached by
nginx, logged-in users bypassing the cache); "nginx" alone is a plain reverse proxy.
Porters run as shipped (access log on).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: import from the project, not from bench/
    sys.path[0] = str(Path(__file__).resolve().parent.parent)

import aiohttp

from bench._common import (
    QUIET_SESSION,
    Processes,
    Target,
    ensure_tools,
    expect,
    free_port,
    load_line,
    log_in,
    print_table,
    start_echo_upstream,
    start_porter,
    wait_port,
    wrk_matrix,
)
from bench.forwarding import NGINX
from tests.nginx_fixture import write_nginx_conf
from tests.omero_sim.fixture import OmeroSim, start_sim, stop_sim
from tests.test_forward_auth import site_config

PUBLIC = "/webgateway/small"
PRIVATE = "/webclient/small"
SIZE = 200 * 1024 * 1024


def start_nginx_forward_auth(procs: Processes, tmp: Path, name: str, porter: str, up: str) -> str:
    """nginx with docs/forward-auth.md's configuration in front of `up`, asking `porter`."""
    directory = tmp / name
    directory.mkdir()
    port = free_port()
    site = site_config(int(porter.rsplit(":", 1)[1]), int(up.rsplit(":", 1)[1]), port, directory)
    conf = write_nginx_conf(directory, site)
    process = procs.start(name, ["nginx", "-c", str(conf), "-p", str(directory)])
    wait_port(port, process=process)
    return f"http://127.0.0.1:{port}"


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def download(url: str, cookie: dict[str, str]) -> float:
    started = time.perf_counter()
    async with aiohttp.ClientSession(cookies=cookie) as client, client.get(url) as resp:
        assert resp.status == 200
        got = 0
        async for chunk in resp.content.iter_chunked(1024 * 1024):
            got += len(chunk)
    assert got == SIZE, got
    return time.perf_counter() - started


def measure(tmp: Path, sim: OmeroSim, duration: float, rounds: int) -> None:
    with Processes(tmp) as procs:
        upstream = start_echo_upstream(procs)
        shipped = {"access_log": True, "log_level": "info"}
        sections: dict[str, dict[str, Any]] = {
            "omero": {"server_list": [sim.server_list_entry()]},
            "public": {
                "enabled": True,
                "url_filter": "^/webgateway/.*",
                "user": "public",
                "password": sim.users["public"],
            },
            "session": QUIET_SESSION,
        }
        trusted = {**shipped, "trusted_proxies": ["127.0.0.1/32"]}
        decider = start_porter(
            procs,
            "porter-fa",
            upstream,
            {"proxy": trusted, "forward_auth": {"enabled": True}, **sections},
            log_level="info",
        )
        cached = start_porter(
            procs,
            "porter-fa-cache",
            upstream,
            {
                "proxy": trusted,
                "forward_auth": {"enabled": True, "decision_cache_ttl": 1.0},
                **sections,
            },
            log_level="info",
        )
        full = start_porter(
            procs, "porter-full", upstream, {"proxy": shipped, **sections}, log_level="info"
        )
        fa = start_nginx_forward_auth(procs, tmp, "nginx-fa", decider.url, upstream)
        fa_cached = start_nginx_forward_auth(procs, tmp, "nginx-fa-cache", cached.url, upstream)
        nginx_port = free_port()
        (tmp / "nginx.conf").write_text(
            NGINX.format(dir=tmp, upstream=upstream.rsplit(":", 1)[1], port=nginx_port)
        )
        plain = procs.start("nginx", ["nginx", "-c", str(tmp / "nginx.conf"), "-p", str(tmp)])
        wait_port(nginx_port, process=plain)
        nginx = f"http://127.0.0.1:{nginx_port}"

        def cookie(base: str) -> dict[str, str]:
            return {
                "Cookie": f"porter_session={asyncio.run(log_in(base, 'alice', sim.users['alice']))}"
            }

        fa_user, fa_cached_user, full_user = cookie(fa), cookie(fa_cached), cookie(full.url)
        targets = [
            Target("nginx", nginx + PRIVATE, {}),
            Target("fa-user", fa + PRIVATE, fa_user),
            Target("fa-cache-user", fa_cached + PRIVATE, fa_cached_user),
            Target("porter-user", full.url + PRIVATE, full_user),
            Target("fa-public", fa + PUBLIC, {}),
            Target("fa-cache-public", fa_cached + PUBLIC, {}),
            Target("porter-public", full.url + PUBLIC, {}),
        ]
        for target in targets:
            expect(target.url, target.headers, 200, "{")
        print(f"small GETs, wrk c=32, {rounds} rounds of {duration:g} s; {load_line()}")
        summaries = wrk_matrix(targets, (32,), duration, rounds)
        print("\nmedians over rounds")
        print_table(summaries)
        print()
        rps = {name: s.rps for (name, _), s in summaries.items()}
        print(f"fa-cache-user / nginx: {rps['fa-cache-user'] / rps['nginx']:.2f}")
        print(f"fa-user / porter-user: {rps['fa-user'] / rps['porter-user']:.2f}")
        print(f"fa-cache-public / nginx: {rps['fa-cache-public'] / rps['nginx']:.2f}")
        print(f"fa-public / porter-public: {rps['fa-public'] / rps['porter-public']:.2f}")

        pid = decider.process.pid
        plain_s = asyncio.run(download(f"{nginx}/download/{SIZE}", {}))
        before = cpu_seconds(pid)
        fa_s = asyncio.run(
            download(
                f"{fa}/download/{SIZE}", {"porter_session": fa_user["Cookie"].split("=", 1)[1]}
            )
        )
        porter_cpu = cpu_seconds(pid) - before
        full_before = cpu_seconds(full.process.pid)
        full_s = asyncio.run(
            download(
                f"{full.url}/download/{SIZE}",
                {"porter_session": full_user["Cookie"].split("=", 1)[1]},
            )
        )
        full_cpu = cpu_seconds(full.process.pid) - full_before
        print(
            f"\n200 MB download: nginx alone {plain_s:.2f} s; nginx + forward-auth {fa_s:.2f} s "
            f"({plain_s / fa_s:.2f}x nginx's speed), porter's CPU meanwhile {porter_cpu:.2f} s; "
            f"porter as the full proxy {full_s:.2f} s, its CPU {full_cpu:.2f} s"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--duration", type=float, default=5, help="seconds per measurement")
    parser.add_argument("--rounds", type=int, default=3, help="measurements per target")
    args = parser.parse_args()
    ensure_tools(("wrk", "nginx"), ("wrk", "nginx-light"))
    with tempfile.TemporaryDirectory() as tmp:
        sim = start_sim()
        try:
            measure(Path(tmp), sim, args.duration, args.rounds)
        finally:
            stop_sim(sim)


if __name__ == "__main__":
    main()
