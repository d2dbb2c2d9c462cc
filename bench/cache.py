"""The public answer cache: repeated cookieless GETs over 500 URLs, zipf-distributed (s=1),
at concurrency 1 and 32, same run:

- porter with the cache (warmed: hits), porter without it, and nginx `proxy_cache` configured
  as the Image Data Resource does (key $request_uri without `_=`, Set-Cookie/Vary/Expires
  ignored, 200 valid 1d, use_stale, background_update, cache_lock) in front of porter's public
  path without cache; each over two upstreams:
  - `omeroweb`: the real OMERO.web on the OMERO test server, its cheapest public view
    (/webclient/keepalive_ping/?n=K: a whole Django request and an OMERO session join, but no
    rendering, so a real render makes the hit/OMERO.web ratio larger, never smaller); beside
    them OMERO.web's built-in public user on the same URLs;
  - `tiles`: a small aiohttp upstream answering 16 KiB "tiles" (fast: the strictest
    comparison for misses, and a realistic body size for hits);
- misses: every request a new URL (wrk numbers them), porter with the cache vs without;
- the floor: the tiles upstream itself (aiohttp + uvloop answering a constant), what any
  aiohttp server can do at most; and `floor-logged`, the same writing porter's access line
  per answer through porter's own log thread: the floor like for like (porter's hits write
  that line too), as forwarding.py's bare-logged proxy;
- memory: porter's RSS with a 64 MiB memory tier after the misses pushed several times that
  through it, beside the RSS of the porter without cache.

Porters run as shipped (access log on, to a file); nginx logs too. One nginx worker against
one porter process.

Run on demand (not a test): .venv/bin/python bench/cache.py [--duration 4] [--rounds 3]
Needs wrk and nginx (installed with apt-get if missing).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
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
    fetch,
    free_port,
    load_line,
    print_table,
    start_porter,
    wait_port,
    wrk_matrix,
)
from tests.omero_sim.fixture import OmeroSim, start_sim, stop_sim
from tests.web_fixture import OmeroWeb, start_web, stop_web, web_config

URLS = 500
ZIPF_S = 1.0
CONCURRENCIES = (1, 32)
PING = "/webclient/keepalive_ping/"
TILE = "/webgateway/render_image_region/1/0/0/"
TILE_SIZE = 16 * 1024
MEMORY_BUDGET = 64 * 1024**2

# Also the floor of any aiohttp server: a constant answer, uvloop, no middleware. With a third
# argument, the same writing porter's access line per answer (porter's own log thread): the
# floor like for like, as forwarding.py's bare-logged proxy.
TILE_UPSTREAM = """
import sys
import time
import uvloop
from aiohttp import web
BODY = b"t" * int(sys.argv[2])
LOG = len(sys.argv) > 3
if LOG:
    from proxy.log import AccessLine, configure_logging, ACCESS
    configure_logging("info")
async def tile(request):
    if "bsession" in request.query:  # OMERO.web's handoff, so that porter's public user logs in
        response = web.Response(text="OK")
        response.set_cookie("sessionid", "bench-" + request.query["bsession"][-6:])
        return response
    if LOG:
        started = time.perf_counter()
        response = web.Response(body=BODY, content_type="image/jpeg")
        ms = (time.perf_counter() - started) * 1000
        ACCESS.write(AccessLine("-", request.remote or "-", request.method, request.path, 200,
                                len(BODY), ms, None, "public", None, "-", "HIT"))
        return response
    return web.Response(body=BODY, content_type="image/jpeg")
app = web.Application()
app.router.add_get("/{tail:.*}", tile)
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None, access_log=None,
            loop=uvloop.new_event_loop())
"""

ZIPF_LUA = """
local paths = {%(paths)s}
local cdf = {%(cdf)s}
request = function()
  local r = math.random()
  local lo, hi = 1, #cdf
  while lo < hi do
    local mid = math.floor((lo + hi) / 2)
    if cdf[mid] < r then lo = mid + 1 else hi = mid end
  end
  return wrk.format("GET", paths[lo])
