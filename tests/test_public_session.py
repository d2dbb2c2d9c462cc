"""The shared public session against the OMERO test server, real OMERO.web and real Redis.

Where a test is about single-flight or sharing rather than OMERO.web, the handoff is a
recording stand-in (`RecordingHandoff`): it returns a made-up cookie and counts its calls.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Iterator, Mapping
from typing import Any

import aiohttp
import pytest
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from auth.omero_backend import OmeroBackend
from auth.omero_errors import HandoffFailed, InvalidCredentials, ServerUnavailable
from auth.omero_settings import OmeroSettings
from auth.public_session import PublicLogin, PublicSession, SharedPublicEntries
from auth.public_settings import PublicSessionSettings
from auth.shared_slots import Handoff
from tests.keys import TEST_SEAL
from tests.omero_sim.fixture import OmeroSim, start_sim, stop_sim
from tests.redis_fixture import RedisServer
from tests.web_fixture import OmeroWeb

PING = "/webclient/keepalive_ping/"
_prefixes = itertools.count()


class RecordingHandoff:
    """Stands in for OMERO.web where the test is about porter's side only."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, str]] = []

    async def __call__(self, server_id: int, key: str) -> Mapping[str, str]:
        self.calls.append((server_id, key))
        await asyncio.sleep(0)  # a real handoff yields to the loop
        return {"sessionid": f"web-{len(self.calls)}"}


