"""A real redis-server for the session store tests, on a free loopback port, no persistence.

`redis_server` (one per test session) requires a password (REDIS_PASSWORD), so every test
also proves the password reaches Redis and never an error message. `redis_server_factory`
starts private servers a test may stop and start again (the Redis-down tests).
redis-server must be installed (the project's install step does it: apt-get install
redis-server); without it these fixtures fail, they do not skip.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from auth.session_settings import SessionSettings
from tests.omero_sim.process import stop_process

REDIS_PASSWORD = "redis-Pa55word-q7"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _answers_ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
            s.sendall(f"AUTH {REDIS_PASSWORD}\r\nPING\r\n".encode())
            reply = b""
            while b"PONG" not in reply and b"-" not in reply:
                chunk = s.recv(256)
                if not chunk:
                    return False
                reply += chunk
            return b"+PONG" in reply
    except OSError:
        return False


class RedisServer:
    """One redis-server process; `stop()` and `start()` keep its port."""

    def __init__(self, directory: Path, extra: tuple[str, ...] = ()) -> None:
        """`extra`: more redis-server options, e.g. ("--replicaof", host, port)."""
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.fail(
                "redis-server is not installed; the project's install step installs it "
                "(apt-get install redis-server)",
                pytrace=False,
            )
        self.binary = binary
        self.directory = directory
        self.port = _free_port()
        self.password = REDIS_PASSWORD
        self.extra = extra
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """The server's URL, without the password (porter's settings keep it apart)."""
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        """Start the server and wait until it answers PING."""
        log = (self.directory / "redis.log").open("ab")
        self._process = subprocess.Popen(
            [
                self.binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.directory),
                "--requirepass",
                self.password,
                *self.extra,
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        deadline = time.monotonic() + 10
        while not _answers_ping(self.port):
            if self._process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                pytest.fail(
                    f"redis-server did not start on port {self.port}; see "
                    f"{self.directory / 'redis.log'}",
                    pytrace=False,
                )
            time.sleep(0.02)

    def kill(self) -> None:
        """SIGKILL, as a crash or a lost machine."""
        process, self._process = self._process, None
        if process is not None:
            process.kill()
            process.wait()

    def stop(self) -> None:
        """Stop the server (its data is gone: no persistence)."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            stop_process(process)


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A running redis-server shared by the test session (tests use distinct key prefixes)."""
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def redis_server_factory(tmp_path: Path) -> Iterator[Callable[[], RedisServer]]:
    """Starts private redis-servers for one test; all are stopped after it."""
    servers: list[RedisServer] = []

    def start() -> RedisServer:
        directory = tmp_path / f"redis{len(servers)}"
        directory.mkdir()
        server = RedisServer(directory)
        server.start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


def redis_sessions(server: RedisServer, **overrides: object) -> SessionSettings:
    """[session] on `server`, with a key prefix of its own and short timeouts."""
    values: dict[str, object] = {
        "store": "redis",
        "redis_url": server.url,
        "redis_password": server.password,
        "redis_key_prefix": f"porter-{time.monotonic_ns()}:",
        "redis_timeout": 0.5,
        "redis_connect_timeout": 0.5,
    }
    values.update(overrides)
    return SessionSettings(**values)  # type: ignore[arg-type]


@contextmanager
def stopped(server: RedisServer) -> Iterator[None]:
    """Redis stops answering (as a hung or unreachable server) until the block ends."""
    assert server._process is not None
    pid = server._process.pid
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(pid, signal.SIGCONT)
