"""Run the app: uvloop when installed, graceful shutdown on SIGTERM and SIGINT."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import signal
from http import HTTPStatus
from typing import Any

from aiohttp import hdrs, web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_runner import GracefulExit
from aiohttp.web_server import Server

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
    may be porter's HttpOnly session cookie. Porter answers those quoting nothing."""

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
    def __call__(self) -> RequestHandler:
        return _QuietRequestHandler(self, loop=self._loop, **self._kwargs)


class PorterRunner(web.AppRunner):
    """An AppRunner whose connections answer parser errors with `_QuietRequestHandler`."""

    async def _make_server(self) -> Server:
        made = await super()._make_server()
        return _QuietServer(
            made.request_handler,
            request_factory=made.request_factory,
            handler_cancellation=made.handler_cancellation,
            loop=made._loop,
            **made._kwargs,
        )


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