end
"""

# Every request a URL never asked before: thread id, a per-run stamp and a counter.
UNIQUE_LUA = """
local counter = 1
function setup(thread)
  thread:set("id", counter)
  counter = counter + 1
end
function init(args)
  n = 0
  stamp = tostring(os.time()) .. tostring(math.random(1, 1000000))
end
request = function()
  n = n + 1
  return wrk.format("GET", "%(path)s?u=" .. stamp .. "-" .. id .. "-" .. n)
end
"""

NGINX_CACHE = """
{user}
worker_processes 1;
daemon off;
error_log {dir}/nginx-error.log warn;
pid {dir}/nginx.pid;
events {{ worker_connections 1024; }}
http {{
    access_log {dir}/nginx-access.log;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    proxy_cache_path {dir}/cache levels=1:2 keys_zone=tiles:16m max_size=1g inactive=1d;
    upstream porter {{ server 127.0.0.1:{porter}; keepalive 64; }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://porter;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $host;
            set $key $request_uri;
            if ($request_uri ~ "^(.*)[?&]_=[0-9]+(.*)$") {{ set $key $1$2; }}
            proxy_cache tiles;
            proxy_cache_key $key;
            proxy_ignore_headers Set-Cookie Vary Expires;
            proxy_cache_valid 200 1d;
            proxy_cache_use_stale error timeout updating http_500 http_502 http_503 http_504;
            proxy_cache_background_update on;
            proxy_cache_lock on;
            add_header X-Nginx-Cache $upstream_cache_status;
        }}
    }}
}}
"""


def zipf_script(directory: Path, name: str, base: str) -> str:
    """A wrk script requesting base?n=1..URLS with zipf(s) probabilities (n=1 most often)."""
    weights = [1 / (k**ZIPF_S) for k in range(1, URLS + 1)]
    total = sum(weights)
    cdf, running = [], 0.0
    for w in weights:
        running += w / total
        cdf.append(running)
    cdf[-1] = 1.0
    paths = ", ".join(f'"{base}?n={k}"' for k in range(1, URLS + 1))
    path = directory / f"{name}.lua"
    path.write_text(ZIPF_LUA % {"paths": paths, "cdf": ", ".join(f"{c:.9f}" for c in cdf)})
    return str(path)


def unique_script(directory: Path, name: str, base: str) -> str:
    path = directory / f"{name}.lua"
    path.write_text(UNIQUE_LUA % {"path": base})
    return str(path)


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise LookupError("VmRSS")


def warm(url: str, base: str) -> None:
    """Ask for every URL of the working set once (each cache then holds all of it)."""
    for k in range(1, URLS + 1):
        status, _ = fetch(f"{url}{base}?n={k}")
        if status != 200:
            raise RuntimeError(f"warming {url}{base}?n={k} answered {status}")


def start_nginx(procs: Processes, tmp: Path, name: str, porter_url: str) -> str:
    directory = tmp / name
    directory.mkdir()
    port = free_port()
    conf = directory / "nginx.conf"
    porter_port = int(porter_url.rsplit(":", 1)[1])
    user = "user root;" if os.geteuid() == 0 else ""  # the worker writes the cache in `tmp`
    conf.write_text(NGINX_CACHE.format(user=user, dir=directory, porter=porter_port, port=port))
    process = procs.start(name, ["nginx", "-c", str(conf), "-p", str(directory)])
    wait_port(port, process=process)
    return f"http://127.0.0.1:{port}"


def porter_sections(sim: OmeroSim, url_filter: str, cache: dict[str, Any] | None) -> dict[str, Any]:
    sections: dict[str, Any] = {
        "proxy": {"access_log": True},  # as shipped
        "omero": {"server_list": [list(sim.server_list_entry())]},
        "session": QUIET_SESSION,
        "public": {
            "enabled": True,
            "url_filter": url_filter,
            "user": "public",
            "password": sim.users["public"],
        },
    }
    if cache is not None:
        sections["cache"] = {"enabled": True, "memory_bytes": MEMORY_BUDGET, **cache}
    return sections


def measure(
    tmp: Path,
    sim: OmeroSim,
    plain: OmeroWeb,
    builtin: OmeroWeb,
    duration: float,
    rounds: int,
    parts: tuple[str, ...] = ("hits", "misses"),
    upstreams: tuple[str, ...] = ("omeroweb", "tiles"),
) -> tuple[dict[str, dict[tuple[str, int], Summary]], dict[str, float]]:
    results: dict[str, dict[tuple[str, int], Summary]] = {}
    rss: dict[str, float] = {}
    with Processes(tmp) as procs:
        tile_port = free_port()
        tiles_up = procs.start(
            "tiles", [sys.executable, "-c", TILE_UPSTREAM, str(tile_port), str(TILE_SIZE)]
        )
        wait_port(tile_port, process=tiles_up)
        tiles_url = f"http://127.0.0.1:{tile_port}"
        logged_port = free_port()
        argv = [sys.executable, "-c", TILE_UPSTREAM, str(logged_port), str(TILE_SIZE), "log"]
        wait_port(logged_port, process=procs.start("floor-logged", argv))
        logged_url = f"http://127.0.0.1:{logged_port}"
        ping_rule = [{"path": PING, "ttl": 86400.0}]
        porters = {
            "omeroweb": (
                start_porter(
                    procs,
                    "porter-nocache-ow",
                    plain.base_url,
                    porter_sections(sim, f"^{PING}$", None),
                    log_level="info",
                ),
                start_porter(
                    procs,
                    "porter-cache-ow",
                    plain.base_url,
                    porter_sections(sim, f"^{PING}$", {"rules": ping_rule}),
                    log_level="info",
                ),
            ),
            "tiles": (
                start_porter(
                    procs,
                    "porter-nocache-t",
                    tiles_url,
                    porter_sections(sim, "^/webgateway/.*", None),
                    log_level="info",
                ),
                start_porter(
                    procs,
                    "porter-cache-t",
                    tiles_url,
                    porter_sections(sim, "^/webgateway/.*", {}),
                    log_level="info",
                ),
            ),
        }
        bases = {"omeroweb": PING, "tiles": TILE}
        for upstream, (nocache, cached) in porters.items():
            if upstream not in upstreams:
                continue
            base = bases[upstream]
            nginx = start_nginx(procs, tmp, f"nginx-{upstream}", nocache.url)
            zipf = zipf_script(tmp, f"zipf-{upstream}", base)
            targets = [
                Target("porter-cache", cached.url + base, {}, zipf),
                Target("porter-nocache", nocache.url + base, {}, zipf),
                Target("nginx-cache", nginx + base, {}, zipf),
            ]
            if upstream == "omeroweb":
                targets.append(Target("omeroweb-public", builtin.url(base), {}, zipf))
            else:  # what any aiohttp server answers at most: the tile upstream itself
                targets.append(Target("aiohttp-floor", tiles_url + base, {}, zipf))
                targets.append(Target("floor-logged", logged_url + base, {}, zipf))
            for target in targets:
                body = "OK" if upstream == "omeroweb" else "t"
                expect(target.url + "?n=1", {}, 200, body)
            warm(cached.url, base)
            warm(nginx, base)
            if "hits" in parts:
                print(f"\n== {upstream}: {URLS} URLs, zipf s={ZIPF_S}; {load_line()}", flush=True)
                results[f"hits-{upstream}"] = wrk_matrix(
                    targets, CONCURRENCIES, duration, rounds, timeout=10, warm_up=0
                )
            unique = unique_script(tmp, f"unique-{upstream}", base)
            misses = [
                Target("porter-cache-miss", cached.url + base, {}, unique),
                Target("porter-nocache", nocache.url + base, {}, unique),
            ]
            if "misses" in parts:
                print(f"\n== {upstream}: every request a new URL; {load_line()}", flush=True)
                results[f"misses-{upstream}"] = wrk_matrix(
                    misses, CONCURRENCIES, duration, rounds, timeout=10, warm_up=0
                )
            if upstream == "tiles" and "misses" in parts:
                rss["porter-cache"] = rss_kib(cached.process.pid) / 1024
                rss["porter-nocache"] = rss_kib(nocache.process.pid) / 1024
            for target in targets:
                expect(target.url + "?n=1", {}, 200, "OK" if upstream == "omeroweb" else "t")
            stats = fetch(cached.url + "/porter/cache")[1]
            print(f"porter-cache ({upstream}) /porter/cache: {stats}")
    return results, rss


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--duration", type=float, default=4, help="seconds per measurement")
    parser.add_argument("--rounds", type=int, default=3, help="measurements per target")
    parser.add_argument("--parts", default="hits,misses", help="hits and/or misses")
    parser.add_argument("--upstreams", default="omeroweb,tiles", help="omeroweb and/or tiles")
    args = parser.parse_args()
    parts = tuple(args.parts.split(","))
    upstreams = tuple(args.upstreams.split(","))
    ensure_tools(("wrk", "nginx"), ("wrk", "nginx-light"))
    with tempfile.TemporaryDirectory() as tmp:
        sim = start_sim()
        webs: list[OmeroWeb] = []
        try:
            webs.append(start_web(web_config(sim), Path(tmp)))
            webs.append(start_web(web_config(sim, public_user=True), Path(tmp)))
            plain, builtin = webs
            results, rss = measure(
                Path(tmp), sim, plain, builtin, args.duration, args.rounds, parts, upstreams
            )
        finally:
            for web in webs:
                stop_web(web)
            stop_sim(sim)
    report(results, rss)


def report(results: dict[str, dict[tuple[str, int], Summary]], rss: dict[str, float]) -> None:
    for name, summaries in results.items():
        print(f"\n{name}: medians over rounds")
        print_table(summaries)
    print("\nratios of median req/s")
    for upstream in ("omeroweb", "tiles"):
        hits = results.get(f"hits-{upstream}", {})
        misses = results.get(f"misses-{upstream}", {})
        for c in CONCURRENCIES:
            line = f"  {upstream:<8} c={c:<3}"
            if ("porter-cache-miss", c) in misses:
                miss = misses[("porter-cache-miss", c)].rps / misses[("porter-nocache", c)].rps
                line += f"  misses: cache/nocache {miss:5.2f}"
            if ("porter-cache", c) not in hits:
                print(line)
                continue
            cache = hits[("porter-cache", c)].rps
            nocache, nginx = hits[("porter-nocache", c)].rps, hits[("nginx-cache", c)].rps
            line += (
                f"  porter-cache/porter-nocache {cache / nocache:6.2f}"
                f"  porter-cache/nginx-cache {cache / nginx:5.2f}"
            )
            if ("omeroweb-public", c) in hits:
                builtin = hits[("omeroweb-public", c)].rps
                line += f"  porter-cache/omeroweb-public {cache / builtin:6.1f}"
            if ("aiohttp-floor", c) in hits:
                floor = hits[("aiohttp-floor", c)].rps
                line += f"  porter-cache/aiohttp-floor {cache / floor:5.2f}"
                line += f"  aiohttp-floor/nginx-cache {floor / nginx:5.2f}"
            if ("floor-logged", c) in hits:
                logged = hits[("floor-logged", c)].rps
                line += f"  porter-cache/floor-logged {cache / logged:5.2f}"
            print(line)
    if not rss:
        return
    cached, plain = rss["porter-cache"], rss["porter-nocache"]
    print(
        f"\nRSS after the misses: porter-cache {cached:.0f} MiB, porter-nocache {plain:.0f} MiB: "
        f"{cached - plain:.0f} MiB more, for a {MEMORY_BUDGET // 1024**2} MiB memory tier"
    )


if __name__ == "__main__":
    main()