class FakeClock:
    """Back-off tests step time instead of sleeping."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def omero_web_handoff(web: OmeroWeb) -> Handoff:
    """The real handoff: OMERO.web joins the key and answers with its own cookies."""

    async def handoff(server_id: int, key: str) -> Mapping[str, str]:
        async with (
            aiohttp.ClientSession() as http,
            http.get(web.url(PING), params={"server": str(server_id), "bsession": key}) as response,
        ):
            assert await response.text() == "OK"
            return {name: morsel.value for name, morsel in response.cookies.items()}

    return handoff


async def shared_key(redis: Redis, slot: str) -> str | None:
    """The OMERO session key in the shared slot, as porter opens it (sealed in Redis)."""
    sealed = await redis.hget(slot, "key")
    if isinstance(sealed, bytes):
        sealed = sealed.decode()
    return None if sealed is None else TEST_SEAL.open(sealed, slot, "key")


async def ping_with_cookies(web: OmeroWeb, cookies: Mapping[str, str]) -> str:
    """keepalive_ping as a browser holding only these cookies: "OK" when logged in."""
    async with (
        aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http,
        http.get(web.url(PING), cookies=dict(cookies)) as response,
    ):
        return await response.text()


def public_settings(sim: OmeroSim, **overrides: Any) -> PublicSessionSettings:
    values: dict[str, Any] = {"enabled": True, "user": "public", "password": sim.users["public"]}
    values.update(overrides)
    return PublicSessionSettings(**values)


def omero_settings(sim: OmeroSim) -> OmeroSettings:
    return OmeroSettings(
        server_list=((sim.host, sim.ssl_port, "sim"),), pool_size=4, call_timeout=5.0
    )


@pytest.fixture
async def backend(omero_sim: OmeroSim) -> AsyncIterator[OmeroBackend]:
    async with OmeroBackend(omero_settings(omero_sim)) as b:
        yield b


@pytest.fixture(scope="module")
def faulty_server() -> Iterator[OmeroSim]:
    """A private test server to take down without touching the one OMERO.web uses."""
    sim = start_sim()
    yield sim
    stop_sim(sim)


@pytest.fixture
def faulty_sim(faulty_server: OmeroSim) -> OmeroSim:
    faulty_server.reset()
    return faulty_server


@pytest.fixture
async def redis_client(redis_server: RedisServer) -> AsyncIterator[Redis]:
    client = Redis(
        host="127.0.0.1",
        port=redis_server.port,
        password=redis_server.password,
        decode_responses=True,
    )
    yield client
    await client.aclose()


@pytest.fixture
def key_prefix() -> str:
    return f"test-public-{next(_prefixes)}:"


async def gather_gets(public: PublicSession, n: int) -> list[PublicLogin]:
    return await asyncio.gather(*(public.get(1) for _ in range(n)))


# ~ single-flight, handoff


async def test_1000_concurrent_first_gets_make_one_login_and_one_handoff_omero_web_accepts(
    omero_web: OmeroWeb, omero_sim: OmeroSim, backend: OmeroBackend
) -> None:
    before = omero_sim.stats()
    public = PublicSession(backend, public_settings(omero_sim), omero_web_handoff(omero_web))
    logins = await gather_gets(public, 1000)

    after = omero_sim.stats()
    assert after["logins"] - before["logins"] == 1
    assert after["sessions_created"] - before["sessions_created"] == 1
    assert {login.session_key for login in logins} == {logins[0].session_key}
    assert "sessionid" in logins[0].cookies
    session = omero_sim.session(logins[0].session_key)
    assert session is not None
    assert session["user"] == "public"
    # the held cookie alone is the public user on OMERO.web
    assert await ping_with_cookies(omero_web, logins[0].cookies) == "OK"
    await public.close()


async def test_a_held_session_is_reused_without_another_login(
    omero_sim: OmeroSim, backend: OmeroBackend
) -> None:
    handoff = RecordingHandoff()
    public = PublicSession(backend, public_settings(omero_sim), handoff)
    first = await public.get()
    again = await public.get("1")
    assert again == first
    assert omero_sim.stats()["logins"] == 1
    assert len(handoff.calls) == 1
    await public.close()


async def test_repr_shows_neither_the_key_nor_the_cookies(
    omero_sim: OmeroSim, backend: OmeroBackend
) -> None:
    public = PublicSession(backend, public_settings(omero_sim), RecordingHandoff())
    login = await public.get()
    assert login.session_key not in repr(login)
    assert "web-1" not in repr(login)
    await public.close()


async def test_a_cancelled_caller_does_not_cancel_the_creation_for_the_others(
    omero_sim: OmeroSim, backend: OmeroBackend
) -> None:
    public = PublicSession(backend, public_settings(omero_sim), RecordingHandoff())
    impatient = asyncio.create_task(public.get())
    patient = asyncio.create_task(public.get())
    await asyncio.sleep(0)
    impatient.cancel()
    login = await patient
    assert impatient.cancelled()
    assert omero_sim.session(login.session_key) is not None
    assert omero_sim.stats()["logins"] == 1
    await public.close()


# ~ re-creation


async def test_session_killed_on_the_server_is_dropped_by_keep_alive_and_recreated_once(
    omero_web: OmeroWeb, omero_sim: OmeroSim, backend: OmeroBackend
) -> None:
    public = PublicSession(backend, public_settings(omero_sim), omero_web_handoff(omero_web))
    old = await public.get()
    await public.keep_alive()  # alive: kept
    assert (await public.get()).session_key == old.session_key

    assert omero_sim.kill_session(old.session_key)
    await public.keep_alive()
    logins_before = omero_sim.stats()["logins"]
    new = await gather_gets(public, 200)

    assert omero_sim.stats()["logins"] - logins_before == 1
    assert {login.session_key for login in new} == {new[0].session_key}
    assert new[0].session_key != old.session_key
    assert await ping_with_cookies(omero_web, new[0].cookies) == "OK"
    await public.close()


async def test_keep_alive_drops_a_held_session_that_is_not_the_public_users(
    omero_sim: OmeroSim, backend: OmeroBackend, caplog: pytest.LogCaptureFixture
) -> None:
    """Defence in depth: nothing in porter can make the held session another user's (the
    query credentials that could are refused), so the test plants alice's key in its place."""
    public = PublicSession(backend, public_settings(omero_sim), RecordingHandoff())
    await public.get()
    alice = await backend.login(1, "alice", omero_sim.users["alice"])
    held = public._held[1]
    held.login = PublicLogin(1, alice.session_key, held.login.cookies)
    await public.keep_alive()
    assert "belongs to alice, not the public user public" in caplog.text
    assert omero_sim.session(alice.session_key) is None  # closed on the server
    again = await public.get()
    assert again.session_key != alice.session_key
    assert omero_sim.session(again.session_key)["user"] == "public"  # type: ignore[index]
    await public.keep_alive()  # the new one is the public user's: kept
    assert (await public.get()).session_key == again.session_key
    await public.close()


