"""Porter leaves no OMERO.web session behind: whenever it ends a session (logout, purge,
eviction) it ends OMERO.web's Django session too, through OMERO.web's own logout. Real
OMERO.web with its default file session engine (one file per Django session), the OMERO
test server behind it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

import run
from auth.lifecycle import purge_expired
from auth.omero_backend import OmeroBackend
from auth.session_settings import SessionSettings
from auth.stores import create_store
from proxy.forwarding.handoff import handoff, web_logout
from proxy.keys import CLIENT_SESSION, SETTINGS
from tests.gateway_fixtures import Gateway, GatewayFactory, form_token, log_in
from tests.keys import TEST_SEAL, TEST_SECRET_KEY
from tests.omero_sim.fixture import OmeroSim
from tests.porter_fixtures import write_config
from tests.redis_fixture import RedisServer, redis_sessions
from tests.session_fixtures import omero
from tests.web_fixture import OmeroWeb


def django_sessions(web: OmeroWeb) -> int:
    return sum(1 for p in web.session_dir.rglob("*") if p.is_file() and "sessionid" in p.name)


class Clock:
    def __init__(self) -> None:
        import time

        self.now = time.time()

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def backend(omero_sim: OmeroSim) -> AsyncIterator[OmeroBackend]:
    async with OmeroBackend(omero(omero_sim)) as made:
        yield made


async def test_login_logout_churn_leaves_omero_webs_session_count_flat(
    gateway: GatewayFactory, omero_sim: OmeroSim, omero_web: OmeroWeb
) -> None:
    client = await gateway()
    baseline = django_sessions(omero_web)
    for _ in range(10):
        assert (await log_in(client, "alice", omero_sim.users["alice"])).status == 303
        assert (await client.get("/webclient/keepalive_ping/")).status == 200
        assert django_sessions(omero_web) == baseline + 1
        page = await (await client.get("/porter/logout")).text()
        resp = await client.post(
            "/porter/logout", data={"csrf_token": form_token(page)}, allow_redirects=False
        )
        assert resp.status == 303
    assert django_sessions(omero_web) == baseline
    assert "alice" not in [s["user"] for s in omero_sim.sessions()]


async def _session_with_omero_web(
    client: Gateway, backend: OmeroBackend, sim: OmeroSim
) -> tuple[str, dict[str, str]]:
    login = await backend.login(1, "alice", sim.users["alice"])
    return login.session_key, await handoff(client.app, 1, login.session_key)


async def test_purged_sessions_end_their_omero_web_session_too(
    gateway: GatewayFactory, omero_sim: OmeroSim, omero_web: OmeroWeb, backend: OmeroBackend
) -> None:
    client = await gateway()
    clock = Clock()
    store = create_store(SessionSettings(), on_evict=backend.close, clock=clock, seal=TEST_SEAL)
    baseline = django_sessions(omero_web)
    keys = []
    for _ in range(3):
        key, cookies = await _session_with_omero_web(client, backend, omero_sim)
        await store.create(
            server_id=1, omero_session_key=key, user_id=2, user_name="alice", cookies=cookies
        )
        keys.append(key)
    assert django_sessions(omero_web) == baseline + 3
    clock.now += 3600 + 1

    async def end_web(record: object) -> bool:
        return await web_logout(client.app[CLIENT_SESSION], client.app[SETTINGS], record.cookies)  # type: ignore[attr-defined]

    result = await purge_expired(store, backend.close, end_web=end_web)
    assert result.removed == result.closed == 3
    assert django_sessions(omero_web) == baseline
    assert all(omero_sim.session(key) is None for key in keys)
    await store.close()


async def test_an_evicted_session_ends_its_omero_web_session_too(
    gateway: GatewayFactory, omero_sim: OmeroSim, omero_web: OmeroWeb, backend: OmeroBackend
) -> None:
    client = await gateway()

    async def end_web(record: object) -> bool:
        return await web_logout(client.app[CLIENT_SESSION], client.app[SETTINGS], record.cookies)  # type: ignore[attr-defined]

    store = create_store(
        SessionSettings(max_sessions=1), on_evict=backend.close, end_web=end_web, seal=TEST_SEAL
    )
    baseline = django_sessions(omero_web)
    first_key, first = await _session_with_omero_web(client, backend, omero_sim)
    await store.create(
        server_id=1, omero_session_key=first_key, user_id=2, user_name="alice", cookies=first
    )
    second_key, second = await _session_with_omero_web(client, backend, omero_sim)
    await store.create(
        server_id=1, omero_session_key=second_key, user_id=2, user_name="alice", cookies=second
    )
    await store.close()  # waits for the eviction's closes
    assert django_sessions(omero_web) == baseline + 1  # only the second one's
    assert omero_sim.session(first_key) is None
    assert omero_sim.session(second_key) is not None


async def test_omero_webs_logout_unreachable_is_no_failure(
    gateway: GatewayFactory, omero_sim: OmeroSim
) -> None:
    client = await gateway()
    http, settings = client.app[CLIENT_SESSION], client.app[SETTINGS]
    assert await web_logout(http, settings, {"sessionid": "not-a-session-of-omero-web"}) is False
    assert await web_logout(http, settings, {}) is False


async def test_clearsessions_ends_omero_web_sessions_too(
    gateway: GatewayFactory,
    omero_sim: OmeroSim,
    omero_web: OmeroWeb,
    backend: OmeroBackend,
    redis_server: RedisServer,
    tmp_path: Path,
) -> None:
    client = await gateway()
    key, cookies = await _session_with_omero_web(client, backend, omero_sim)
    sessions = redis_sessions(redis_server)
    long_ago = time.time() - 10 * sessions.session_cookie_age
    store = create_store(
        sessions, on_evict=lambda s, k: None, clock=lambda: long_ago, seal=TEST_SEAL
    )
    await store.create(
        server_id=1, omero_session_key=key, user_id=2, user_name="alice", cookies=cookies
    )
    await store.close()
    before = django_sessions(omero_web)
    config = write_config(
        tmp_path / "porter.toml",
        {
            "proxy": {"upstream": omero_web.base_url, "secret_key": TEST_SECRET_KEY},
            "omero": {"server_list": [omero_sim.server_list_entry()]},
            "session": {
                "store": "redis",
                "redis_url": redis_server.url,
                "redis_password": redis_server.password,
                "redis_key_prefix": sessions.redis_key_prefix,
            },
        },
    )
    assert await asyncio.to_thread(run.main, ["clearsessions", "--config", str(config)]) == 0
    assert django_sessions(omero_web) == before - 1
    assert omero_sim.session(key) is None
