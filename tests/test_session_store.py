"""The session store contract, run against both stores (memory, and a real redis-server).

Logical time comes from a fake clock the tests move; Redis's own TTLs run on real time, so
the Redis tests also read the real key TTL.
"""

from __future__ import annotations

import ast
import asyncio
import dataclasses
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis

from auth.lifecycle import keepalive, purge_expired
from auth.logout_index import LogoutIndex
from auth.session_settings import SessionSettings
from auth.session_store import SessionStore, SessionStoreUnavailable
from auth.sessions import SessionRecord, is_session_id, new_session_id
from auth.store_memory import MemorySessionStore
from auth.store_redis import RedisSessionStore
from auth.store_seal import StoreSeal
from auth.stores import Stores, create_store, create_stores
from tests.keys import TEST_SEAL
from tests.redis_fixture import RedisServer

IDLE = 600
ABSOLUTE = 3600
TOUCH = 30.0  # min(60, IDLE / 20)
OMERO_KEY = "omero-key-0f9e8d7c-secret"


class FakeClock:
    """Epoch seconds that move only when a test says so."""

    def __init__(self, start: float) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class Kit:
    """A store under test, its clock, and what it evicted."""

    kind: str
    settings: SessionSettings
    clock: FakeClock
    evicted: list[tuple[int, str]] = field(default_factory=list)
    handles: list[Stores] = field(default_factory=list)

    async def on_evict(self, server_id: int, omero_session_key: str) -> None:
        self.evicted.append((server_id, omero_session_key))

    def open(self) -> SessionStore:
        """Another porter process's session store (Redis); the one shared store (memory)."""
        return self.open_all().sessions

    def open_all(self) -> Stores:
        """Another porter process's stores (Redis); the one set of stores (memory)."""
        if self.kind == "memory" and self.handles:
            return self.handles[0]
        stores = create_stores(
            self.settings, on_evict=self.on_evict, clock=self.clock, seal=TEST_SEAL
        )
        self.handles.append(stores)
        return stores


@pytest.fixture(params=["memory", "redis"])
async def kit(request: pytest.FixtureRequest) -> AsyncIterator[Kit]:
    settings = SessionSettings(session_idle_timeout=IDLE, session_cookie_age=ABSOLUTE)
    if request.param == "redis":
        settings = redis_settings(request.getfixturevalue("redis_server"))
    # Start at real time so Redis TTLs derived from it are sane.
    kit = Kit(request.param, settings, FakeClock(asyncio.get_running_loop().time() + 1.7e9))
    yield kit
    for stores in kit.handles:
        await stores.sessions.close()


async def login(store: SessionStore, n: int = 1, **extra: object) -> SessionRecord:
    fields: dict[object, object] = {
        "server_id": 1,
        "omero_session_key": f"{OMERO_KEY}-{n}",
        "user_id": 100 + n,
        "user_name": f"user{n}",
    }
    fields.update(extra)
    return await store.create(**fields)  # type: ignore[arg-type]


class Closer:
    """The injected close/ping callables: they record what porter asked OMERO to do."""

    def __init__(self, gone: set[str] | None = None) -> None:
        self.closed: list[str] = []
        self.pinged: list[str] = []
        self.gone = gone or set()

    async def close(self, server_id: int, omero_session_key: str) -> None:
        await asyncio.sleep(0)
        self.closed.append(omero_session_key)

    async def ping(self, server_id: int, omero_session_key: str) -> bool:
        await asyncio.sleep(0)
        self.pinged.append(omero_session_key)
        return omero_session_key not in self.gone


# --- the contract, both stores -------------------------------------------------------------


async def test_created_session_is_found_by_its_id(kit: Kit) -> None:
    store = kit.open()
    record = await login(store, kind="sso", cookies={"sessionid": "upstream-cookie"})
    assert is_session_id(record.id)
    assert len(record.id) >= 22  # >= 128 bits of base64url
    found = await store.get(record.id)
    assert found == record
    assert found is not None
    assert found.omero_session_key == f"{OMERO_KEY}-1"
    assert found.kind == "sso"
    assert dict(found.cookies) == {"sessionid": "upstream-cookie"}


