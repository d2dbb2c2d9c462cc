"""Porter as a real process: bounded memory while streaming, graceful shutdown."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable

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
