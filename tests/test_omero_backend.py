"""The OMERO backend against the OMERO test server over real Ice (SSL and TCP)."""

from __future__ import annotations

import asyncio
import contextlib
import http.cookiejar
import socket
import threading
import urllib.request
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import Glacier2
import Ice
import omero
import omero.clients
import pytest

from auth.omero_backend import OmeroBackend
from auth.omero_errors import (
    GroupRefused,
    InvalidCredentials,
    OmeroError,
    OtherOmeroError,
    PermissionDenied,
    ServerUnavailable,
    SessionGone,
    UnknownServer,
)
from auth.omero_ice import translated
from auth.omero_settings import OmeroSettings
from auth.servers import ServerList
from tests.omero_sim.fixture import OmeroSim, start_sim, stop_sim
from tests.web_fixture import OmeroWeb

SSL, TCP = 1, 2  # server ids in settings_for()
HANG_GUARD = 30.0  # outer bound in fault tests: a hang fails the test instead of blocking it


def settings_for(sim: OmeroSim, **overrides: Any) -> OmeroSettings:
    values: dict[str, Any] = {
        "server_list": ((sim.host, sim.ssl_port, "sim"), (sim.tcp_url, sim.tcp_port, "sim-tcp")),
        "pool_size": 4,
        "call_timeout": 5.0,
        "admin_user": "root",
        "admin_password": sim.users["root"],
    }
    values.update(overrides)
    return OmeroSettings(**values)


@pytest.fixture
async def backend(omero_sim: OmeroSim) -> AsyncIterator[OmeroBackend]:
    async with OmeroBackend(settings_for(omero_sim)) as b:
        yield b


@pytest.fixture(scope="module")
def faulty_server() -> Iterator[OmeroSim]:
    """A private test server for faults (down, hang, slow) that must not touch the shared
    one OMERO.web points at."""
    sim = start_sim()
    yield sim
    stop_sim(sim)


@pytest.fixture
def faulty_sim(faulty_server: OmeroSim) -> OmeroSim:
    faulty_server.reset()
    return faulty_server


def assert_clean(error: OmeroError, *secrets: str) -> None:
    """No secret in the message, and no Ice exception attached to the error."""
    for secret in secrets:
        assert secret not in str(error)
        assert secret not in repr(error)
    assert error.__cause__ is None
    assert error.__context__ is None


# -- login ------------------------------------------------------------------------------------


@pytest.mark.parametrize("server", [SSL, TCP])
async def test_login_returns_the_users_identity(
    backend: OmeroBackend, omero_sim: OmeroSim, server: int
) -> None:
    login = await backend.login(server, "alice", omero_sim.users["alice"], "192.0.2.7")
    assert (login.user_name, login.user_id, login.group_name, login.is_admin, login.server_id) == (
        "alice",
        2,
        "lab",
        False,
        server,
    )
    assert omero_sim.session(login.session_key) is not None


async def test_login_passes_client_ip_and_user_agent_to_omero(
    backend: OmeroBackend, omero_sim: OmeroSim
) -> None:
    login = await backend.login("sim", "alice", omero_sim.users["alice"], "192.0.2.7")
    session = omero_sim.session(login.session_key)
    assert session is not None
    assert (session["agent"], session["ip"]) == ("omero-porter", "192.0.2.7")


async def test_login_leaves_the_session_open_with_no_client_attached(
    backend: OmeroBackend, omero_sim: OmeroSim
) -> None:
    await backend.login(SSL, "alice", omero_sim.users["alice"])
    stats = omero_sim.stats()
    assert (stats["sessions_active"], stats["router_sessions_active"]) == (1, 0)


async def test_admin_login_reports_admin(backend: OmeroBackend, omero_sim: OmeroSim) -> None:
    login = await backend.login(SSL, "root", omero_sim.users["root"])
    assert login.is_admin


async def test_login_repr_hides_the_session_key(backend: OmeroBackend, omero_sim: OmeroSim) -> None:
    login = await backend.login(SSL, "alice", omero_sim.users["alice"])
    assert login.session_key not in repr(login)


