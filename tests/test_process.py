"""Porter as a real process: bounded memory while streaming, graceful shutdown."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable
from typing import Any

import aiohttp
import pytest

from tests.porter_fixtures import PorterProcess, Upstream, aiter_bytes, shared_session
from tests.redis_fixture import RedisServer

MB = 1024 * 1024
SIZE = 200 * MB
# Porter may grow a little while streaming, never by a sizeable part of the body.
RSS_GROWTH_LIMIT_KIB = 40 * 1024


async def logged_in(
    redis_server: RedisServer, start: Callable[..., PorterProcess], **proxy: object
) -> tuple[PorterProcess, dict[str, str]]:
    """A porter process sharing a Redis session store, and the cookie of a session in it."""
    prefix = f"porter-test-{id(proxy)}:"
    porter = start(
        sections={
            "session": {
                "store": "redis",
                "redis_url": redis_server.url,
                "redis_password": redis_server.password,
                "redis_key_prefix": prefix,
            }
        },
        **proxy,
    )
    session_id = await shared_session(redis_server.url, redis_server.password, prefix)
    return porter, {"porter_session": session_id}


@pytest.mark.slow
async def test_200mb_upload_and_download_stream_with_bounded_memory(
    redis_server: RedisServer,
    echo_upstream: Upstream,
    porter_process: Callable[..., PorterProcess],
) -> None:
    porter, cookies = await logged_in(
        redis_server,
        porter_process,
        upstream=echo_upstream.url,
        max_body_size=300 * MB,
        access_log=False,
    )
    async with aiohttp.ClientSession(auto_decompress=False, cookies=cookies) as session:
        async with session.get(porter.url + "/echo/warm-up") as resp:
            assert resp.status == 200
        baseline = porter.rss_kib()

        async with session.post(porter.url + "/upload", data=aiter_bytes(SIZE)) as resp:
            assert resp.status == 200
            assert (await resp.json())["body_size"] == SIZE

        received = 0
        async with session.get(porter.url + f"/download/{SIZE}") as resp:
            assert resp.status == 200
            async for chunk in resp.content.iter_chunked(MB):
                received += len(chunk)
                await asyncio.sleep(0)  # a slowish reader: porter must apply back-pressure
        assert received == SIZE

    growth = porter.rss_peak_kib() - baseline
    print(f"porter RSS baseline {baseline} KiB, peak growth {growth} KiB for 2 x 200 MB")
    assert growth < RSS_GROWTH_LIMIT_KIB


@pytest.mark.slow
async def test_sigterm_lets_in_flight_requests_finish(
    redis_server: RedisServer,
    echo_upstream: Upstream,
    porter_process: Callable[..., PorterProcess],
) -> None:
    porter, cookies = await logged_in(
        redis_server, porter_process, upstream=echo_upstream.url, shutdown_grace=10.0
    )
    async with aiohttp.ClientSession(cookies=cookies) as session:
        in_flight = asyncio.create_task(session.get(porter.url + "/slow/1.5"))
        await asyncio.wait_for(echo_upstream.state.slow_started.wait(), 10)
        porter.process.send_signal(signal.SIGTERM)
        resp = await asyncio.wait_for(in_flight, 10)
        assert resp.status == 200
        assert await resp.text() == "slow done"
        resp.release()
        # Once shut down, porter accepts nothing more.
        exit_code = await asyncio.to_thread(porter.process.wait, 15)
        assert exit_code == 0
        with pytest.raises(aiohttp.ClientConnectorError):
            await session.get(porter.url + "/porter/healthz")
    assert "porter stopped" in porter.log()


@pytest.mark.slow
async def test_sigint_stops_an_idle_porter_cleanly(
    echo_upstream: Upstream, porter_process: Callable[..., PorterProcess]
) -> None:
    porter = porter_process(upstream=echo_upstream.url)
    assert await asyncio.to_thread(porter.stop, signal.SIGINT) == 0
    assert "Traceback" not in porter.log()


async def _api_login(url: str, user: str, password: str) -> None:
    """A real login through porter's JSON API (OMERO.web's shape); the cookie is dropped."""
    jar = aiohttp.CookieJar(unsafe=True)
    async with aiohttp.ClientSession(cookie_jar=jar) as browser:
        async with browser.get(f"{url}/api/v0/token/") as resp:
            csrf = (await resp.json())["data"]
        async with browser.post(
            f"{url}/api/v0/login/",
            data={"username": user, "password": password, "server": "1"},
            headers={"X-CSRFToken": csrf},
        ) as resp:
            assert resp.status == 200, await resp.text()


def _web_sessions(web: Any) -> int:
    return sum(1 for p in web.session_dir.rglob("*") if p.is_file() and "sessionid" in p.name)


@pytest.mark.parametrize("store", ["memory", "redis"])
async def test_sigterm_closes_the_sessions_that_die_with_the_process(
    porter_process: Callable[..., PorterProcess],
    omero_sim: Any,
    omero_web: Any,
    redis_server: RedisServer,
    store: str,
) -> None:
    """On the memory store nobody can use porter's sessions after a restart: SIGTERM ends
    them on OMERO.web and OMERO. On Redis they outlive the process: nothing is closed."""
    entry = omero_sim.server_list_entry()
    sections: dict[str, dict[str, Any]] = {
        "omero": {"server_list": [list(entry[:3])]},
    }
    if store == "redis":
        sections["session"] = {
            "store": "redis",
            "redis_url": redis_server.url,
            "redis_password": redis_server.password,
            "redis_key_prefix": "porter-sigterm:",
        }
    porter = porter_process(sections, upstream=omero_web.base_url, shutdown_grace=5)
    before = {s["key"] for s in omero_sim.sessions()}
    web_before = _web_sessions(omero_web)
    await _api_login(porter.url, "alice", omero_sim.users["alice"])
    await _api_login(porter.url, "bob", omero_sim.users["bob"])
    made = {s["key"] for s in omero_sim.sessions()} - before
    assert len(made) == 2
    assert _web_sessions(omero_web) == web_before + 2
    porter.process.send_signal(signal.SIGTERM)
    assert await asyncio.to_thread(porter.process.wait, 20) == 0
    left = {s["key"] for s in omero_sim.sessions()} & made
    if store == "memory":
        assert left == set()
        assert _web_sessions(omero_web) == web_before
        assert "shutdown: closed 2 of 2 session(s) on OMERO" in porter.log()
    else:
        assert left == made
        assert _web_sessions(omero_web) == web_before + 2
        assert "shutdown: closed" not in porter.log()


async def test_sigterm_gives_the_closing_of_sessions_no_more_than_shutdown_grace(
    porter_process: Callable[..., PorterProcess], omero_sim: Any, omero_web: Any
) -> None:
    """OMERO silent at shutdown (calls would wait call_timeout, 30 s): porter stops closing
    after shutdown_grace, says so, and exits; OMERO ends the rest at its own timeout."""
    entry = omero_sim.server_list_entry()
    sections: dict[str, dict[str, Any]] = {
        "omero": {"server_list": [list(entry[:3])], "call_timeout": 30.0},
    }
    porter = porter_process(sections, upstream=omero_web.base_url, shutdown_grace=1)
    await _api_login(porter.url, "alice", omero_sim.users["alice"])
    omero_sim.hang()
    try:
        porter.process.send_signal(signal.SIGTERM)
        # well before call_timeout: the grace bounded the closing
        assert await asyncio.to_thread(porter.process.wait, 20) == 0
    finally:
        omero_sim.up()
    assert "not all closed within shutdown_grace (1 s)" in porter.log()
