"""Sessions through the running gateway: a dead Redis, the keepalive job, clearsessions."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

import run
from auth.omero_backend import OmeroBackend
from auth.omero_settings import OmeroSettings
from auth.session_settings import SessionSettings
from auth.stores import create_store
from tests.gateway_fixtures import GatewayFactory, log_in
from tests.keys import TEST_SEAL, TEST_SECRET_KEY
from tests.omero_sim.fixture import OmeroSim
from tests.porter_fixtures import OPERATOR, OPERATOR_TOKEN, write_config
from tests.redis_fixture import RedisServer, redis_sessions


async def test_redis_down_is_503_never_logged_out_and_recovers(
    redis_server_factory: Callable[[], RedisServer],
    gateway: GatewayFactory,
    omero_sim: OmeroSim,
) -> None:
    redis = redis_server_factory()
    client = await gateway(
        sections={"session": redis_sessions(redis)}, operator_token=OPERATOR_TOKEN
    )
    assert (await log_in(client, "alice", omero_sim.users["alice"])).status == 303
    pid = redis._process.pid  # type: ignore[union-attr]
    os.kill(pid, signal.SIGSTOP)  # Redis stops answering, as a hung or unreachable server
    try:
        resp = await client.get("/webclient/active_group/", allow_redirects=False)
        assert resp.status == 503
        assert "session store" in (await resp.text()).lower()
        ajax = await client.get(
            "/webclient/active_group/", headers={"X-Requested-With": "XMLHttpRequest"}
        )
        assert ajax.status == 503
        assert "Set-Cookie" not in ajax.headers  # the user is not logged out
        ready = await client.get("/porter/readyz", headers=OPERATOR)
        assert ready.status == 503
        assert (await ready.json())["checks"]["session_store"]["ok"] is False
    finally:
        os.kill(pid, signal.SIGCONT)
    resp = await client.get("/webclient/active_group/", allow_redirects=False)
    assert resp.status == 302
    assert resp.headers["Location"] == "/webclient/"  # logged in, as before


async def test_keepalive_job_pings_omero_for_sessions_in_use(
    gateway: GatewayFactory, omero_sim: OmeroSim
) -> None:
    client = await gateway(sections={"session": SessionSettings(ping_interval=1000)})
    await log_in(client, "alice", omero_sim.users["alice"])
    before = omero_sim.stats()["keepalives"]
    await client.get("/webclient/active_group/", allow_redirects=False)
    for _ in range(100):  # the job runs every second; wait for a round, bounded
        if omero_sim.stats()["keepalives"] > before:
            break
        await asyncio.sleep(0.1)
    assert omero_sim.stats()["keepalives"] > before


async def test_clearsessions_purges_expired_sessions_and_closes_them_on_omero(
    redis_server: RedisServer, omero_sim: OmeroSim, tmp_path: Path
) -> None:
    entry = omero_sim.server_list_entry()
    omero = OmeroSettings(server_list=((entry[0], entry[1], entry[2]),))
    sessions = redis_sessions(redis_server)
    async with OmeroBackend(omero) as backend:
        login = await backend.login(1, "alice", omero_sim.users["alice"])
    long_ago = time.time() - 10 * sessions.session_cookie_age
    store = create_store(
        sessions, on_evict=lambda s, k: None, clock=lambda: long_ago, seal=TEST_SEAL
    )
    await store.create(
        server_id=1,
        omero_session_key=login.session_key,
        user_id=login.user_id,
        user_name="alice",
    )
    await store.close()
    assert omero_sim.session(login.session_key) is not None
    config = write_config(
        tmp_path / "porter.toml",
        {
            "proxy": {"secret_key": TEST_SECRET_KEY},
            "omero": {"server_list": [list(entry)]},
            "session": {
                "store": "redis",
                "redis_url": redis_server.url,
                "redis_password": redis_server.password,
                "redis_key_prefix": sessions.redis_key_prefix,
            },
        },
    )
    code = await asyncio.to_thread(run.main, ["clearsessions", "--config", str(config)])
    assert code == 0
    assert omero_sim.session(login.session_key) is None