async def test_unknown_and_malformed_ids_find_no_session(kit: Kit) -> None:
    store = kit.open()
    await login(store)
    for session_id in (new_session_id(), "", "x" * 5000, "../../etc", "a b", "é" * 43):
        assert await store.get(session_id) is None
        assert await store.delete(session_id) is None
        assert await store.update_cookies(session_id, {"a": "b"}) is None


async def test_delete_returns_the_record_exactly_once(kit: Kit) -> None:
    store, other = kit.open(), kit.open()
    record = await login(store)
    results = await asyncio.gather(store.delete(record.id), other.delete(record.id))
    assert [r for r in results if r is not None] == [record]
    assert await store.get(record.id) is None
    assert await store.count() == 0


async def test_idle_session_expires(kit: Kit) -> None:
    store = kit.open()
    record = await login(store)
    kit.clock.advance(IDLE - 1)
    assert await store.get(record.id) is not None
    kit.clock.advance(IDLE)
    assert await store.get(record.id) is None


async def test_use_extends_the_idle_deadline(kit: Kit) -> None:
    store = kit.open()
    record = await login(store)
    kit.clock.advance(IDLE - 10)
    assert await store.get(record.id) is not None
    kit.clock.advance(20)  # past created + IDLE, within last use + IDLE
    assert await kit.open().get(record.id) is not None


