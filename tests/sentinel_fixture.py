"""Real Redis replication with a real Sentinel: one primary, one replica, one sentinel
(`redis-server --sentinel`), each its own process on its own port, all with a password."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.redis_fixture import REDIS_PASSWORD, RedisServer

MASTER = "porter-primary"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _command(port: int, *words: str, password: str | None = REDIS_PASSWORD) -> str:
    """One command over RESP with redis-cli semantics kept minimal: the reply's text."""
    argv = ["redis-cli", "-p", str(port), "--no-auth-warning"]
    if password:
        argv += ["-a", password]
    found = subprocess.run([*argv, *words], capture_output=True, text=True, timeout=10)
    return found.stdout


class Replicated:
    """A primary, its replica and a sentinel watching them (ports: .primary, .replica,
    .sentinel)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.password = REDIS_PASSWORD
        (directory / "primary").mkdir()
        (directory / "replica").mkdir()
        self._primary = RedisServer(directory / "primary", ("--masterauth", self.password))
        self.primary = self._primary.port
        self._replica = RedisServer(
            directory / "replica",
            ("--masterauth", self.password, "--replicaof", "127.0.0.1", str(self.primary)),
        )
        self.replica = self._replica.port
        self.sentinel = _free_port()
        self._sentinel: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self._primary.start()
        self._replica.start()
        conf = self.directory / "sentinel.conf"
        conf.write_text(
            f"port {self.sentinel}\nbind 127.0.0.1\ndir {self.directory}\n"
            f"sentinel monitor {MASTER} 127.0.0.1 {self.primary} 1\n"
            f"sentinel auth-pass {MASTER} {self.password}\n"
            f"sentinel down-after-milliseconds {MASTER} 1000\n"
            f"sentinel failover-timeout {MASTER} 5000\n"
            f"sentinel parallel-syncs {MASTER} 1\n"
        )
        with (self.directory / "sentinel.log").open("ab") as log:
            self._sentinel = subprocess.Popen(
                [self._primary.binary, str(conf), "--sentinel"],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self.wait(lambda: "master_link_status:up" in self.info(self.replica), "replication")
        self.wait(lambda: self.primary_port() == self.primary, "the sentinel")
        self.wait(lambda: self._sentinel_field("num-slaves") == "1", "the sentinel's replica")

    def _sentinel_field(self, name: str) -> str:
        lines = _command(self.sentinel, "SENTINEL", "master", MASTER, password=None).split("\n")
        for key, value in zip(lines[::2], lines[1::2], strict=False):
            if key.strip() == name:
                return value.strip()
        return ""

    def info(self, port: int) -> str:
        return _command(port, "INFO", "replication")

    def primary_port(self) -> int | None:
        reply = _command(
            self.sentinel, "SENTINEL", "get-master-addr-by-name", MASTER, password=None
        ).split()
        return int(reply[1]) if len(reply) == 2 else None

    def wait_replicated(self) -> None:
        """Every write on the primary so far has reached the replica."""
        assert _command(self.primary, "WAIT", "1", "5000").strip() == "1"

    def kill_primary(self) -> None:
        self._primary.kill()

    @staticmethod
    def wait(check: object, what: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while not check():  # type: ignore[operator]
            if time.monotonic() > deadline:
                pytest.fail(f"waited {timeout} s for {what}", pytrace=False)
            time.sleep(0.1)

    def stop(self) -> None:
        if self._sentinel is not None and self._sentinel.poll() is None:
            self._sentinel.terminate()
            self._sentinel.wait(timeout=10)
        self._replica.stop()
        self._primary.stop()


@pytest.fixture
def replicated_redis(tmp_path: Path) -> Iterator[Replicated]:
    if shutil.which("redis-cli") is None:
        pytest.fail("redis-cli is not installed (it comes with redis-server)", pytrace=False)
    setup = Replicated(tmp_path)
    try:
        setup.start()
        yield setup
    finally:
        setup.stop()
