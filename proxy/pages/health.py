"""Porter's own endpoints under /porter/: liveness and readiness."""

from __future__ import annotations

import asyncio
import contextlib

import aiohttp
from aiohttp import web
from yarl import URL

from auth.servers import Server
from auth.session_store import SessionStoreUnavailable
from proxy.answers import NO_STORE
from proxy.keys import (
    CLIENT_SESSION,
    OMERO,
    READINESS_CHECKS,
    SESSION_STORE,
    SETTINGS,
    STATUS_DETAIL,
    ReadinessCheck,
)
from proxy.operators import is_operator

RESERVED = "/porter/"


# Shown, but porter is ready without them: it serves on (the cache disk tier: from memory
# and OMERO.web), so a load balancer should not take it out of rotation for them.
ADVISORY = frozenset({"cache_disk", "oidc", "limits"})


async def healthz(request: web.Request) -> web.Response:
    """The process is alive and its event loop answers."""
    return web.json_response({"status": "ok"}, headers=NO_STORE)


async def readyz(request: web.Request) -> web.Response:
    """Every readiness check passes: OMERO.web, the OMERO servers, the session store (an
    advisory one that fails, the cache's disk tier, is named under "degraded")."""
    checks = request.app[READINESS_CHECKS]
    names = list(checks)
    results = await asyncio.gather(*(checks[n]() for n in names), return_exceptions=True)
    report: dict[str, dict[str, object]] = {}
    for name, result in zip(names, results, strict=True):
        if isinstance(result, BaseException):
            report[name] = {"ok": False, "detail": type(result).__name__}
        else:
            report[name] = {"ok": result[0], "detail": result[1]}
    ready = all(r["ok"] for name, r in report.items() if name not in ADVISORY)
    body: dict[str, object] = {"status": "ready" if ready else "unavailable"}
    degraded = sorted(name for name, r in report.items() if name in ADVISORY and not r["ok"])
    if ready and degraded:
        body["degraded"] = degraded
    if is_operator(request, request.app[STATUS_DETAIL]):
        body["checks"] = report  # session counts and server names: not for everyone
    return web.json_response(
        body,
        status=200 if ready else 503,
        headers=NO_STORE,
    )


def upstream_check(app: web.Application) -> ReadinessCheck:
    """OMERO.web answers HTTP at all (any status counts as reachable)."""

    async def check() -> tuple[bool, str]:
        settings = app[SETTINGS].proxy
        timeout = aiohttp.ClientTimeout(total=settings.connect_timeout + 2)
        try:
            async with app[CLIENT_SESSION].head(
                settings.upstream + "/", allow_redirects=False, timeout=timeout
            ) as resp:
                return True, f"HTTP {resp.status}"
        except asyncio.TimeoutError:
            return False, "timed out"
        except (aiohttp.ClientError, OSError) as exc:
            return False, f"unreachable ({type(exc).__name__})"

    return check


def session_store_check(app: web.Application) -> ReadinessCheck:
    """The session store answers (Redis: a round trip)."""

    async def check() -> tuple[bool, str]:
        try:
            count = await asyncio.wait_for(app[SESSION_STORE].count(), 3)
        except SessionStoreUnavailable:
            return False, "unavailable"
        except asyncio.TimeoutError:
            return False, "timed out"
        return True, f"{count} session(s)"

    return check


def omero_check(app: web.Application) -> ReadinessCheck:
    """Every server of server_list accepts TCP connections (no login: probes run often)."""

    async def reachable(server: Server) -> str | None:
        host = URL(server.address).host or ""
        try:
            _, writer = await asyncio.wait_for(asyncio.open_connection(host, server.port), 3)
        except (OSError, asyncio.TimeoutError) as exc:
            return f"server {server.id} unreachable ({type(exc).__name__})"
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        return None

    async def check() -> tuple[bool, str]:
        servers = list(app[OMERO].servers)
        problems = [p for p in await asyncio.gather(*map(reachable, servers)) if p]
        if problems:
            return False, "; ".join(problems)
        return True, f"{len(servers)} server(s) reachable"

    return check


def add_routes(app: web.Application, prefix: str) -> None:
    base = prefix + RESERVED
    app.router.add_get(base + "healthz", healthz, allow_head=True)
    app.router.add_get(base + "readyz", readyz, allow_head=True)
