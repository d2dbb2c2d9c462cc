"""The cache's admin endpoints, for `run.py cache stats|purge` and for monitoring: only
operators see them, with proxy.operator_token from an address of proxy.status_detail_from
(anyone else: 404, as if they did not exist).

    GET  /porter/cache         the tiers' sizes and the counters (JSON)
    POST /porter/cache/purge   {"path_regex": "..."} or {} for everything; JSON only, so a
                               page in a browser cannot send it
"""

from __future__ import annotations

from aiohttp import web

from cache.store import PURGE_BUDGET
from filters.regex_guard import MatchTimeout, guarded
from proxy.answers import NO_STORE, error_response
from proxy.keys import PUBLIC_CACHE, STATUS_DETAIL
from proxy.operators import is_operator


def _allowed(request: web.Request) -> bool:
    return is_operator(request, request.app[STATUS_DETAIL])


async def cache_stats(request: web.Request) -> web.Response:
    if not _allowed(request):
        return error_response(request, 404)
    return web.json_response(await request.app[PUBLIC_CACHE].stats(), headers=NO_STORE)


async def cache_purge(request: web.Request) -> web.Response:
    if not _allowed(request):
        return error_response(request, 404)
    if request.content_type != "application/json":
        return error_response(request, 415, "Send the purge as application/json.")
    try:
        body = await request.json()
        source = body.get("path_regex") if isinstance(body, dict) else None
    except ValueError as exc:  # not JSON, not UTF-8
        return error_response(request, 400, f"Not a purge request: {type(exc).__name__}.")
    try:
        pattern = None if source in (None, "") else guarded(str(source))
    except ValueError as exc:  # not a regex, or one whose matching time can explode
        return error_response(request, 400, f"path_regex is refused: {exc}.")
    try:
        removed = await request.app[PUBLIC_CACHE].purge(pattern)
    except MatchTimeout:
        return error_response(
            request,
            400,
            f"path_regex took longer than {PURGE_BUDGET:g} s over the cached paths; entries "
            "matched by then were purged. Purge with a simpler pattern, or everything.",
        )
    return web.json_response({"removed": removed}, headers=NO_STORE)


def add_routes(app: web.Application, prefix: str) -> None:
    if PUBLIC_CACHE in app:
        app.router.add_get(prefix + "/porter/cache", cache_stats, allow_head=False)
        app.router.add_post(prefix + "/porter/cache/purge", cache_purge)