async def test_invalidate_recreates_once_and_ends_the_old_session_on_the_server(
    omero_sim: OmeroSim, backend: OmeroBackend
) -> None:
    handoff = RecordingHandoff()
    public = PublicSession(backend, public_settings(omero_sim), handoff)
    old = await public.get()
    await public.invalidate(1, old.session_key)
    new = await gather_gets(public, 200)

    assert omero_sim.stats()["logins"] == 2
    assert len(handoff.calls) == 2
    assert {login.session_key for login in new} == {new[0].session_key} != {old.session_key}
    assert new[0].cookies["sessionid"] == "web-2"
    await public.close()  # also awaits the close of the invalidated session
    assert omero_sim.session(old.session_key) is None
    assert omero_sim.session(new[0].session_key) is None


async def test_stale_invalidation_for_an_older_key_keeps_the_newer_session(
    omero_sim: OmeroSim, backend: OmeroBackend
) -> None:
    public = PublicSession(backend, public_settings(omero_sim), RecordingHandoff())
    old = await public.get()
    await public.invalidate(1, old.session_key)
    new = await public.get()
    await public.invalidate(1, old.session_key)  # a late report about the old one

    assert (await public.get()).session_key == new.session_key
    assert omero_sim.stats()["logins"] == 2
    assert omero_sim.session(new.session_key) is not None
    await public.close()


# ~ close


async def test_close_ends_the_held_sessions_on_the_server(
    omero_sim: OmeroSim, backend: OmeroBackend
) -> None:
    public = PublicSession(backend, public_settings(omero_sim), RecordingHandoff())
    login = await public.get()
    await public.close()
    assert omero_sim.session(login.session_key) is None
    assert omero_sim.stats()["sessions_closed"] == 1
    with pytest.raises(RuntimeError):
        await public.get()


async def test_keep_alive_keeps_the_session_while_the_server_cannot_answer(
    faulty_sim: OmeroSim,
) -> None:
    async with OmeroBackend(omero_settings(faulty_sim)) as backend:
        public = PublicSession(backend, public_settings(faulty_sim), RecordingHandoff())
        login = await public.get()
        faulty_sim.down()
        await public.keep_alive()
        faulty_sim.up()
        assert (await public.get()).session_key == login.session_key
        assert faulty_sim.stats()["logins"] == 1
        await public.close()


# ~ failures and back-off


async def test_down_server_fails_every_waiter_then_backs_off_then_recovers(
    faulty_sim: OmeroSim,
) -> None:
    clock = FakeClock()
    handoff = RecordingHandoff()
    async with OmeroBackend(omero_settings(faulty_sim)) as backend:
        public = PublicSession(
            backend, public_settings(faulty_sim, failure_backoff=2.0), handoff, clock=clock
        )
        faulty_sim.down()
        results = await asyncio.gather(*(public.get() for _ in range(100)), return_exceptions=True)
        assert all(isinstance(r, ServerUnavailable) for r in results)
        assert len({id(r) for r in results}) == 100  # each caller its own copy

        faulty_sim.up()
        clock.now += 1.0  # within the back-off: the same error, the server not asked
        with pytest.raises(ServerUnavailable):
            await public.get()
        assert faulty_sim.stats()["logins"] == 0

        clock.now += 1.5
        login = await public.get()
        assert faulty_sim.stats()["logins"] == 1
        assert faulty_sim.session(login.session_key) is not None
        assert len(handoff.calls) == 1
        await public.close()


async def test_wrong_public_password_is_one_failed_login_for_all_waiters_and_backed_off(
    omero_sim: OmeroSim, backend: OmeroBackend
) -> None:
    clock = FakeClock()
    public = PublicSession(
        backend,
        public_settings(omero_sim, password="wrong-pass"),
        RecordingHandoff(),
        clock=clock,
    )
    results = await asyncio.gather(*(public.get() for _ in range(100)), return_exceptions=True)
    assert all(isinstance(r, InvalidCredentials) for r in results)
    assert all("wrong-pass" not in str(r) for r in results)
    with pytest.raises(InvalidCredentials):
        await public.get()
    assert omero_sim.stats()["login_failures"] == 1

    clock.now += 2.5  # back-off over: one more attempt
    with pytest.raises(InvalidCredentials):
        await public.get()
    assert omero_sim.stats()["login_failures"] == 2
    await public.close()


