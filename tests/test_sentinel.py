"""Redis Sentinel: porter finds the primary through a real sentinel, and a failover while it
serves costs logged-in users a few 503s, never a 500 and never a login page; sessions written
before it are still there, and porter recovers without a restart."""

from __future__ import annotations

import asyncio
import time

import aiohttp
import pytest

from auth.session_settings import SessionSettings
from proxy.keys import SESSION_STORE
from tests.porter_fixtures import PorterFactory, Upstream
from tests.sentinel_fixture import MASTER, Replicated

pytestmark = pytest.mark.slow


async def test_a_failover_while_porter_serves(
    echo_upstream: Upstream, porter: PorterFactory, replicated_redis: Replicated
) -> None:
    session = SessionSettings(
        store="redis",
        redis_sentinels=(("127.0.0.1", replicated_redis.sentinel),),
        redis_sentinel_master=MASTER,
        redis_password=replicated_redis.password,
        redis_key_prefix=f"sentinel-{time.monotonic_ns()}:",
        redis_timeout=0.5,
        redis_connect_timeout=0.5,
    )
    client = await porter(sections={"session": session})  # alice, in the store
    store = client.app[SESSION_STORE]
    records = [
        await store.create(
            server_id=1,
            omero_session_key=f"00000000-0000-4000-8000-{n:012d}",
            user_id=10 + n,
            user_name=f"user{n}",
            cookies={"sessionid": f"held-{n}"},
        )
        for n in range(20)
    ]
    assert (await client.get("/echo/before")).status == 200
    await asyncio.to_thread(replicated_redis.wait_replicated)

    statuses: list[int] = []
    stop = asyncio.Event()

    async def keep_asking() -> None:
        while not stop.is_set():
            resp = await client.get("/echo/during", allow_redirects=False)
            statuses.append(resp.status)
            await resp.release()
            await asyncio.sleep(0.02)

    asker = asyncio.create_task(keep_asking())
    await asyncio.sleep(0.3)
    await asyncio.to_thread(replicated_redis.kill_primary)
    started = time.monotonic()
    await asyncio.to_thread(
        replicated_redis.wait,
        lambda: replicated_redis.primary_port() == replicated_redis.replica,
        "the sentinel to promote the replica",
    )
    promoted = time.monotonic() - started
    # porter finds the new primary by itself: answers are 200 again
    deadline = time.monotonic() + 20
    while statuses[-5:] != [200] * 5:
        assert time.monotonic() < deadline, statuses[-20:]
        await asyncio.sleep(0.1)
    stop.set()
    await asker
    recovered = time.monotonic() - started
    refused = statuses.count(503)
    print(
        f"\nfailover: promoted after {promoted:.1f} s, porter answering again after "
        f"{recovered:.1f} s; {len(statuses)} requests: {refused} x 503, the rest 200"
    )
    assert set(statuses) <= {200, 503}  # never a 500, never a redirect to the login page
    assert refused > 0  # the primary was gone for a while, and porter said so

    # every session written before the failover is there, on the new primary
    for n, record in enumerate(records):
        async with (
            aiohttp.ClientSession(cookies={"porter_session": record.id}) as other,
            other.get(client.make_url(f"/echo/after/{n}")) as resp,
        ):
            assert resp.status == 200
            sent = (await resp.json())["headers"]
        assert ["Cookie", f"sessionid=held-{n}"] in sent
    assert (await client.get("/echo/after/alice")).status == 200
    # and new writes land on it: a new session
    made = await store.create(
        server_id=1,
        omero_session_key="00000000-0000-4000-8000-0000000000ff",
        user_id=99,
        user_name="after",
        cookies={"sessionid": "held-after"},
    )
    assert await store.get(made.id) is not None
