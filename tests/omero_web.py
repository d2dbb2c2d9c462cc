"""The real OMERO.web (omero-web under gunicorn) against the OMERO test server (no pytest).

Each OMERO.web gets a temporary OMERODIR whose etc/grid/config.xml is written with
omero.config.ConfigXml, server_list = [the sim's SSL port], and TMPDIR inside it: omero-web
5.33's default session engine is Django's file backend under tempfile.gettempdir(), which
works across gunicorn workers as is; its cache stays the default DummyCache, as shipped.
Used by the fixtures (web_fixture.py), the benchmarks and ``run.py demo``.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from tests.omero_sim.process import OmeroSim, stop_process

START_TIMEOUT = 60.0
PUBLIC_URL_FILTER = r"^/(webgateway|webclient/keepalive_ping)/"


@dataclass
class OmeroWeb:
    """A running OMERO.web: its base URL, OMERODIR and configuration."""

    base_url: str
    omerodir: Path
    config: dict[str, str]
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def server_id(self) -> int:
        """OMERO.web's id of the sim in its server_list (1-based)."""
        return 1

    @property
    def session_dir(self) -> Path:
        """Where OMERO.web's file session engine keeps its sessions."""
        return self.omerodir / "tmp"

    @property
    def log_file(self) -> Path:
        return self.omerodir / "var" / "log" / "OMEROweb.log"

    def url(self, path: str) -> str:
        return self.base_url + path


def web_config(
    sim: OmeroSim,
    public_user: bool = False,
    public_url_filter: str = PUBLIC_URL_FILTER,
    extra: dict[str, str] | None = None,
) -> dict[str, str]:
    """OMERO.web settings (config.xml keys) pointing at the sim."""
    config = {
        "omero.web.server_list": json.dumps([sim.server_list_entry()]),
        "omero.web.debug": "false",
        "omero.web.secret_key": "omero-porter-tests-not-secret",
    }
    if public_user:
        config.update(
            {
                "omero.web.public.enabled": "true",
                "omero.web.public.user": "public",
                "omero.web.public.password": sim.users["public"],
                "omero.web.public.server_id": "1",
                "omero.web.public.url_filter": public_url_filter,
            }
        )
    config.update(extra or {})
    return config


def _write_config_xml(omerodir: Path, config: dict[str, str]) -> None:
    from omero.config import ConfigXml

    grid = omerodir / "etc" / "grid"
    grid.mkdir(parents=True)
    xml = ConfigXml(str(grid / "config.xml"))
    try:
        for key, value in config.items():
            xml[key] = value
    finally:
        xml.close()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_ready(web: OmeroWeb) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    assert web.process is not None
    while time.monotonic() < deadline:
        if web.process.poll() is not None:
            code = web.process.returncode
            raise RuntimeError(f"OMERO.web exited with {code}; see {web.log_file}")
        try:
            with urllib.request.urlopen(web.url("/api/"), timeout=5) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            time.sleep(0.2)
    raise RuntimeError(f"OMERO.web not ready after {START_TIMEOUT}s; see {web.log_file}")


def _gunicorn(omerodir: Path, port: int) -> subprocess.Popen[bytes]:
    """OMERO.web of `omerodir` under gunicorn on `port` (its log: gunicorn.log there)."""
    env = {
        **os.environ,
        "OMERODIR": str(omerodir),
        "TMPDIR": str(omerodir / "tmp"),
        "DJANGO_SETTINGS_MODULE": "omeroweb.settings",
        "PYTHONWARNINGS": "ignore",
    }
    with (omerodir / "gunicorn.log").open("ab") as log:
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "gunicorn",
                "omeroweb.wsgi:application",
                "--bind",
                f"127.0.0.1:{port}",
                "--workers",
                "1",
                "--worker-class",
                "gthread",
                "--threads",
                "8",
                "--timeout",
                "60",
                "--graceful-timeout",
                "2",
            ],
            cwd=omerodir,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )


def restart_web(web: OmeroWeb) -> None:
    """Start a stopped OMERO.web again: same OMERODIR (its session files), same port."""
    web.process = _gunicorn(web.omerodir, int(web.base_url.rsplit(":", 1)[1]))
    _wait_ready(web)


def start_web(config: dict[str, str], workdir: Path) -> OmeroWeb:
    """Start OMERO.web under gunicorn with that configuration; wait until it answers."""
    omerodir = Path(tempfile.mkdtemp(prefix="omeroweb-", dir=workdir))
    (omerodir / "tmp").mkdir()
    _write_config_xml(omerodir, config)
    port = _free_port()
    process = _gunicorn(omerodir, port)
    web = OmeroWeb(f"http://127.0.0.1:{port}", omerodir, config, process)
    try:
        _wait_ready(web)
    except BaseException:
        stop_web(web)
        raise
    return web


def stop_web(web: OmeroWeb) -> None:
    if web.process is not None:
        stop_process(web.process)