async def test_zero_failure_backoff_retries_on_the_next_get(
    omero_sim: OmeroSim, backend: OmeroBackend
) -> None:
    public = PublicSession(
        backend,
        public_settings(omero_sim, password="wrong-pass", failure_backoff=0.0),
        RecordingHandoff(),
    )
    for _ in range(2):
        with pytest.raises(InvalidCredentials):
            await public.get()
    assert omero_sim.stats()["login_failures"] == 2
    await public.close()


async def test_failed_handoff_closes_the_new_session_and_never_shows_the_key(
    omero_sim: OmeroSim, backend: OmeroBackend
) -> None:
    seen: list[str] = []

    async def broken_handoff(server_id: int, key: str) -> Mapping[str, str]:
        seen.append(key)
        raise aiohttp.ClientError(f"GET /x?bsession={key} failed")

    public = PublicSession(backend, public_settings(omero_sim), broken_handoff)
    with pytest.raises(HandoffFailed) as caught:
        await public.get()
    assert seen[0] not in str(caught.value)
    assert omero_sim.session(seen[0]) is None
    assert omero_sim.stats()["sessions_active"] == 0
    await public.close()


async def test_handoff_without_cookies_is_a_failure(
    omero_sim: OmeroSim, backend: OmeroBackend
) -> None:
    async def empty_handoff(server_id: int, key: str) -> Mapping[str, str]:
        return {}

    public = PublicSession(backend, public_settings(omero_sim), empty_handoff)
    with pytest.raises(HandoffFailed):
        await public.get()
    assert omero_sim.stats()["sessions_active"] == 0
    await public.close()


# ~ shared through Redis (two instances stand for two porter processes)


async def test_two_processes_sharing_redis_make_one_login_in_total(
    omero_web: OmeroWeb, omero_sim: OmeroSim, redis_client: Redis, key_prefix: str
) -> None:
    settings = public_settings(omero_sim)
    handoff = omero_web_handoff(omero_web)
    async with (
        OmeroBackend(omero_settings(omero_sim)) as b1,
        OmeroBackend(omero_settings(omero_sim)) as b2,
    ):
        p1 = PublicSession(
            b1, settings, handoff, shared=SharedPublicEntries(redis_client, key_prefix, TEST_SEAL)
        )
        p2 = PublicSession(
            b2, settings, handoff, shared=SharedPublicEntries(redis_client, key_prefix, TEST_SEAL)
        )
        first, second = await asyncio.gather(gather_gets(p1, 300), gather_gets(p2, 300))

        assert omero_sim.stats()["logins"] == 1
        keys = {login.session_key for login in first + second}
        assert len(keys) == 1
        assert first[0].cookies == second[0].cookies
        assert await ping_with_cookies(omero_web, second[0].cookies) == "OK"
        assert await shared_key(redis_client, f"{key_prefix}public:1") == first[0].session_key

        await p1.close()  # p2 still uses it: stays open
        assert omero_sim.session(first[0].session_key) is not None
        await p2.close()  # the last one out closes it
        assert omero_sim.session(first[0].session_key) is None
        assert await redis_client.exists(f"{key_prefix}public:1") == 0


async def test_shared_session_invalidated_by_one_process_is_recreated_once_for_both(
    omero_sim: OmeroSim, redis_client: Redis, key_prefix: str
) -> None:
    settings = public_settings(omero_sim)
    handoff = RecordingHandoff()
    async with (
        OmeroBackend(omero_settings(omero_sim)) as b1,
        OmeroBackend(omero_settings(omero_sim)) as b2,
    ):
        p1 = PublicSession(
            b1, settings, handoff, shared=SharedPublicEntries(redis_client, key_prefix, TEST_SEAL)
        )
        p2 = PublicSession(
            b2, settings, handoff, shared=SharedPublicEntries(redis_client, key_prefix, TEST_SEAL)
        )
        old = await p1.get()
        assert (await p2.get()).session_key == old.session_key

        await p1.invalidate(1, old.session_key)
        new1 = await gather_gets(p1, 100)
        # p2 learns from its own failed request and reports the old key: a stale report
        await p2.invalidate(1, old.session_key)
        new2 = await gather_gets(p2, 100)

        assert omero_sim.stats()["logins"] == 2
        assert len(handoff.calls) == 2
        keys = {login.session_key for login in new1 + new2}
        assert keys == {new1[0].session_key}
        assert old.session_key not in keys
        assert await shared_key(redis_client, f"{key_prefix}public:1") == new1[0].session_key
        await p1.close()
        await p2.close()


