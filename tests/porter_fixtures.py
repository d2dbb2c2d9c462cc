"""Fixtures that run porter in front of the echo upstream, in-process or as a real process."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from auth.session_settings import SessionSettings
from auth.stores import create_store
from proxy.app import create_app
from proxy.keys import SESSION_STORE
from proxy.settings import ProxySettings, Settings
from tests.echo_upstream import STATE, EchoState, create_echo_app
from tests.keys import TEST_SEAL, TEST_SECRET_KEY

ROOT = Path(__file__).resolve().parent.parent
# What a session made by `porter(logged_in=True)` holds.
TEST_OMERO_KEY = "00000000-0000-4000-8000-00000000a11c"
TEST_UPSTREAM_SESSION = "upstream-session-of-alice"
# proxy.operator_token of the tests, and the header an operator sends with it.
OPERATOR_TOKEN = "operator-token-of-the-tests-0123456789abcdef"
OPERATOR = {"Authorization": f"Bearer {OPERATOR_TOKEN}"}


@dataclass
class Upstream:
    url: str
    state: EchoState
    server: TestServer


LOG_BURST = 0.12  # seconds: proxy/log.py's GATHER, and the write, with room


_GIVEN: set[int] = set()


def free_port() -> int:
    """A port nobody listens on, never one this test run handed out before: two calls in a
    row could otherwise name the same port (nothing binds it in between)."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port not in _GIVEN:
            _GIVEN.add(port)
            return port


@pytest.fixture
async def echo_upstream(aiohttp_server: Callable[..., Awaitable[TestServer]]) -> Upstream:
    app = create_echo_app()
    server = await aiohttp_server(app)
    return Upstream(str(server.make_url("")).rstrip("/"), app[STATE], server)


PorterFactory = Callable[..., Awaitable[TestClient[web.Request, web.Application]]]


@pytest.fixture
def porter(
    echo_upstream: Upstream, aiohttp_client: Callable[..., Awaitable[TestClient[Any, Any]]]
) -> PorterFactory:
    """Make a porter client in front of the echo upstream: porter(prefix="/omero", ...)."""

    async def make(
        *,
        configure: Callable[[web.Application], None] | None = None,
        sections: dict[str, Any] | None = None,
        logged_in: bool = True,
        server: dict[str, Any] | None = None,
        **proxy: Any,
    ) -> TestClient[web.Request, web.Application]:
        """`sections` holds other settings sections (mail=MailSettings(...), ...); `configure`
        may add test-only routes before the app starts; `server` is passed to aiohttp's
        test server (e.g. handler_cancellation=True).

        With `logged_in`, the client holds the cookie of a session put in porter's real
        session store, as a login would leave it (the echo upstream cannot log anyone in;
        tests/test_login.py does real logins against OMERO.web and the OMERO test server).
        """
        proxy.setdefault("upstream", echo_upstream.url)
        proxy.setdefault("operator_token", OPERATOR_TOKEN)  # an operator sends OPERATOR
        settings = Settings(proxy=ProxySettings(**proxy), **(sections or {}))
        app = create_app(settings)
        if configure is not None:
            configure(app)
        client: TestClient[web.Request, web.Application] = await aiohttp_client(
            app, server_kwargs=server or {}
        )
        if logged_in:
            record = await app[SESSION_STORE].create(
                server_id=1,
                omero_session_key=TEST_OMERO_KEY,
                user_id=2,
                user_name="alice",
                cookies={"sessionid": TEST_UPSTREAM_SESSION},
            )
            client.session.cookie_jar.update_cookies({settings.session.cookie_name: record.id})
        return client

    return make


@dataclass
class PorterProcess:
    """Porter run by run.py in its own process, as an admin would run it."""

    process: subprocess.Popen[bytes]
    url: str
    log_path: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def rss_peak_kib(self) -> int:
        return _status_field(self.pid, "VmHWM")

    def rss_kib(self) -> int:
        return _status_field(self.pid, "VmRSS")

    def log(self) -> str:
        """The output so far. A running porter writes its lines in bursts at most 50 ms
        apart (proxy/log.py): wait for the current burst before reading."""
        if self.process.poll() is None:
            time.sleep(LOG_BURST)
        return self.log_path.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
        return self.process.wait(timeout=timeout)


def _status_field(pid: int, name: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(name + ":"):
            return int(line.split()[1])
    raise LookupError(name)


def write_config(path: Path, sections: dict[str, dict[str, Any]]) -> Path:
    lines: list[str] = []
    for section, values in sections.items():
        lines.append(f"[{section}]")
        for key, value in values.items():
            lines.append(f"{key} = {_toml(value)}")
    path.write_text("\n".join(lines) + "\n")
    return path


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    if isinstance(value, dict):  # an inline table, e.g. one of [[sso.issuers]]
        return "{" + ", ".join(f"{k} = {_toml(v)}" for k, v in value.items()) + "}"
    return repr(value)


@pytest.fixture
def porter_process(tmp_path: Path) -> Iterator[Callable[..., PorterProcess]]:
    """Start `python run.py serve` on a free port with the given [proxy] settings."""
    started: list[PorterProcess] = []

    def start(sections: dict[str, dict[str, Any]] | None = None, **proxy: Any) -> PorterProcess:
        proxy = {"host": "127.0.0.1", "port": free_port(), **proxy}
        if (sections or {}).get("session", {}).get("store") == "redis":
            proxy.setdefault("secret_key", TEST_SECRET_KEY)  # names and seals its sessions
        port = int(proxy["port"])
        config = write_config(
            tmp_path / f"porter-{port}.toml", {"proxy": proxy, **(sections or {})}
        )
        log_path = tmp_path / f"porter-{port}.log"
        env = {k: v for k, v in os.environ.items() if not k.startswith("PORTER_")}
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                [sys.executable, str(ROOT / "run.py"), "serve", "--config", str(config)],
                cwd=ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
            )
        handle = PorterProcess(process, f"http://127.0.0.1:{port}", log_path)
        started.append(handle)
        _wait_listening(handle, port)
        return handle

    yield start
    for handle in started:
        if handle.process.poll() is None:
            handle.process.kill()
            handle.process.wait()


def _wait_listening(handle: PorterProcess, port: int, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if handle.process.poll() is not None:
            raise RuntimeError(f"porter exited with {handle.process.returncode}:\n{handle.log()}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"porter did not listen on {port}:\n{handle.log()}")


async def aiter_bytes(total: int, block: int = 256 * 1024) -> AsyncIterator[bytes]:
    chunk = b"u" * block
    sent = 0
    while sent < total:
        part = chunk[: min(block, total - sent)]
        sent += len(part)
        yield part


async def shared_session(redis_url: str, password: str, key_prefix: str) -> str:
    """A logged-in session put in a Redis session store that a porter process shares; its
    cookie value. (The echo upstream cannot log anyone in; the id is real, the store real.)"""
    store = create_store(
        SessionSettings(
            store="redis",
            redis_url=redis_url,
            redis_password=password,
            redis_key_prefix=key_prefix,
        ),
        on_evict=lambda server_id, key: None,
        seal=TEST_SEAL,
    )
    try:
        record = await store.create(
            server_id=1,
            omero_session_key=TEST_OMERO_KEY,
            user_id=2,
            user_name="alice",
            cookies={"sessionid": TEST_UPSTREAM_SESSION},
        )
    finally:
        await store.close()
    return record.id
