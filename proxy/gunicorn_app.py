"""Several porter processes under gunicorn, as OMERO sites already run OMERO.web.

`run.py serve --workers N` (or `[proxy] workers = N`) runs gunicorn's arbiter over aiohttp's
worker class (uvloop's when installed). gunicorn brings what a home-made supervisor lacked:

- HUP re-reads config.toml: new workers start with it, the old ones finish their requests;
- TTIN / TTOU add and remove a worker; USR2 upgrades the binary;
- a worker that stops answering its heartbeat for `[proxy] worker_timeout` is replaced, and
  one that dies is replaced at once;
- TERM lets every worker's in-flight requests finish for `shutdown_grace` seconds.

Each worker builds porter's own runner (its parser-error page quotes nothing) from the
configuration file as it is when the worker starts. prometheus-client's multiprocess mode sums
the workers on `[metrics] listen`, served by the arbiter; a dead worker's live gauges leave
the sum (`child_exit`). Log lines go through porter's log set-up, gunicorn's own included.
"""

from __future__ import annotations

import logging
import math
import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from gunicorn.app.base import BaseApplication  # type: ignore[import-untyped]
from gunicorn.glogging import Logger  # type: ignore[import-untyped]

from proxy.config import ConfigError
from proxy.settings import Settings, load_settings

log = logging.getLogger("porter.workers")

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
OWNED_ENV = "PORTER_METRICS_DIR_MADE"


def worker_class() -> str:
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return "aiohttp.GunicornWebWorker"
    return "aiohttp.GunicornUVLoopWebWorker"


class PorterLogger(Logger):  # type: ignore[misc]
    """gunicorn's messages on porter's handlers (its format, text or JSON): no handler of
    gunicorn's own, no access log of its (porter writes one line per request)."""

    def setup(self, cfg: Any) -> None:
        super().setup(cfg)
        for logger in (self.error_log, self.access_log):
            logger.handlers.clear()
            logger.propagate = logger is self.error_log


class PorterArbiter(BaseApplication):  # type: ignore[misc]
    """gunicorn over porter's configuration file, with the command line's overrides
    (`command_line`, as load_settings takes them) applied again on every HUP."""

    def __init__(
        self,
        config: Path,
        command_line: Mapping[str, tuple[str, Any]],
        settings: Settings,
        log_setup: Any,
    ) -> None:
        self.config_path = config
        self.command_line = command_line
        self.settings = settings
        self.log_setup = log_setup
        super().__init__()

    def _read(self) -> Settings:
        return load_settings(self.config_path, command_line=self.command_line)

    def load_config(self) -> None:
        """At start and on every HUP (a configuration that does not load keeps the last)."""
        if self.cfg is not None and getattr(self, "_loaded", False):
            try:
                self.settings = self._read()
            except ConfigError as exc:
                log.error("HUP: the configuration did not load; workers keep the last: %s", exc)
        self._loaded = True
        proxy = self.settings.proxy
        host = f"[{proxy.host}]" if ":" in proxy.host else proxy.host
        values = {
            "bind": [f"{host}:{proxy.port}"],
            "workers": proxy.workers,
            "worker_class": worker_class(),
            "graceful_timeout": math.ceil(proxy.shutdown_grace),  # gunicorn takes whole seconds
            "timeout": math.ceil(proxy.worker_timeout),
            "proc_name": "omero-porter",
            "control_socket_disable": True,  # managed by signals (systemd), no other door
            # one listening socket, the arbiter's, shared by the workers: with one per worker
            # (reuse_port) a worker leaving on HUP resets the connections in its backlog
            "reuse_port": False,
            "logger_class": PorterLogger,
            "loglevel": proxy.log_level,
            "errorlog": "-",
            "accesslog": None,
            "post_fork": _post_fork,
            "when_ready": _when_ready,
            "child_exit": _child_exit,
        }
        for key, value in values.items():
            self.cfg.set(key, value)

    def load(self) -> Any:
        arbiter = self

        async def factory() -> Any:
            from proxy.server import porter_runner

            return porter_runner(arbiter._read())

        return factory


def _post_fork(server: Any, worker: Any) -> None:
    """The worker's own log thread (threads do not survive a fork)."""
    app: PorterArbiter = server.app
    app.log_setup()


def _when_ready(server: Any) -> None:
    from proxy.metrics_http import serve_multiprocess

    app: PorterArbiter = server.app
    settings = app.settings
    directory = os.environ.get(MULTIPROC_ENV)
    if directory:
        serve_multiprocess(settings.metrics, directory)
    proxy = settings.proxy
    log.info(
        "porter running %d workers on http://%s:%d%s/ -> %s (gunicorn, pid %d)",
        proxy.workers,
        proxy.host,
        proxy.port,
        proxy.prefix,
        proxy.upstream,
        os.getpid(),
    )


def _child_exit(server: Any, worker: Any) -> None:
    directory = os.environ.get(MULTIPROC_ENV)
    if directory:
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid, directory)  # type: ignore[no-untyped-call]


def run_workers(
    config: Path, command_line: Mapping[str, tuple[str, Any]], settings: Settings, log_setup: Any
) -> int:
    """Serve with `settings.proxy.workers` gunicorn workers until TERM; the exit status. The
    process was started with PROMETHEUS_MULTIPROC_DIR set (run.py sees to it)."""
    arbiter = os.getpid()
    try:
        PorterArbiter(config, command_line, settings, log_setup).run()
    except SystemExit as exc:
        return int(exc.code or 0)
    finally:
        # a worker leaves through here too (gunicorn forks it inside run() and it exits with
        # SystemExit): only the arbiter removes the directory, or an old worker leaving after
        # a HUP would take it from the new ones
        made = os.environ.get(OWNED_ENV)
        if os.getpid() == arbiter and made and made == os.environ.get(MULTIPROC_ENV):
            shutil.rmtree(made, ignore_errors=True)
    return 0
