"""`run.py demo`: what a newcomer gets from the README's first command, end to end.

The demo starts the OMERO test server and the real OMERO.web, then serves porter in front of
them; these tests drive it as a subprocess, as the README's `./scripts/run demo` does, and
check what its banner promises: public thumbnails for anyone (cached), alice's image after
logging in and not before, and everything gone after Ctrl-C.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from http.cookiejar import CookieJar
from pathlib import Path

import pytest

from tests.porter_fixtures import free_port

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow


def _children(pid: int) -> set[int]:
    """Processes whose parent is `pid` (from /proc)."""
    found: set[int] = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.add(int(stat.parent.name))
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


class Demo:
    def __init__(self, process: subprocess.Popen[str], banner: str, port: int) -> None:
        self.process = process
        self.banner = banner
        self.base = f"http://127.0.0.1:{port}"


@pytest.fixture
def demo() -> Iterator[Demo]:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "run.py", "demo", "--port", str(port)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert process.stdout is not None
    lines: list[str] = []
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        lines.append(line)
        if "porter listening on" in line:
            break
    banner = "".join(lines)
    assert "porter listening on" in banner, banner
    try:
        yield Demo(process, banner, port)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        process.stdout.close()


def _get(url: str, opener: urllib.request.OpenerDirector | None = None) -> tuple[int, str, bytes]:
    try:
        with (opener or urllib.request.build_opener()).open(url, timeout=30) as resp:
            return resp.status, resp.headers.get("Content-Type", ""), resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers.get("Content-Type", ""), exc.read()


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None


def test_the_demo_serves_what_its_banner_says_and_stops_everything_on_ctrl_c(
    demo: Demo,
) -> None:
    banner = demo.banner
    public = re.findall(rf"{demo.base}(/webgateway/render_thumbnail/\d+/)\s+\S+ \(Public", banner)
    assert len(public) == 2, banner
    login = re.search(r"as (\w+) / (\S+); you land on:\n\s+\S+(/webgateway/\S+/)", banner)
    assert login is not None, banner
    user, password, private = login.groups()

    # anonymous: the public data, JPEGs through the one public session, then from the cache
    for path in public:
        status, kind, body = _get(demo.base + path)
        assert (status, kind, body[:2]) == (200, "image/jpeg", b"\xff\xd8")
    again = urllib.request.urlopen(demo.base + public[0], timeout=30)
    assert again.headers["X-Cache"] == "HIT"
    assert _get(demo.base + private)[0] == 404  # the public user cannot see alice's image
    no_redirect = urllib.request.build_opener(_NoRedirect)
    status, _, _ = _get(demo.base + "/webadmin/", no_redirect)
    assert status == 302  # to porter's login page

    # alice logs in on porter's page and lands on her own image
    jar = CookieJar()
    browser = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    page = _get(demo.base + "/porter/login", browser)[2].decode()
    token = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert token is not None
    form = urllib.parse.urlencode(
        {"csrf_token": token.group(1), "username": user, "password": password}
    ).encode()
    with browser.open(demo.base + "/porter/login", data=form, timeout=30) as landed:
        assert landed.url == demo.base + private
        assert (landed.status, landed.headers["Content-Type"]) == (200, "image/jpeg")
    assert _get(demo.base + public[0], browser)[0] == 404  # alice is not in the public group

    # Ctrl-C: porter, OMERO.web and the test server all stop
    children = _children(demo.process.pid)
    assert len(children) >= 2  # the test server and OMERO.web's gunicorn
    demo.process.send_signal(signal.SIGINT)
    assert demo.process.wait(timeout=30) == 0
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(_alive(pid) for pid in children):
        time.sleep(0.1)
    assert [pid for pid in children if _alive(pid)] == []
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(demo.base + "/porter/healthz", timeout=5)