@pytest.mark.parametrize(("user", "password"), [("alice", "wrong-pass"), ("nobody", "x-pass")])
async def test_wrong_password_or_unknown_user_is_invalid_credentials(
    backend: OmeroBackend, omero_sim: OmeroSim, user: str, password: str
) -> None:
    with pytest.raises(InvalidCredentials) as caught:
        await backend.login(SSL, user, password)
    assert caught.value.ice_type == "Glacier2.PermissionDeniedException"
    assert_clean(caught.value, password)
    assert omero_sim.stats()["sessions_active"] == 0


@pytest.mark.parametrize(("user", "password"), [("", "alice-pass"), ("alice", ""), ("", "")])
async def test_empty_credentials_are_refused_without_contacting_the_server(
    backend: OmeroBackend, omero_sim: OmeroSim, user: str, password: str
) -> None:
    with pytest.raises(InvalidCredentials):
        await backend.login(SSL, user, password)
    stats = omero_sim.stats()
    assert (stats["logins"], stats["login_failures"], stats["calls"]) == (0, 0, {})


@pytest.mark.parametrize("server", [0, 3, "nope", "3"])
async def test_unknown_server_is_refused_without_contacting_any(
    backend: OmeroBackend, omero_sim: OmeroSim, server: int | str
) -> None:
    with pytest.raises(UnknownServer):
        await backend.login(server, "alice", omero_sim.users["alice"])
    assert omero_sim.stats()["calls"] == {}


# -- join, keep_alive, close ------------------------------------------------------------------


@pytest.mark.parametrize("server", [SSL, TCP])
async def test_join_reads_who_owns_a_session_and_leaves_it_as_found(
    backend: OmeroBackend, omero_sim: OmeroSim, server: int
) -> None:
    login = await backend.login(SSL, "carol", omero_sim.users["carol"])
    before = omero_sim.session(login.session_key)
    joined = await backend.join(server, login.session_key)
    after = omero_sim.session(login.session_key)
    assert (joined.user_name, joined.group_name, joined.session_key) == (
        "carol",
        login.group_name,
        login.session_key,
    )
    assert before is not None
    assert after is not None
    assert after["refcount"] == before["refcount"]
    assert omero_sim.stats()["router_sessions_active"] == 0


async def test_join_of_an_unknown_key_is_session_gone_without_the_key(
    backend: OmeroBackend,
) -> None:
    key = "0badc0de-0000-4000-8000-000000000000"
    with pytest.raises(SessionGone) as caught:
        await backend.join(SSL, key)
    assert_clean(caught.value, key)


async def test_keep_alive_is_true_while_the_session_lives(
    backend: OmeroBackend, omero_sim: OmeroSim
) -> None:
    login = await backend.login(SSL, "alice", omero_sim.users["alice"])
    assert await backend.keep_alive(SSL, login.session_key) is True
    assert omero_sim.stats()["keepalives"] == 1


async def test_keep_alive_is_false_once_the_server_killed_the_session(
    backend: OmeroBackend, omero_sim: OmeroSim
) -> None:
    login = await backend.login(SSL, "alice", omero_sim.users["alice"])
    assert omero_sim.kill_session(login.session_key)
    assert await backend.keep_alive(SSL, login.session_key) is False


async def test_close_ends_the_session_on_the_server_even_when_others_hold_it(
    backend: OmeroBackend, omero_sim: OmeroSim
) -> None:
    login = await backend.login(SSL, "alice", omero_sim.users["alice"])
    other = omero_sim.client()  # another holder, as OMERO.web after its join
    try:
        other.joinSession(login.session_key)
        await backend.close(SSL, login.session_key)
        assert omero_sim.session(login.session_key) is None
    finally:
        with contextlib.suppress(Exception):  # Glacier2.SessionNotExistException: it ended
            other.closeSession()
    assert await backend.keep_alive(SSL, login.session_key) is False


async def test_close_of_an_ended_session_is_a_no_op(
    backend: OmeroBackend, omero_sim: OmeroSim
) -> None:
    login = await backend.login(SSL, "alice", omero_sim.users["alice"])
    await backend.close(SSL, login.session_key)
    await backend.close(SSL, login.session_key)
    assert omero_sim.stats()["sessions_closed"] == 1


