"""Run the app: uvloop when installed, graceful shutdown on SIGTERM and SIGINT."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import signal
import time
from collections import Counter
from http import HTTPStatus
from typing import Any

from aiohttp import hdrs, web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_runner import GracefulExit
from aiohttp.web_server import Server

import metrics
from proxy.app import create_app
from proxy.finish import SERVER
from proxy.keys import SETTINGS
from proxy.log import configure_logging
from proxy.metrics_http import start_listener
from proxy.settings import Settings

log = logging.getLogger("porter.proxy")

__all__ = ["configure_logging", "serve"]


def new_event_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
    return loop


async def _freeze_heap(app: web.Application) -> None:
    # Everything made at import and start-up lives as long as porter: moving it out of the
    # collector's sight makes full collections short (they set porter's p99 under load).
    gc.collect()
    gc.freeze()


class _QuietRequestHandler(RequestHandler):
    """aiohttp's connection handler, except for requests its parser refuses (a header too
    long, a malformed line): aiohttp's own page and log line quote the offending bytes, which
    may be porter's HttpOnly session cookie. Porter answers those quoting nothing.

    It also bounds what aiohttp does not: a request head must be complete within
    `header_timeout` seconds of its first byte (of the connection, for the first one), or the
    connection is closed; and the server keeps at most `max_connections` open."""

    _head_timer: asyncio.TimerHandle | None = None

    @property
    def _limits(self) -> _QuietServer:
        return self._manager  # type: ignore[return-value]

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        server = self._limits
        super().connection_made(transport)
        server.open_connections += 1
        metrics.CONNECTIONS_OPEN.inc()
        if server.max_connections and server.open_connections > server.max_connections:
            metrics.CONNECTIONS_CUT.labels("over_limit").inc()
            server.note_cut("over_limit")
            self.force_close()
            transport.close()
            return
        self._arm_head_timer()

    def connection_lost(self, exc: BaseException | None) -> None:
        server = self._limits
        if server is not None:
            server.open_connections -= 1
            metrics.CONNECTIONS_OPEN.dec()
        self._disarm_head_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        # the first bytes of a next request's head on a kept-alive connection start its clock
        if self._head_timer is None and not self._request_in_progress and not self._messages:
            self._arm_head_timer()
        super().data_received(data)
        if self._messages or self._request_in_progress:
            self._disarm_head_timer()  # a complete head: from here, the request's own timeouts

    def _arm_head_timer(self) -> None:
        timeout = self._limits.header_timeout if self._limits is not None else 0.0
        if timeout > 0 and self._head_timer is None:
            self._head_timer = self._loop.call_later(timeout, self._head_too_slow)

    def _disarm_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_too_slow(self) -> None:
        self._head_timer = None
        if self._messages or self._request_in_progress or self.transport is None:
            return
        metrics.CONNECTIONS_CUT.labels("header_timeout").inc()
        self._limits.note_cut("header_timeout")
        self.force_close()
        self.transport.close()

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if not isinstance(exc, HttpProcessingError):
            return super().handle_error(request, status, exc, message)
        log.warning("unparseable HTTP request from %s: %s", request.remote, type(exc).__name__)
        phrase = HTTPStatus(status).phrase if status in HTTPStatus._value2member_map_ else ""
        response = web.Response(
            status=status,
            text=f"{status} {phrase}\n",
            headers={hdrs.CACHE_CONTROL: "no-store", hdrs.SERVER: SERVER},
        )
        response.force_close()
        return response


class _QuietServer(Server):
    header_timeout = 0.0
    max_connections = 0
    open_connections = 0
    _cuts: Counter[str]
    _cuts_logged_at = 0.0

    def __call__(self) -> RequestHandler:
        return _QuietRequestHandler(self, loop=self._loop, **self._kwargs)

    def note_cut(self, reason: str) -> None:
        """One WARNING per minute at most, with the count since the last one."""
        self._cuts[reason] += 1
        now = time.monotonic()
        if now - self._cuts_logged_at >= CUT_LOG_INTERVAL:
            self._cuts_logged_at = now
            counts = ", ".join(f"{n} {why}" for why, n in sorted(self._cuts.items()))
            self._cuts.clear()
            log.warning(
                "closed client connections: %s (header_timeout %gs, max_connections %d)",
                counts,
                self.header_timeout,
                self.max_connections,
            )


CUT_LOG_INTERVAL = 60.0


class PorterRunner(web.AppRunner):
    """An AppRunner whose connections are `_QuietRequestHandler`s, with the listener's
    header timeout and connection cap from [proxy]."""

    async def _make_server(self) -> Server:
        made = await super()._make_server()
        server = _QuietServer(
            made.request_handler,
            request_factory=made.request_factory,
            handler_cancellation=made.handler_cancellation,
            loop=made._loop,
            **made._kwargs,
        )
        proxy = self.app[SETTINGS].proxy
        server.header_timeout = proxy.header_timeout
        server.max_connections = proxy.max_connections
        server._cuts = Counter()
        return server


async def run(app: web.Application, host: str, port: int, shutdown_grace: float) -> None:
    """Serve `app` until SIGTERM/SIGINT, then give in-flight requests `shutdown_grace`."""
    runner = PorterRunner(
        app, handle_signals=True, access_log=None, shutdown_timeout=shutdown_grace
    )
    await runner.setup()
    with contextlib.suppress(NotImplementedError, AttributeError):  # no SIGHUP on Windows
        asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, _no_reload)
    metrics_runner = await start_listener(app[SETTINGS].metrics)
    try:
        await web.TCPSite(runner, host, port).start()
        proxy = app[SETTINGS].proxy
        log.info(  # said once the socket listens: tests and scripts wait for this line
            "porter listening on http://%s:%d%s/ -> %s (loop: %s)",
            host,
            port,
            proxy.prefix,
            proxy.upstream,
            type(asyncio.get_running_loop()).__module__.split(".")[0],
        )
        await asyncio.Event().wait()  # until a signal raises GracefulExit
    finally:
        await runner.cleanup()
        if metrics_runner is not None:
            await metrics_runner.cleanup()


def _no_reload() -> None:
    """SIGHUP (`systemctl reload`) to one process: its default action would end porter."""
    log.warning(
        "SIGHUP: one porter process does not reload its configuration; restart it to apply "
        "a change (in-memory sessions are lost), or run [proxy] workers > 1, which reload on "
        "SIGHUP with no dropped request"
    )


def porter_runner(settings: Settings) -> PorterRunner:
    """The runner of one gunicorn worker (gunicorn owns the sockets and the signals)."""
    app = create_app(settings)
    app.on_startup.append(_freeze_heap)
    app.on_startup.append(_worker_started)
    return PorterRunner(app, access_log=None, shutdown_timeout=settings.proxy.shutdown_grace)


async def _worker_started(app: web.Application) -> None:
    log.info(  # tests wait for this line
        "porter worker %d listening -> %s (loop: %s)",
        os.getpid(),
        app[SETTINGS].proxy.upstream,
        type(asyncio.get_running_loop()).__module__.split(".")[0],
    )


def serve(settings: Settings) -> None:
    """Serve until SIGTERM/SIGINT, then let in-flight requests finish for the grace period."""
    proxy = settings.proxy
    app = create_app(settings)
    app.on_startup.append(_freeze_heap)
    loop = new_event_loop()
    asyncio.set_event_loop(loop)
    main = loop.create_task(run(app, proxy.host, proxy.port, proxy.shutdown_grace))
    try:
        loop.run_until_complete(main)
    except (GracefulExit, KeyboardInterrupt):
        pass
    finally:
        main.cancel()  # its finally: runner.cleanup(), in-flight requests get the grace period
        with contextlib.suppress(asyncio.CancelledError):
            loop.run_until_complete(main)
        _cancel_all(loop)
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()
    log.info("porter stopped")


def _cancel_all(loop: asyncio.AbstractEventLoop) -> None:
    tasks: Any = asyncio.all_tasks(loop)
    for task in tasks:
        task.cancel()
    loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