async def test_shared_session_killed_on_the_server_is_recreated_once_across_processes(
    omero_sim: OmeroSim, redis_client: Redis, key_prefix: str
) -> None:
    settings = public_settings(omero_sim)
    async with (
        OmeroBackend(omero_settings(omero_sim)) as b1,
        OmeroBackend(omero_settings(omero_sim)) as b2,
    ):
        p1 = PublicSession(
            b1,
            settings,
            RecordingHandoff(),
            shared=SharedPublicEntries(redis_client, key_prefix, TEST_SEAL),
        )
        p2 = PublicSession(
            b2,
            settings,
            RecordingHandoff(),
            shared=SharedPublicEntries(redis_client, key_prefix, TEST_SEAL),
        )
        old = await p1.get()
        await p2.get()
        omero_sim.kill_session(old.session_key)
        await asyncio.gather(p1.keep_alive(), p2.keep_alive())
        first, second = await asyncio.gather(gather_gets(p1, 100), gather_gets(p2, 100))

        assert omero_sim.stats()["logins"] == 2
        assert len({login.session_key for login in first + second}) == 1
        assert first[0].session_key != old.session_key
        await p1.close()
        await p2.close()


async def test_process_waiting_for_a_failed_creator_gets_the_error(
    faulty_sim: OmeroSim, redis_client: Redis, key_prefix: str
) -> None:
    settings = public_settings(faulty_sim)
    async with (
        OmeroBackend(omero_settings(faulty_sim)) as b1,
        OmeroBackend(omero_settings(faulty_sim)) as b2,
    ):
        p1 = PublicSession(
            b1,
            settings,
            RecordingHandoff(),
            shared=SharedPublicEntries(redis_client, key_prefix, TEST_SEAL),
        )
        p2 = PublicSession(
            b2,
            settings,
            RecordingHandoff(),
            shared=SharedPublicEntries(redis_client, key_prefix, TEST_SEAL),
        )
        faulty_sim.down()
        results = await asyncio.gather(
            gather_gets(p1, 50), gather_gets(p2, 50), return_exceptions=True
        )
        assert all(isinstance(r, ServerUnavailable) for r in results)
        assert await redis_client.exists(f"{key_prefix}public:1:lock") == 0
        faulty_sim.up()
        await p1.close()
        await p2.close()


async def test_a_process_rereads_the_shared_session_after_recheck_interval(
    omero_sim: OmeroSim, redis_client: Redis, key_prefix: str
) -> None:
    clock = FakeClock()
    settings = public_settings(omero_sim, recheck_interval=5.0)
    async with (
        OmeroBackend(omero_settings(omero_sim)) as b1,
        OmeroBackend(omero_settings(omero_sim)) as b2,
    ):
        p1 = PublicSession(
            b1,
            settings,
            RecordingHandoff(),
            shared=SharedPublicEntries(redis_client, key_prefix, TEST_SEAL),
        )
        p2 = PublicSession(
            b2,
            settings,
            RecordingHandoff(),
            shared=SharedPublicEntries(redis_client, key_prefix, TEST_SEAL),
            clock=clock,
        )
        old = await p2.get()
        await p1.get()
        await p1.invalidate(1, old.session_key)
        new = await p1.get()
        assert (await p2.get()).session_key == old.session_key  # its copy, not re-read yet
        clock.now += 6
        assert (await p2.get()).session_key == new.session_key
        assert omero_sim.stats()["logins"] == 2
        await p1.close()
        await p2.close()