async def test_absolute_lifetime_ends_a_busy_session(kit: Kit) -> None:
    store = kit.open()
    record = await login(store)
    for _ in range(ABSOLUTE // (IDLE // 2)):
        kit.clock.advance(IDLE // 2)
        if kit.clock.now < record.created + ABSOLUTE:
            assert await store.get(record.id) is not None
    kit.clock.now = record.created + ABSOLUTE
    assert await store.get(record.id) is None


async def test_last_seen_is_written_at_most_once_per_touch_interval(kit: Kit) -> None:
    store = kit.open()
    record = await login(store)
    kit.clock.advance(TOUCH - 1)
    seen = await store.get(record.id)
    assert seen is not None
    assert seen.last_seen == record.created
    kit.clock.advance(1)
    seen = await store.get(record.id)
    assert seen is not None
    assert seen.last_seen == kit.clock.now
    again = await kit.open().get(record.id)
    assert again is not None
    assert again.last_seen == kit.clock.now


async def test_update_cookies_sets_and_removes_held_cookies(kit: Kit) -> None:
    store = kit.open()
    record = await login(store, cookies={"sessionid": "one", "other": "x"})
    updated = await store.update_cookies(record.id, {"sessionid": "two", "other": None, "n": "v"})
    assert updated is not None
    assert dict(updated.cookies) == {"sessionid": "two", "n": "v"}
    found = await kit.open().get(record.id)
    assert found is not None
    assert dict(found.cookies) == {"sessionid": "two", "n": "v"}
    with pytest.raises(TypeError):
        found.cookies["sessionid"] = "forged"  # type: ignore[index]


async def test_expired_session_cookies_cannot_be_updated(kit: Kit) -> None:
    store = kit.open()
    record = await login(store)
    kit.clock.advance(IDLE + 1)
    assert await store.update_cookies(record.id, {"sessionid": "late"}) is None


async def test_purge_closes_each_expired_omero_session_once(kit: Kit) -> None:
    store = kit.open()
    stale = [await login(store, n) for n in (1, 2)]
    kit.clock.advance(IDLE - 100)
    active = await login(store, 3)
    kit.clock.advance(200)
    omero = Closer()
    result = await purge_expired(store, omero.close)
    assert sorted(omero.closed) == sorted(r.omero_session_key for r in stale)
    assert (result.removed, result.closed, result.failed, result.lost) == (2, 2, 0, 0)
    assert await store.get(active.id) is not None
    assert await store.count() == 1
    assert (await purge_expired(store, omero.close)).removed == 0
    assert len(omero.closed) == 2


async def test_racing_purgers_close_each_omero_session_exactly_once(kit: Kit) -> None:
    first, second = kit.open(), kit.open()
    created = await asyncio.gather(*(login(first, n) for n in range(1200)))
    keys = {record.omero_session_key for record in created}
    kit.clock.advance(IDLE + 1)
    omero = Closer()
    results = await asyncio.gather(
        purge_expired(first, omero.close, batch_size=100),
        purge_expired(second, omero.close, batch_size=100),
    )
    assert sorted(omero.closed) == sorted(keys)
    assert sum(r.removed for r in results) == 1200
    assert await first.count() == 0


async def test_a_name_is_used_once_across_processes_until_it_expires(kit: Kit) -> None:
    first, second = kit.open_all().replays, kit.open_all().replays
    until = kit.clock() + 0.3
    results = await asyncio.gather(*(s.use_once("jti-1", until) for s in (first, second) * 10))
    assert results.count(True) == 1  # one link login, however many processes race
    assert await second.use_once("jti-2", until)
    assert not await first.use_once("jti-2", until)
    if kit.kind == "memory":
        kit.clock.advance(1)
    else:
        await asyncio.sleep(0.5)  # Redis expires the key itself
    assert await first.use_once("jti-1", kit.clock() + 60)  # forgotten once expired


async def test_links_index_sessions_by_name_until_their_deadline_across_processes(
    kit: Kit,
) -> None:
    one, other = kit.open_all(), kit.open_all()
    first, second = one.logouts, other.logouts
    a, b, c = [await login(one.sessions, n) for n in (1, 2, 3)]
    now = kit.clock()
    await first.link("oidc-sid\x00iss\x00s1", a.id, now + 100)
    await second.link("oidc-sid\x00iss\x00s1", b.id, now + 10)
    await second.link("oidc-sub\x00iss\x00u", c.id, now + 100)

    async def users(index: LogoutIndex, name: str) -> list[int]:
        """Whose sessions `name` indexes: the ids linked name them for update and delete
        (Redis: references to handles, never the cookies themselves)."""
        found = [await one.sessions.update_cookies(i, {}) for i in await index.linked(name)]
        return sorted(r.user_id for r in found if r is not None)

    assert await users(second, "oidc-sid\x00iss\x00s1") == [a.user_id, b.user_id]
    assert await users(first, "oidc-sub\x00iss\x00u") == [c.user_id]
    assert await first.linked("oidc-sid\x00iss\x00unknown") == []
    kit.clock.advance(20)  # b's deadline has passed: no longer listed
    assert await users(first, "oidc-sid\x00iss\x00s1") == [a.user_id]
    await first.link("oidc-sid\x00iss\x00s1", c.id, kit.clock() + 100)  # prunes b
    assert await users(second, "oidc-sid\x00iss\x00s1") == [a.user_id, c.user_id]


async def test_keepalive_pings_used_sessions_and_ends_gone_ones(kit: Kit) -> None:
    store = kit.open()
    used, idle, killed = [await login(store, n) for n in (1, 2, 3)]
    since = kit.clock.now + 60
    kit.clock.advance(120)
    for record in (used, killed):
        assert await store.get(record.id) is not None
    kit.clock.advance(60)
    omero = Closer(gone={killed.omero_session_key})
    result = await keepalive(store, omero.ping, since, now=kit.clock.now)
    assert sorted(omero.pinged) == sorted([used.omero_session_key, killed.omero_session_key])
    assert (result.pinged, result.ended, result.failed) == (1, 1, 0)
    assert await store.get(killed.id) is None
    assert await store.get(idle.id) is not None


async def test_racing_keepalives_ping_each_session_once(kit: Kit) -> None:
    first, second = kit.open(), kit.open()
    records = [await login(first, n) for n in range(50)]
    kit.clock.advance(61)
    for record in records:
        assert await first.get(record.id) is not None
    kit.clock.advance(60)
    omero = Closer()
    since = kit.clock.now - 120
    results = await asyncio.gather(
        keepalive(first, omero.ping, since, now=kit.clock.now),
        keepalive(second, omero.ping, since, now=kit.clock.now),
    )
    assert sorted(omero.pinged) == sorted(r.omero_session_key for r in records)
    assert sum(r.pinged for r in results) == 50
    # Just pinged: a third process's round right after skips them all.
    late = await keepalive(kit.open(), omero.ping, since + 30, now=kit.clock.now + 30)
    assert late.pinged == 0
    assert len(omero.pinged) == 50


async def test_count_includes_sessions_until_purged(kit: Kit) -> None:
    store = kit.open()
    for n in range(5):
        await login(store, n)
    assert await store.count() == 5
    kit.clock.advance(IDLE + 1)
    assert await store.count() == 5
    await purge_expired(store, Closer().close)
    assert await store.count() == 0


def test_record_repr_hides_the_omero_key_cookies_and_session_id() -> None:
    record = SessionRecord(
        id=new_session_id(),
        server_id=1,
        omero_session_key=OMERO_KEY,
        user_id=2,
        user_name="ada",
        kind="user",
        created=1.0,
        last_seen=1.0,
        last_pinged=1.0,
        cookie_pairs=(("sessionid", "upstream-secret-value"),),
    )
    for text in (repr(record), str(record)):
        assert OMERO_KEY not in text
        assert "upstream-secret-value" not in text
        assert record.id not in text
        assert "ada" in text


# --- the memory store: bounded, evictions close OMERO sessions ------------------------------


async def test_full_memory_store_evicts_least_recently_used_and_closes_it() -> None:
    closed: list[tuple[int, str]] = []

    async def on_evict(server_id: int, key: str) -> None:
        closed.append((server_id, key))

    settings = SessionSettings(max_sessions=3)
    store = create_store(settings, on_evict=on_evict, seal=TEST_SEAL)
    assert isinstance(store, MemorySessionStore)
    a, b, c = [await login(store, n) for n in (1, 2, 3)]
    assert await store.get(a.id) is not None  # a is now more recent than b
    d = await login(store, 4)
    await store.close()  # waits for the scheduled close
    assert closed == [(b.server_id, b.omero_session_key)]
    assert await store.get(b.id) is None
    for kept in (a, c, d):
        assert await store.get(kept.id) is not None
    assert await store.count() == 3


async def test_eviction_does_not_wait_for_the_omero_close() -> None:
    release = asyncio.Event()
    started: list[str] = []
    finished: list[str] = []

    async def slow_close(server_id: int, key: str) -> None:
        started.append(key)
        await release.wait()
        finished.append(key)

    store = create_store(SessionSettings(max_sessions=1), on_evict=slow_close, seal=TEST_SEAL)
    first = await login(store, 1)
    await login(store, 2)  # returns although the close of `first` is still waiting
    await asyncio.sleep(0)
    assert started == [first.omero_session_key]
    assert finished == []
    release.set()
    await store.close()
    assert finished == [first.omero_session_key]


async def test_memory_store_accepts_a_plain_function_as_on_evict() -> None:
    closed: list[str] = []
    store = create_store(
        SessionSettings(max_sessions=1),
        on_evict=lambda _server, key: closed.append(key),
        seal=TEST_SEAL,
    )
    first = await login(store, 1)
    await login(store, 2)
    await store.close()
    assert closed == [first.omero_session_key]


# --- the Redis store: TTLs, shared sessions, Redis down ------------------------------------


def redis_settings(server: RedisServer, **extra: object) -> SessionSettings:
    """The redis store on `server`, with keys of its own."""
    fields: dict[str, object] = {
        "session_idle_timeout": IDLE,
        "session_cookie_age": ABSOLUTE,
        "store": "redis",
        "redis_url": server.url,
        "redis_password": server.password,
        "redis_key_prefix": f"t{uuid.uuid4().hex[:12]}:",
        "redis_connect_timeout": 1.0,
        "redis_timeout": 1.0,
    }
    fields.update(extra)
    return SessionSettings(**fields)  # type: ignore[arg-type]


async def redis_store(
    settings: SessionSettings, clock: Callable[[], float], seal: StoreSeal = TEST_SEAL
) -> RedisSessionStore:
    store = create_store(settings, on_evict=Closer().close, clock=clock, seal=seal)
    assert isinstance(store, RedisSessionStore)
    return store


async def test_redis_key_ttl_outlives_the_deadline_by_the_close_grace(
    redis_server: RedisServer,
) -> None:
    settings = redis_settings(redis_server)
    clock = FakeClock(1.7e9)
    store = await redis_store(settings, clock)
    raw = Redis(port=redis_server.port, password=redis_server.password)
    try:
        record = await login(store)
        handle = TEST_SEAL.handle(record.id)
        ttl = await raw.ttl(f"{settings.redis_key_prefix}s:{handle}")
        assert IDLE + 3600 - 2 <= ttl <= IDLE + 3600
        score = await raw.zscore(f"{settings.redis_key_prefix}expiry", handle)
        assert score == record.created + IDLE
        clock.advance(IDLE - 100)
        assert await store.get(record.id) is not None  # touch: new deadline, new TTL
        score = await raw.zscore(f"{settings.redis_key_prefix}expiry", handle)
        assert score == clock.now + IDLE
    finally:
        await raw.aclose()
        await store.close()


async def test_session_dropped_by_redis_ttl_is_counted_lost(redis_server: RedisServer) -> None:
    settings = redis_settings(redis_server)
    clock = FakeClock(1.7e9)
    store = await redis_store(settings, clock)
    raw = Redis(port=redis_server.port, password=redis_server.password)
    try:
        record = await login(store)
        handle = TEST_SEAL.handle(record.id)
        await raw.delete(f"{settings.redis_key_prefix}s:{handle}")  # what the TTL does
        clock.advance(IDLE + 1)
        omero = Closer()
        result = await purge_expired(store, omero.close)
        assert (result.removed, result.lost) == (0, 1)
        assert omero.closed == []
        assert await store.count() == 0
    finally:
        await raw.aclose()
        await store.close()


async def test_redis_down_raises_unavailable_and_recovers(
    redis_server_factory: Callable[[], RedisServer],
) -> None:
    server = redis_server_factory()
    store = await redis_store(redis_settings(server), FakeClock(1.7e9))
    try:
        record = await login(store)
        server.stop()
        operations: list[Callable[[], Awaitable[object]]] = [
            lambda: login(store, 2),
            lambda: store.get(record.id),
            lambda: store.update_cookies(record.id, {"a": "b"}),
            lambda: store.delete(record.id),
            lambda: store.pop_expired(10),
            lambda: store.mark_pinged(record.id, record.last_pinged),
            lambda: store.count(),
            lambda: purge_expired(store, Closer().close),
            lambda: keepalive(store, Closer().ping, 0.0),
        ]
        for operation in operations:
            with pytest.raises(SessionStoreUnavailable) as caught:
                await operation()
            message = str(caught.value)
            assert message.startswith("session store unavailable")
            assert server.password not in message
            assert OMERO_KEY not in message
            assert record.id not in message
        server.start()  # same port, empty (no persistence)
        assert await store.get(record.id) is None
        again = await login(store, 3)
        assert await store.get(again.id) == again
    finally:
        await store.close()


async def test_wrong_redis_password_is_unavailable_without_echoing_it(
    redis_server: RedisServer,
) -> None:
    store = await redis_store(
        redis_settings(redis_server, redis_password="not-the-Pa55word"), FakeClock(1.7e9)
    )
    try:
        with pytest.raises(SessionStoreUnavailable) as caught:
            await login(store)
        assert "not-the-Pa55word" not in str(caught.value)
    finally:
        await store.close()


# --- settings and factory --------------------------------------------------------------------


def test_factory_rejects_an_unknown_store_type() -> None:
    with pytest.raises(ValueError, match=r"session\.store has value 'memcached'"):
        create_store(SessionSettings(store="memcached"), on_evict=Closer().close)


def test_redis_url_with_a_password_is_rejected() -> None:
    check = SessionSettings.__dataclass_fields__["redis_url"].metadata["check"]
    with pytest.raises(ValueError, match="redis_password"):
        check("redis://:secret@127.0.0.1:6379/0")
    check("redis://127.0.0.1:6379/0")


def test_samesite_none_without_secure_is_a_problem() -> None:
    bad = SessionSettings(session_cookie_samesite="None", session_cookie_secure="false")
    assert [name for name, _ in bad.problems()] == ["session_cookie_samesite"]
    assert SessionSettings().problems() == []


async def test_a_local_copy_of_a_redis_session_ends_within_its_bound(
    redis_server: RedisServer,
) -> None:
    """With redis_local_cache, a process reuses a session it read for at most that long: a
    session ended by another process ends here within the bound, and at once when ended
    here; without it (the default) every read goes to Redis."""
    settings = redis_settings(redis_server)
    bound = 0.3
    exact = create_store(settings, on_evict=Closer().close, seal=TEST_SEAL)
    local = create_store(
        dataclasses.replace(settings, redis_local_cache=bound),
        on_evict=Closer().close,
        seal=TEST_SEAL,
    )
    try:
        record = await login(exact)
        assert await local.get(record.id) == record
        assert await exact.delete(record.id) is not None  # logged out on another process
        assert await exact.get(record.id) is None  # the exact store knows at once
        assert await local.get(record.id) is not None  # the local copy, within its bound
        await asyncio.sleep(bound + 0.05)
        assert await local.get(record.id) is None  # and never after it
        mine = await login(exact, 2)
        assert await local.get(mine.id) is not None
        assert await local.delete(mine.id) is not None  # ended here: gone here at once
        assert await local.get(mine.id) is None
        cookies = await login(exact, 3, cookies={"sessionid": "a"})
        assert (await local.get(cookies.id)).cookies == {"sessionid": "a"}  # type: ignore[union-attr]
        await local.update_cookies(cookies.id, {"sessionid": "b"})
        assert (await local.get(cookies.id)).cookies == {"sessionid": "b"}  # type: ignore[union-attr]
    finally:
        await exact.close()
        await local.close()


# --- secrets at rest: what reading Redis gives away ------------------------------------------


async def everything_in_redis(raw: Redis, prefix: str) -> str:
    """Every key, field, value and member under `prefix`, as one text (what an RDB holds)."""
    seen: list[Any] = []
    async for key in raw.scan_iter(match=prefix + "*"):
        seen.append(key)
        kind = await raw.type(key)
        if kind == b"hash":
            seen += [x for pair in (await raw.hgetall(key)).items() for x in pair]
        elif kind == b"zset":
            seen += await raw.zrange(key, 0, -1)
        elif kind == b"string":
            seen.append(await raw.get(key) or b"")
    return "\n".join(x.decode() if isinstance(x, bytes) else str(x) for x in seen)


async def test_redis_holds_no_cookie_omero_key_or_web_cookie_in_clear(
    redis_server: RedisServer,
) -> None:
    settings = redis_settings(redis_server)
    stores = create_stores(
        settings, on_evict=Closer().close, clock=FakeClock(1.7e9), seal=TEST_SEAL
    )
    store = stores.sessions
    raw = Redis(port=redis_server.port, password=redis_server.password)
    try:
        record = await login(store, cookies={"sessionid": "django-session-of-user1-abcdef"})
        await stores.logouts.link("oidc-sid\x00iss\x00s1", record.id, 1.7e9 + 100)
        await store.update_cookies(record.id, {"csrftoken": "csrf-of-user1-0123456789"})
        dump = await everything_in_redis(raw, settings.redis_key_prefix)
        assert dump  # the session is there...
        for secret in (
            record.id,
            record.omero_session_key,
            "django-session-of-user1-abcdef",
            "csrf-of-user1-0123456789",
        ):
            assert secret not in dump  # ...and none of its secrets
        assert "user1" in dump  # the user name is no secret: admins can read who is in
        # a sealed value moved to another session's hash does not open there
        other = await login(store, 2)
        key = f"{settings.redis_key_prefix}s:"
        sealed = await raw.hget(key + TEST_SEAL.handle(record.id), "key")
        await raw.hset(key + TEST_SEAL.handle(other.id), "key", sealed)
        assert await store.get(other.id) is None
        assert (await store.get(record.id)) == replace(
            record, cookie_pairs=(("csrftoken", "csrf-of-user1-0123456789"), *record.cookie_pairs)
        )
    finally:
        await raw.aclose()
        await store.close()


async def test_a_rotated_secret_key_still_reads_sessions_until_they_expire(
    redis_server: RedisServer,
) -> None:
    settings = redis_settings(redis_server)
    clock = FakeClock(1.7e9)
    old_key, new_key = "the-key-before-the-rotation-0123456789", "the-key-after-the-rotation-0123"
    before = await redis_store(settings, clock, StoreSeal(old_key))
    rotated = await redis_store(settings, clock, StoreSeal(new_key, old_key))
    stranger = await redis_store(settings, clock, StoreSeal(new_key))
    try:
        old = await login(before, 1, cookies={"sessionid": "web-1"})
        assert await stranger.get(old.id) is None  # without the previous key: unknown
        found = await rotated.get(old.id)
        assert found is not None
        assert found.omero_session_key == old.omero_session_key
        renewed = await rotated.update_cookies(old.id, {"sessionid": "web-2"})
        assert renewed is not None
        assert renewed.cookies["sessionid"] == "web-2"
        again = await rotated.get(old.id)
        assert again is not None
        assert again.cookies["sessionid"] == "web-2"
        new = await login(rotated, 2)
        assert (await stranger.get(new.id)) is not None  # written under the new key
        assert await before.get(new.id) is None  # the old key alone cannot read it
        # purge finds both kinds, and closes both OMERO sessions
        clock.advance(ABSOLUTE + 1)
        omero = Closer()
        result = await purge_expired(rotated, omero.close)
        assert (result.removed, result.lost) == (2, 0)
        assert sorted(omero.closed) == sorted([old.omero_session_key, new.omero_session_key])
    finally:
        for store in (before, rotated, stranger):
            await store.close()


def test_only_the_store_factory_makes_a_redis_client_and_proxy_never_touches_one() -> None:
    """One factory (auth/stores.py) holds the client and hands it to the components that keep
    state in Redis; the proxy layer asks the factory and never imports redis itself."""
    root = Path(__file__).resolve().parent.parent
    importers, makers = [], []
    for path in [*sorted((root / "proxy").rglob("*.py")), root / "run.py"]:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            else:
                continue
            if any(name.split(".")[0] == "redis" for name in names):
                importers.append(path.name)
    for path in sorted(root.glob("*/*.py")):
        if path.parts[-2] in ("tests", "bench", "build", ".venv"):
            continue
        if "redis_client(" in path.read_text():
            makers.append(f"{path.parts[-2]}/{path.name}")
    assert importers == []
    assert sorted(makers) == ["auth/store_redis.py", "auth/stores.py"]  # defined; called once