# -- create_session_for (SSO), server_version -------------------------------------------------


async def test_admin_creates_a_session_for_a_user_with_ttl_and_tti(
    backend: OmeroBackend, omero_sim: OmeroSim
) -> None:
    login = await backend.create_session_for(
        SSL, "bob", ttl_ms=3_600_000, tti_ms=600_000, client_ip="192.0.2.9"
    )
    assert (login.user_name, login.is_admin) == ("bob", False)
    session = omero_sim.session(login.session_key)
    assert session is not None
    assert (session["time_to_live"], session["time_to_idle"]) == (3600.0, 600.0)
    assert (session["agent"], session["ip"]) == ("omero-porter", "192.0.2.9")
    # The admin's own session is held for the next SSO user: no second admin login.
    assert omero_sim.stats()["sessions_active"] == 2
    logins = omero_sim.stats()["logins"]
    await backend.create_session_for(SSL, "carol", ttl_ms=0, tti_ms=0)
    assert omero_sim.stats()["logins"] == logins


async def test_a_session_for_a_user_is_made_in_the_group_asked_for_if_they_are_in_it(
    backend: OmeroBackend, omero_sim: OmeroSim
) -> None:
    login = await backend.create_session_for(SSL, "carol", 0, 0, group="other-lab")
    assert login.group_name == "other-lab"  # not carol's default group (lab)
    assert omero_sim.session(login.session_key)["group"] == "other-lab"  # type: ignore[index]
    before = {s["key"] for s in omero_sim.sessions()}
    # OMERO would make it (it does not check membership): porter asks first, makes none
    with pytest.raises(GroupRefused):
        await backend.create_session_for(SSL, "bob", 0, 0, group="other-lab")
    with pytest.raises(InvalidCredentials):  # an unknown user stays an unknown user
        await backend.create_session_for(SSL, "nobody", 0, 0, group="lab")
    assert {s["key"] for s in omero_sim.sessions()} == before


async def test_held_admin_session_is_recreated_when_killed_and_closed_at_the_end(
    omero_sim: OmeroSim,
) -> None:
    async with OmeroBackend(settings_for(omero_sim)) as backend:
        await backend.create_session_for(SSL, "bob", 0, 0)
        [admin_key] = [s["key"] for s in omero_sim.sessions() if s["user"] == "root"]
        assert omero_sim.kill_session(admin_key)
        login = await backend.create_session_for(SSL, "carol", 0, 0)
        assert login.user_name == "carol"
        [new_admin] = [s["key"] for s in omero_sim.sessions() if s["user"] == "root"]
        assert new_admin != admin_key
    assert [s for s in omero_sim.sessions() if s["user"] == "root"] == []


async def test_create_session_for_as_a_non_admin_is_permission_denied(
    omero_sim: OmeroSim,
) -> None:
    settings = settings_for(omero_sim, admin_user="alice", admin_password=omero_sim.users["alice"])
    async with OmeroBackend(settings) as backend:
        with pytest.raises(PermissionDenied) as caught:
            await backend.create_session_for(SSL, "bob", 0, 0)
    assert caught.value.ice_type == "omero.SecurityViolation"


async def test_create_session_for_with_a_wrong_admin_password_names_the_setting(
    omero_sim: OmeroSim,
) -> None:
    settings = settings_for(omero_sim, admin_password="not-root-pass")
    async with OmeroBackend(settings) as backend:
        with pytest.raises(PermissionDenied, match="admin_user") as caught:
            await backend.create_session_for(SSL, "bob", 0, 0)
    assert_clean(caught.value, "not-root-pass")


async def test_create_session_for_an_unknown_user_is_invalid_credentials(
    backend: OmeroBackend,
) -> None:
    with pytest.raises(InvalidCredentials):
        await backend.create_session_for(SSL, "nobody", 0, 0)


