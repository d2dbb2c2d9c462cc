"""``run.py demo``: porter's whole job on one machine, with nothing else installed.

Starts the OMERO test server (tests/omero_sim: users, groups and three images) and the real
OMERO.web (omero-web under gunicorn) pointed at it, writes a porter configuration for them
(the shipped defaults, plus a public dataset and the cache), serves porter on it in this
process, and prints where to look. Ctrl-C stops all three. It runs from a checkout (the test
server lives in tests/); ``./scripts/run demo`` installs omero-web first.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.omero_sim.directory import DEFAULT_USERS_FILE, Directory
from tests.omero_sim.process import OmeroSim, start_sim, stop_sim
from tests.omero_web import OmeroWeb, start_web, stop_web, web_config

PUBLIC_FILTER = "/webgateway/render_thumbnail/[0-9]+/.*"  # matched against the WHOLE path
LOGIN_AS = "alice"  # in group "lab": sees image 3, not the public data
LANDING_IMAGE = 3


@dataclass(frozen=True)
class Demo:
    """The running stack: its configuration file and the two servers behind porter."""

    config: Path
    sim: OmeroSim
    web: OmeroWeb


def demo_config(sim: OmeroSim, web: OmeroWeb, host: str, port: int) -> str:
    """Porter's configuration for the demo: only what differs from the shipped defaults."""
    password = sim.users["public"]
    return f"""\
# omero-porter demo: every key not here has the default of the shipped config.toml
[proxy]
host = {json.dumps(host)}
port = {port}
upstream = {json.dumps(web.base_url)}     # the demo's OMERO.web (gunicorn, 1 worker, 8 threads)

[omero]
server_list = [[{json.dumps(sim.host)}, {sim.ssl_port}, "demo"]]   # the OMERO test server

[login]
# {LOGIN_AS}'s own image (the test server has no data tree for the webclient's main page)
landing_page = "/webgateway/render_thumbnail/{LANDING_IMAGE}/"

[public]
enabled = true
url_filter = {json.dumps(PUBLIC_FILTER)}   # thumbnails only; everything else needs a login
user = "public"
password = {json.dumps(password)}

[cache]
enabled = true                                   # public thumbnails: one OMERO.web request each

[limits]
omero_web_workers = 1
omero_web_threads = 8
"""


@contextmanager
def running(host: str, port: int) -> Iterator[Demo]:
    """The OMERO test server and OMERO.web, and porter's configuration for them."""
    workdir = Path(tempfile.mkdtemp(prefix="porter-demo-"))
    sim = start_sim()
    try:
        web = start_web(web_config(sim), workdir)
        try:
            config = workdir / "demo.toml"
            config.write_text(demo_config(sim, web, host, port))
            yield Demo(config, sim, web)
        finally:
            stop_web(web)
    finally:
        stop_sim(sim)
        shutil.rmtree(workdir, ignore_errors=True)


def banner(demo: Demo, host: str, port: int) -> str:
    """What the newcomer reads: where to go, who to log in as, what is public."""
    directory = Directory.load(DEFAULT_USERS_FILE)
    user = directory.users[LOGIN_AS]
    base = f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{port}"
    public = [i for i in directory.images.values() if i.group == "public-data"]
    mine = directory.images[LANDING_IMAGE]
    thumbnail = f"{base}/webgateway/render_thumbnail"
    lines = [
        "",
        "omero-porter demo: porter -> OMERO.web -> the OMERO test server",
        f"  porter      {base}/",
        f"  OMERO.web   {demo.web.base_url}  (only porter should talk to it)",
        f"  config      {demo.config}",
        "",
        "Public (anonymous, one shared OMERO session, cached):",
        *(f"  {thumbnail}/{i.id}/   {i.name} ({i.dataset})" for i in public),
        "",
        f"Log in at {base}/porter/login as {user.name} / {user.password}; you land on:",
        f"  {thumbnail}/{mine.id}/   {mine.name} ({mine.dataset})",
        f"  (anonymous: OMERO.web's 404 there, the public user cannot see {user.name}'s images)",
        f"  {base}/webadmin/   login required (porter's login page)",
        "",
        "How porter decides on a request:",
        f"  ./scripts/run --config {demo.config} explain GET /webgateway/render_thumbnail/1/",
        "Stop with Ctrl-C.",
        "",
    ]
    return "\n".join(lines)
