"""Several porter processes on one port: a small parent starts N workers (`run.py serve
--worker`), each listening with SO_REUSEPORT so the kernel spreads connections over them,
replaces a worker that dies, and stops them all gracefully on SIGTERM / SIGINT.

The parent runs no app: it holds no session, no OMERO connection, no event loop, so there is
nothing in it to fail. Workers are new interpreters (not forks of a process with threads),
and each stops by itself if the parent disappears. With metrics on, the parent gives the
workers one directory for prometheus-client's multiprocess mode and serves the sum.
"""

from __future__ import annotations

import logging
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from wsgiref.simple_server import WSGIServer

from proxy.settings import Settings

log = logging.getLogger("porter.workers")

ROOT = Path(__file__).resolve().parent.parent
POLL = 0.2  # seconds between looks at the workers
BACKOFF_MAX = 30.0  # seconds between restarts of a worker that keeps dying at once
QUICK_DEATH = 5.0  # a worker that dies sooner than this after its start backs off
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
SECRET_KEY_ENV = "PORTER_PROXY__SECRET_KEY"  # noqa: S105 (a variable name, not a secret)


class PortTaken(OSError):
    pass


@dataclass
class _Worker:
    slot: int
    process: subprocess.Popen[bytes]
    started: float = field(default_factory=time.monotonic)
    backoff: float = 0.0


def check_port(host: str, port: int) -> None:
    """Raise OSError if workers could not listen on host:port (taken by another program)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        probe.bind((host, port))  # bound, never listening: it takes no connection


class Supervisor:
    """Runs `count` workers from `argv` until told to stop."""

    def __init__(self, argv: Sequence[str], count: int, grace: float) -> None:
        self.argv = list(argv)
        self.count = count
        self.grace = grace
        self.workers: dict[int, _Worker] = {}
        self.stopping = False
        self.env = dict(os.environ)
        self.restarts = 0

    def _start(self, slot: int, backoff: float = 0.0) -> None:
        process = subprocess.Popen(self.argv, env=self.env)  # output: the parent's own
        self.workers[slot] = _Worker(slot, process, backoff=backoff)
        log.info("worker %d started (pid %d)", slot, process.pid)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self.stopping = True

    def run(self) -> int:
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        for slot in range(1, self.count + 1):
            self._start(slot)
        while not self.stopping:
            time.sleep(POLL)
            for worker in list(self.workers.values()):
                code = worker.process.poll()
                if code is None or self.stopping:
                    continue
                self._replace(worker, code)
        return self._stop_all()

    def _replace(self, worker: _Worker, code: int) -> None:
        lived = time.monotonic() - worker.started
        backoff = min(BACKOFF_MAX, max(1.0, worker.backoff * 2)) if lived < QUICK_DEATH else 0.0
        how = f"signal {-code}" if code < 0 else f"status {code}"
        log.warning(
            "worker %d (pid %d) died with %s after %.1f s; starting another%s",
            worker.slot,
            worker.process.pid,
            how,
            lived,
            f" in {backoff:g} s" if backoff else "",
        )
        _mark_dead(self.env, worker.process.pid)
        self.restarts += 1
        deadline = time.monotonic() + backoff
        while time.monotonic() < deadline and not self.stopping:
            time.sleep(POLL)
        if not self.stopping:
            self._start(worker.slot, backoff)

    def _stop_all(self) -> int:
        log.info("stopping %d worker(s)", len(self.workers))
        for worker in self.workers.values():
            if worker.process.poll() is None:
                worker.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + self.grace + 5
        for worker in self.workers.values():
            try:
                worker.process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("worker %d did not stop in time: killed", worker.slot)
                worker.process.kill()
                worker.process.wait()
        log.info("porter stopped")
        return 0


def _mark_dead(env: dict[str, str], pid: int) -> None:
    """prometheus-client: a dead worker's live gauges leave the sum."""
    if env.get(MULTIPROC_ENV):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid, env[MULTIPROC_ENV])  # type: ignore[no-untyped-call]


def supervise(settings: Settings, config: Path, workers: int) -> int:
    """Run `workers` porter processes on settings.proxy's host and port until SIGTERM."""
    proxy = settings.proxy
    check_port(proxy.host, proxy.port)
    argv = [
        sys.executable,
        str(ROOT / "run.py"),
        "serve",
        "--config",
        str(config),
        "--host",
        proxy.host,
        "--port",
        str(proxy.port),
        "--worker",
    ]
    supervisor = Supervisor(argv, workers, proxy.shutdown_grace)
    if not proxy.secret_key:
        # porter's forms are signed with it: a page from one worker must post to another
        supervisor.env[SECRET_KEY_ENV] = secrets.token_urlsafe(32)
    with tempfile.TemporaryDirectory(prefix="porter-metrics-") as directory:
        supervisor.env[MULTIPROC_ENV] = directory
        metrics = _serve_metrics(settings, directory)
        log.info(
            "porter supervising %d workers on http://%s:%d%s/ -> %s",
            workers,
            proxy.host,
            proxy.port,
            proxy.prefix,
            proxy.upstream,
        )
        try:
            return supervisor.run()
        finally:
            if metrics is not None:
                metrics.shutdown()


def _serve_metrics(settings: Settings, directory: str) -> WSGIServer | None:
    """The sum of every worker's metrics on [metrics] listen, served by the parent."""
    from proxy.metrics_http import serve_multiprocess

    return serve_multiprocess(settings.metrics, directory)