async def test_create_session_for_without_an_admin_configured_contacts_nobody(
    omero_sim: OmeroSim,
) -> None:
    settings = settings_for(omero_sim, admin_user=None, admin_password=None)
    async with OmeroBackend(settings) as backend:
        with pytest.raises(PermissionDenied, match="admin_user is not set"):
            await backend.create_session_for(SSL, "bob", 0, 0)
    assert omero_sim.stats()["calls"] == {}


@pytest.mark.parametrize("server", [SSL, TCP])
async def test_server_version_is_read(
    backend: OmeroBackend, omero_sim: OmeroSim, server: int
) -> None:
    assert await backend.server_version(server) == "5.6.16-ice36-sim"
    assert omero_sim.stats()["sessions_active"] == 0  # the guest session is closed


# -- the thread pool --------------------------------------------------------------------------


async def test_logins_beyond_the_pool_size_queue_and_all_succeed(omero_sim: OmeroSim) -> None:
    async with OmeroBackend(settings_for(omero_sim, pool_size=2)) as backend:
        logins = await asyncio.gather(
            *(backend.login(SSL, "bob", omero_sim.users["bob"]) for _ in range(20))
        )
        workers = [t for t in threading.enumerate() if t.name.startswith("porter-omero")]
    assert len({login.session_key for login in logins}) == 20
    assert len(workers) <= 2


# -- dead, silent and slow servers ------------------------------------------------------------


async def test_dead_server_is_unavailable(faulty_sim: OmeroSim) -> None:
    faulty_sim.down()
    async with OmeroBackend(settings_for(faulty_sim, call_timeout=1.0)) as backend:
        for server in (SSL, TCP):
            with pytest.raises(ServerUnavailable) as caught:
                await asyncio.wait_for(backend.login(server, "alice", "alice-pass"), HANG_GUARD)
            assert caught.value.ice_type == "Ice.ConnectionRefusedException"
            assert_clean(caught.value, "alice-pass")


async def test_keep_alive_on_a_dead_server_raises_rather_than_ending_the_session(
    faulty_sim: OmeroSim,
) -> None:
    async with OmeroBackend(settings_for(faulty_sim, call_timeout=1.0)) as backend:
        login = await backend.login(SSL, "alice", faulty_sim.users["alice"])
        faulty_sim.down()
        with pytest.raises(ServerUnavailable):
            await asyncio.wait_for(backend.keep_alive(SSL, login.session_key), HANG_GUARD)
        faulty_sim.up()
        assert await backend.keep_alive(SSL, login.session_key) is True


@pytest.mark.parametrize("server", [SSL, TCP])
async def test_silent_server_is_unavailable_within_the_timeout(
    faulty_sim: OmeroSim, server: int
) -> None:
    faulty_sim.hang()
    async with OmeroBackend(settings_for(faulty_sim, call_timeout=1.0)) as backend:
        with pytest.raises(ServerUnavailable):
            await asyncio.wait_for(backend.login(server, "alice", "alice-pass"), HANG_GUARD)
        faulty_sim.up()  # lets the pool's threads finish before aclose


async def test_slow_server_is_unavailable_and_the_late_session_is_closed(
    faulty_sim: OmeroSim,
) -> None:
    faulty_sim.slow(0.3)  # each call answers; a login (~8 calls) outlasts the 1 s timeout
    async with OmeroBackend(settings_for(faulty_sim, call_timeout=1.0)) as backend:
        with pytest.raises(ServerUnavailable, match="did not answer"):
            await asyncio.wait_for(backend.login(SSL, "alice", "alice-pass"), HANG_GUARD)
    # aclose waited for the abandoned login: it logged in, then closed what nobody will use
    stats = faulty_sim.stats()
    assert (stats["logins"], stats["sessions_active"]) == (1, 0)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize("host", ["127.0.0.1", "no-such-host.invalid"])
async def test_unreachable_or_unresolvable_host_is_unavailable(host: str) -> None:
    settings = OmeroSettings(server_list=((host, free_port(), ""),), call_timeout=2.0)
    async with OmeroBackend(settings) as backend:
        with pytest.raises(ServerUnavailable):
            await asyncio.wait_for(backend.login(1, "alice", "alice-pass"), HANG_GUARD)


