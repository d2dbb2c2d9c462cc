"""Real nginx (Debian's nginx-light) on a configuration under test, in a temporary directory.

The site configuration is an http-context file as an admin would drop it in
/etc/nginx/conf.d/ (docs/forward-auth.md's block, deploy/nginx-porter.conf); this wraps it in
a runnable nginx.conf whose temp files, pid and logs stay in the directory.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

# Workers run as the test's own user, so they may write the cache in the test's directory.
WRAPPER = """
daemon off;
{user}
worker_processes 1;
error_log {dir}/error.log warn;
pid {dir}/nginx.pid;
events {{ worker_connections 256; }}
http {{
    include /etc/nginx/mime.types;  # as Debian's own nginx.conf
    default_type application/octet-stream;
    access_log {dir}/access.log;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    include {dir}/omero-porter.conf;
}}
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def write_nginx_conf(directory: Path, site: str) -> Path:
    """A runnable nginx.conf in `directory` that includes `site`; its path."""
    (directory / "omero-porter.conf").write_text(site)
    user = "user root;" if os.geteuid() == 0 else ""
    conf = directory / "nginx.conf"
    conf.write_text(WRAPPER.format(dir=directory, user=user))
    return conf


class Nginx:
    """nginx serving `site` (an http-context configuration); `port` is the one to wait for."""

    def __init__(self, directory: Path, site: str, port: int) -> None:
        binary = shutil.which("nginx") or "/usr/sbin/nginx"
        if not Path(binary).exists():
            pytest.fail("nginx is not installed (scripts/setup.sh test installs nginx-light)")
        self.port = port
        self.directory = directory
        conf = write_nginx_conf(directory, site)
        with (directory / "stderr.log").open("wb") as stderr:
            self.process = subprocess.Popen(
                [binary, "-c", str(conf), "-p", str(directory)],
                stdout=subprocess.DEVNULL,
                stderr=stderr,
            )
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.2).close()
                break
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    log = (directory / "stderr.log").read_text() + self.error_log()
                    pytest.fail(f"nginx did not start:\n{log}")
                time.sleep(0.05)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def error_log(self) -> str:
        path = self.directory / "error.log"
        return path.read_text() if path.exists() else ""

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(10)