async def test_held_shared_session_survives_a_redis_outage(
    omero_sim: OmeroSim, redis_server_factory: Any, key_prefix: str
) -> None:
    server: RedisServer = redis_server_factory()
    client = Redis(
        host="127.0.0.1",
        port=server.port,
        password=server.password,
        retry=Retry(NoBackoff(), 0),  # fail at once, as porter's configured client does
        socket_connect_timeout=1.0,
    )
    clock = FakeClock()
    async with OmeroBackend(omero_settings(omero_sim)) as backend:
        public = PublicSession(
            backend,
            public_settings(omero_sim),
            RecordingHandoff(),
            shared=SharedPublicEntries(client, key_prefix, TEST_SEAL),
            clock=clock,
        )
        login = await public.get()
        server.stop()
        clock.now += 60  # past recheck_interval: Redis is asked, cannot answer
        assert (await public.get()).session_key == login.session_key
        assert omero_sim.stats()["logins"] == 1
        await public.close()  # cannot tell whether others hold it: leaves it to OMERO
    await client.aclose()


# ~ settings


def test_enabled_without_user_or_password_names_both_keys() -> None:
    problems = PublicSessionSettings(enabled=True).problems()
    assert [key for key, _ in problems] == ["user", "password"]


def test_disabled_public_access_needs_no_account() -> None:
    assert PublicSessionSettings().problems() == []
    assert PublicSessionSettings(enabled=True, user="public", password="x").problems() == []


def private_redis(server: RedisServer) -> Redis:
    # bounded timeouts and no retries, as RedisSessionStore.from_settings builds its client
    return Redis(
        host="127.0.0.1",
        port=server.port,
        password=server.password,
        decode_responses=True,
        socket_timeout=0.5,
        socket_connect_timeout=0.5,
        retry=Retry(NoBackoff(), 0),
    )


async def test_a_redis_restart_that_loses_data_writes_the_held_session_back(
    omero_sim: OmeroSim, backend: OmeroBackend, redis_server_factory: Any
) -> None:
    server = redis_server_factory()
    redis = private_redis(server)
    settings = public_settings(omero_sim, recheck_interval=0.0)
    public = PublicSession(
        backend, settings, RecordingHandoff(), shared=SharedPublicEntries(redis, "p:", TEST_SEAL)
    )
    held = await public.get()
    server.stop()
    server.start()  # empty: no persistence
    await public.get()  # may meet the old, dead connection: the held session is kept
    again = await public.get()
    assert again.session_key == held.session_key  # the same one, written back
    assert await shared_key(redis, "p:public:1") == held.session_key
    assert omero_sim.stats()["logins"] == 1  # no second public session: nothing leaked
    await public.close()
    await redis.aclose()


async def test_a_held_session_that_died_meanwhile_is_closed_not_written_back(
    omero_sim: OmeroSim, backend: OmeroBackend, redis_server_factory: Any
) -> None:
    server = redis_server_factory()
    redis = private_redis(server)
    settings = public_settings(omero_sim, recheck_interval=0.0)
    public = PublicSession(
        backend, settings, RecordingHandoff(), shared=SharedPublicEntries(redis, "p:", TEST_SEAL)
    )
    held = await public.get()
    server.stop()
    omero_sim.kill_session(held.session_key)
    server.start()
    await public.get()  # may meet the old, dead connection
    new = await public.get()
    assert new.session_key != held.session_key
    assert omero_sim.session(held.session_key) is None
    assert [s["user"] for s in omero_sim.sessions()].count("public") == 1
    await public.close()
    await redis.aclose()


async def test_a_key_dropped_while_redis_was_stopped_is_not_adopted_again(
    omero_sim: OmeroSim, backend: OmeroBackend, redis_server_factory: Any
) -> None:
    from tests.redis_fixture import stopped

    server = redis_server_factory()
    redis = private_redis(server)
    settings = public_settings(omero_sim, recheck_interval=0.0)
    public = PublicSession(
        backend, settings, RecordingHandoff(), shared=SharedPublicEntries(redis, "p:", TEST_SEAL)
    )
    old = await public.get()
    with stopped(server):
        await public.invalidate(1, old.session_key)  # Redis cannot be told
    assert await shared_key(redis, "p:public:1") == old.session_key  # still there...
    new = await public.get()
    assert new.session_key != old.session_key  # ...but not adopted
    assert await shared_key(redis, "p:public:1") == new.session_key
    await public.close()
    await redis.aclose()
