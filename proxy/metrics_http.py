"""Where Prometheus scrapes porter: `GET /porter/metrics` for `[metrics] allow_from` clients
(404 for anyone else), and a separate listener on `[metrics] listen` (served by the single
porter process, or with workers by gunicorn's arbiter, summing every worker)."""

from __future__ import annotations

import logging
from wsgiref.simple_server import WSGIServer

from aiohttp import web
from prometheus_client import CollectorRegistry, multiprocess, start_http_server

import metrics
from filters.forwarded import TrustedProxies
from proxy.answers import error_response
from proxy.keys import SETTINGS
from proxy.operators import is_operator
from proxy.settings import MetricsSettings, split_listen

log = logging.getLogger("porter.metrics")

METRICS_CLIENTS = web.AppKey("metrics_clients", TrustedProxies)


async def porter_metrics(request: web.Request) -> web.Response:
    if not is_operator(request, request.app[METRICS_CLIENTS]):
        return error_response(request, 404)
    body, content_type = metrics.exposition()
    return web.Response(body=body, headers={"Content-Type": content_type})


async def _metrics_only(request: web.Request) -> web.Response:
    body, content_type = metrics.exposition()
    return web.Response(body=body, headers={"Content-Type": content_type})


def add_routes(app: web.Application, prefix: str) -> None:
    settings = app[SETTINGS].metrics
    if settings.allow_from:
        app[METRICS_CLIENTS] = TrustedProxies(settings.allow_from)
        app.router.add_get(prefix + "/porter/metrics", porter_metrics, allow_head=False)


async def start_listener(settings: MetricsSettings) -> web.AppRunner | None:
    """The separate metrics listener of a single porter process (None: not configured)."""
    if not settings.listen:
        return None
    host, port = split_listen(settings.listen)
    app = web.Application()
    app.router.add_get("/metrics", _metrics_only)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    log.info("metrics on http://%s:%d/metrics", host, port)
    return runner


def serve_multiprocess(settings: MetricsSettings, directory: str) -> WSGIServer | None:
    """The arbiter's listener: every worker's values, summed (a thread)."""
    if not settings.listen:
        return None
    host, port = split_listen(settings.listen)
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, directory)  # type: ignore[no-untyped-call]
    server, _ = start_http_server(port, addr=host, registry=registry)
    log.info("metrics of every worker on http://%s:%d/metrics", host, port)
    return server
