"""The OMERO test server as a subprocess: start it, stop it, steer it (no pytest here).

Used by the test fixtures (fixture.py) and by ``run.py demo``.
"""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.omero_sim.directory import DEFAULT_USERS_FILE, Directory

# zeroc-ice 3.6's Ice.py imports the deprecated `imp` module; import it once here, quietly,
# so that omero-py imports later in the run do not trip filterwarnings = error
with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import Ice  # noqa: F401

ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT = 30.0


@dataclass
class OmeroSim:
    """A running test server: where it listens, and its fault and observation controls."""

    host: str
    tcp_port: int
    ssl_port: int
    control_port: int
    idle_timeout: float
    users: dict[str, str]  # user name -> password, from the fixture file
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    # ~ addresses
    @property
    def tcp_url(self) -> str:
        """Host form omero-py accepts for plain TCP: ``tcp://127.0.0.1:PORT``."""
        return f"tcp://{self.host}:{self.tcp_port}"

    @property
    def ssl_url(self) -> str:
        """Host form omero-py accepts for SSL: ``ssl://127.0.0.1:PORT``."""
        return f"ssl://{self.host}:{self.ssl_port}"

    def server_list_entry(self, name: str = "sim", secure: bool = True) -> list[Any]:
        """An ``omero.web.server_list`` entry: [host, port, name] (host + port = SSL)."""
        if secure:
            return [self.host, self.ssl_port, name]
        return [self.tcp_url, self.tcp_port, name]

    def client(self, secure: bool = True) -> Any:
        """A new omero.client for this server (caller closes it)."""
        import omero.clients

        return omero.client(host=self.ssl_url if secure else self.tcp_url)

    # ~ controls
    def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        data = json.dumps(body or {}).encode() if method == "POST" else None
        request = urllib.request.Request(
            f"http://{self.host}:{self.control_port}{path}",
            data=data,
            method=method,
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read())

    def down(self) -> None:
        """Drop every connection and refuse new ones (sessions survive) until up()."""
        self._call("POST", "/down")

    def up(self) -> None:
        """Listen again on the same ports; also ends hang()."""
        self._call("POST", "/up")

    def hang(self) -> None:
        """Accept connections but answer nothing (a silent server) until up()."""
        self._call("POST", "/hang")

    def slow(self, seconds: float) -> None:
        """Delay every call by that many seconds (0: off)."""
        self._call("POST", "/slow", {"seconds": seconds})

    def kill_session(self, key: str) -> bool:
        """End a session now, as an admin or timeout would; False when unknown."""
        return bool(self._call("POST", "/kill", {"key": key})["killed"])

    def set_idle_timeout(self, seconds: float) -> None:
        """Time-to-idle of sessions created from now on."""
        self._call("POST", "/idle-timeout", {"seconds": seconds})

    def reset(self) -> None:
        """Up, no delay, default idle timeout, no sessions, counters at zero."""
        self._call("POST", "/reset")
        self.set_idle_timeout(self.idle_timeout)

    def stats(self) -> dict[str, Any]:
        """Counters, see SessionRegistry.snapshot.

        sessions_created, sessions_active, sessions_closed, sessions_expired, sessions_killed,
        logins, login_failures, joins, join_failures, detaches, keepalives,
        router_sessions_created, router_sessions_active, calls ({"IAdmin.getEventContext": n}).
        """
        return dict(self._call("GET", "/stats"))

    def sessions(self) -> list[dict[str, Any]]:
        """Live sessions: key, id, user, group, refcount, joins, agent, ip, idle_for, ..."""
        return list(self._call("GET", "/sessions"))

    def session(self, key: str) -> dict[str, Any] | None:
        """The live session with that key, or None."""
        return next((s for s in self.sessions() if s["key"] == key), None)


def start_sim(idle_timeout: float = 600.0, users_file: Path = DEFAULT_USERS_FILE) -> OmeroSim:
    """Start a test server subprocess and wait until it is ready."""
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.omero_sim",
            "--config",
            str(users_file),
            "--idle-timeout",
            str(idle_timeout),
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
    )
    assert process.stdout is not None
    line = process.stdout.readline()  # the server prints its ports once ready
    if not line:
        process.wait(timeout=5)
        raise RuntimeError(f"omero_sim exited with {process.returncode} before it was ready")
    ports = json.loads(line)
    users = {u.name: u.password for u in Directory.load(users_file).users.values()}
    return OmeroSim(
        ports["host"],
        ports["tcp_port"],
        ports["ssl_port"],
        ports["control_port"],
        idle_timeout,
        users,
        process,
    )


def stop_process(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then SIGKILL if it is still there after 10 s."""
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def stop_sim(sim: OmeroSim) -> None:
    if sim.process is None:
        return
    stop_process(sim.process)
    if sim.process.stdout is not None:
        sim.process.stdout.close()