# -- the translation boundary, for exceptions the test server does not raise ------------------

KEY = "5ec12e7a-0000-4000-8000-00000000beef"


@pytest.mark.parametrize(
    ("op", "exc", "expected"),
    [
        (
            "login",
            lambda: omero.WrappedCreateSessionException("busy", True, 500, "x"),
            ServerUnavailable,
        ),
        (
            "login",
            lambda: omero.WrappedCreateSessionException(
                "locked", False, 0, "ome.conditions.SecurityViolation"
            ),
            InvalidCredentials,
        ),
        ("login", lambda: omero.SecurityViolation("", "", "account locked"), InvalidCredentials),
        ("join", lambda: Glacier2.PermissionDeniedException("no such session"), SessionGone),
        ("keep_alive", lambda: omero.SessionTimeoutException("", "", KEY), SessionGone),
        ("keep_alive", lambda: omero.RemovedSessionException("", "", KEY), SessionGone),
        ("keep_alive", lambda: Ice.ObjectNotExistException(Ice.Identity(KEY, "c")), SessionGone),
        ("login", lambda: Ice.ObjectNotExistException(Ice.Identity("router", "")), OtherOmeroError),
        ("login", lambda: Ice.DNSException(-2, "omero.example.org"), ServerUnavailable),
        ("login", lambda: Ice.ConnectTimeoutException(), ServerUnavailable),
        ("login", lambda: Ice.ConnectionLostException(), ServerUnavailable),
        ("login", lambda: Ice.SecurityException(KEY), ServerUnavailable),
        ("login", lambda: omero.ClientError("Obtained null object proxy"), ServerUnavailable),
        ("create_session_for", lambda: omero.SecurityViolation("", "", KEY), PermissionDenied),
        ("close", lambda: omero.InternalException("", "", KEY), OtherOmeroError),
        ("close", lambda: Ice.UnknownLocalException(KEY), OtherOmeroError),
    ],
)
def test_ice_exceptions_translate_to_the_tree_without_their_text(
    op: str, exc: Callable[[], BaseException], expected: type[OmeroError]
) -> None:
    server = ServerList.from_entries([("omero.example.org", 4064, "")]).get(1)
    original = exc()

    def fail() -> None:
        raise original

    with pytest.raises(expected) as caught:
        translated(op, server, fail)
    assert caught.value.ice_type == f"{type(original).__module__}.{type(original).__name__}"
    assert caught.value.server_id == 1
    assert_clean(caught.value, KEY)


def test_a_bug_outside_ice_is_not_disguised_as_an_omero_error() -> None:
    server = ServerList.from_entries([("omero.example.org", 4064, "")]).get(1)

    def bug() -> None:
        raise KeyError("bug")

    with pytest.raises(KeyError):
        translated("login", server, bug)


# -- with the real OMERO.web ------------------------------------------------------------------


def _get(opener: urllib.request.OpenerDirector, url: str) -> str:
    with opener.open(url, timeout=30) as response:
        return str(response.read().decode())


async def test_omero_web_joins_a_backend_login_and_loses_it_when_the_backend_closes_it(
    omero_web: OmeroWeb, omero_sim: OmeroSim
) -> None:
    host, port, name = omero_sim.server_list_entry()  # the entry OMERO.web was given
    settings = settings_for(omero_sim, server_list=((host, port, name),))
    ping = "/webclient/keepalive_ping/"
    async with OmeroBackend(settings) as backend:
        login = await backend.login(omero_web.server_id, "alice", omero_sim.users["alice"])
        browser = urllib.request.build_opener(
            urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar())
        )
        handoff = f"{ping}?server={omero_web.server_id}&bsession={login.session_key}"
        assert _get(browser, omero_web.url(handoff)) == "OK"
        assert _get(browser, omero_web.url(ping)) == "OK"  # OMERO.web's own cookie now
        await backend.close(omero_web.server_id, login.session_key)  # porter's logout
    assert omero_sim.session(login.session_key) is None
    assert _get(browser, omero_web.url(ping)) == "Connection Failed"
