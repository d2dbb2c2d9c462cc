"""auth/sso_sessions.py: one OMERO session per (server, SSO user), against the OMERO test
server; the handoff goes to the echo upstream over HTTP (it stands in for OMERO.web)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from pathlib import Path

import aiohttp
import pytest

from auth.omero_backend import OmeroBackend
from auth.omero_errors import AdminRefused, InvalidCredentials
from auth.omero_settings import OmeroSettings
from auth.sso_sessions import SsoSessions
from tests.gateway_fixtures import form_token
from tests.omero_sim.fixture import OmeroSim
from tests.porter_fixtures import PorterFactory, Upstream
from tests.redis_fixture import RedisServer, redis_sessions, stopped
from tests.test_sso import Idp, bearer, sso_sections, sso_sessions_created


@pytest.fixture
async def backend(omero_sim: OmeroSim) -> AsyncIterator[OmeroBackend]:
    entry = omero_sim.server_list_entry()
    settings = OmeroSettings(
        server_list=((entry[0], entry[1], entry[2]),),
        admin_user="root",
        admin_password=omero_sim.users["root"],
    )
    async with OmeroBackend(settings) as made:
        yield made


def handoff_to(upstream: Upstream, path: str = "/webclient/keepalive_ping/"):  # type: ignore[no-untyped-def]
    async def handoff(server_id: int, key: str) -> Mapping[str, str]:
        async with (
            aiohttp.ClientSession() as http,
            http.get(upstream.url + path, params={"bsession": key}) as resp,
        ):
            await resp.read()
            return {name: morsel.value for name, morsel in resp.cookies.items()}

    return handoff


def users(sim: OmeroSim) -> list[str]:
    return [s["user"] for s in sim.sessions()]


async def test_concurrent_first_requests_of_a_user_make_one_session(
    omero_sim: OmeroSim, backend: OmeroBackend, echo_upstream: Upstream
) -> None:
    sessions = SsoSessions(backend, handoff_to(echo_upstream), ttl=600, tti=60)
    before = sso_sessions_created()
    logins = await asyncio.gather(*(sessions.get(1, "bob", None) for _ in range(50)))
    assert {login.session_key for login in logins} == {logins[0].session_key}
    assert users(omero_sim).count("bob") == 1
    assert sso_sessions_created() - before == 1  # made once, not made and closed again
    await sessions.invalidate(logins[0])
    again = await sessions.get(1, "bob", None)
    assert again.session_key != logins[0].session_key
    await sessions.close()
    assert "bob" not in users(omero_sim)  # close ends them on the server


async def test_close_cancels_a_creation_in_flight_and_closes_the_session_it_made(
    omero_sim: OmeroSim, backend: OmeroBackend, echo_upstream: Upstream
) -> None:
    # OMERO.web hangs on the handoff: the OMERO session exists, the creation is in flight
    sessions = SsoSessions(backend, handoff_to(echo_upstream, "/slow/30"), ttl=600, tti=60)
    echo_upstream.state.slow_started.clear()
    waiting = asyncio.create_task(sessions.get(1, "carol", None))
    await asyncio.wait_for(echo_upstream.state.slow_started.wait(), 10)
    assert "carol" in users(omero_sim)
    await asyncio.wait_for(sessions.close(), 10)
    assert "carol" not in users(omero_sim)
    with pytest.raises(asyncio.CancelledError):
        await waiting


async def test_admins_and_unknown_users_get_no_session(
    omero_sim: OmeroSim, backend: OmeroBackend, echo_upstream: Upstream
) -> None:
    sessions = SsoSessions(backend, handoff_to(echo_upstream), ttl=600, tti=60)
    with pytest.raises(AdminRefused):
        await sessions.get(1, "sysop", None)
    with pytest.raises(InvalidCredentials):
        await sessions.get(1, "nobody", None)
    assert "sysop" not in users(omero_sim)
    allowing = SsoSessions(
        backend, handoff_to(echo_upstream), ttl=600, tti=60, allowed_admins=frozenset({"SysOp"})
    )
    assert (await allowing.get(1, "sysop", None)).user_name == "sysop"
    await allowing.close()
    await sessions.close()


async def test_shared_sso_sessions_and_the_throttle_answer_503_while_redis_hangs_then_recover(
    omero_sim: OmeroSim,
    echo_upstream: Upstream,
    porter: PorterFactory,
    redis_server: RedisServer,
    tmp_path: Path,
) -> None:
    """With the Redis store, SSO sessions and failed logins live in Redis: Redis hanging is
    a 503 for what needs it (never a 500), and everything works again without a restart."""
    idp = Idp(tmp_path)
    sections = {**sso_sections(omero_sim, idp), "session": redis_sessions(redis_server)}
    client = await porter(logged_in=False, sections=sections)
    assert (await client.get("/echo/a", headers=bearer(idp.token("bob")))).status == 200
    with stopped(redis_server):
        carol = await client.get("/echo/b", headers=bearer(idp.token("carol")))
        assert carol.status == 503  # her session would be made under a Redis lock
        page = await client.get("/porter/login")
        assert page.status == 200
        form = {
            "csrf_token": form_token(await page.text()),
            "username": "carol",
            "password": "wrong",
        }
        login = await client.post("/porter/login", data=form, allow_redirects=False)
        assert login.status == 503  # the throttle is in Redis too
    assert (await client.get("/echo/c", headers=bearer(idp.token("carol")))).status == 200
    assert [s["user"] for s in omero_sim.sessions()].count("carol") == 1
