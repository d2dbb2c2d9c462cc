"""The OMERO test server behaves as OMERO does for real omero-py clients, over real Ice."""

from __future__ import annotations

import io
import time
from collections.abc import Callable, Iterator
from typing import Any

import Ice
import omero
import omero.clients
import omero.sys
import pytest
from omero.clients import Glacier2  # never `import Glacier2` before omero.clients (state.py)
from omero.gateway import BlitzGateway

from tests.omero_sim.fixture import OmeroSim


@pytest.fixture
def clients(omero_sim: OmeroSim) -> Iterator[Callable[..., Any]]:
    """New omero.client objects, all closed after the test."""
    made: list[Any] = []

    def make(secure: bool = True, *args: str) -> Any:
        host = omero_sim.ssl_url if secure else omero_sim.tcp_url
        client = omero.client(host=host, args=list(args)) if args else omero.client(host=host)
        made.append(client)
        return client

    yield make
    for client in made:
        client.__del__()


def _wait_until(check: Callable[[], bool], seconds: float = 10.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.05)
    return check()


def test_login_over_ssl_runs_on_an_ssl_connection_and_knows_the_user(
    omero_sim: OmeroSim,
    clients: Callable[..., Any],
) -> None:
    client = clients(secure=True)
    sf = client.createSession("alice", omero_sim.users["alice"])
    ctx = sf.getAdminService().getEventContext()
    assert isinstance(sf.ice_getConnection().getInfo(), Ice.SSLConnectionInfo)
    assert (ctx.userName, ctx.groupName, ctx.isAdmin) == ("alice", "lab", False)
    assert ctx.sessionUuid == client.getSessionId()
    assert omero_sim.stats()["logins"] == 1


def test_login_over_a_tcp_url_runs_on_plain_tcp(
    omero_sim: OmeroSim,
    clients: Callable[..., Any],
) -> None:
    client = clients(secure=False)
    sf = client.createSession("root", omero_sim.users["root"])
    info = sf.ice_getConnection().getInfo()
    assert not isinstance(info, Ice.SSLConnectionInfo)
    assert sf.getAdminService().getEventContext().isAdmin
    assert sf.getConfigService().getVersion().startswith("5.")


def test_wrong_password_is_refused_with_permission_denied(
    omero_sim: OmeroSim,
    clients: Callable[..., Any],
) -> None:
    with pytest.raises(Glacier2.PermissionDeniedException):
        clients().createSession("alice", "not-her-password")
    stats = omero_sim.stats()
    assert (stats["login_failures"], stats["sessions_created"]) == (1, 0)


def test_joining_by_key_gives_the_same_session_with_one_more_reference(
    omero_sim: OmeroSim,
    clients: Callable[..., Any],
) -> None:
    first = clients()
    first.createSession("bob", omero_sim.users["bob"])
    key = first.getSessionId()
    sf = clients(secure=False).joinSession(key)
    assert sf.getAdminService().getEventContext().userName == "bob"
    assert sf.getSessionService().getReferenceCount(key) == 2
    assert omero_sim.session(key)["joins"] == 1  # type: ignore[index]


def test_closing_the_last_reference_ends_the_session_but_a_detached_one_survives(
    omero_sim: OmeroSim,
    clients: Callable[..., Any],
) -> None:
    closing, detaching = clients(), clients()
    closing.createSession("alice", omero_sim.users["alice"])
    detaching.createSession("bob", omero_sim.users["bob"])
    closed_key, kept_key = closing.getSessionId(), detaching.getSessionId()
    detaching.getSession().detachOnDestroy()
    closing.closeSession()
    detaching.closeSession()
    assert omero_sim.session(closed_key) is None
    assert omero_sim.session(kept_key) is not None
    assert clients().joinSession(kept_key).getAdminService().getEventContext().userName == "bob"


def test_kill_session_closes_every_reference_and_the_key_no_longer_joins(
    omero_sim: OmeroSim,
    clients: Callable[..., Any],
) -> None:
    client = clients()
    client.createSession("alice", omero_sim.users["alice"])
    key = client.getSessionId()
    clients().joinSession(key)
    assert client.killSession() == 2  # ISession.closeSession until the count reaches 0
    assert omero_sim.session(key) is None
    with pytest.raises(Glacier2.PermissionDeniedException):
        clients().joinSession(key)


def test_idle_sessions_expire_on_the_server(
    omero_sim: OmeroSim,
    clients: Callable[..., Any],
) -> None:
    omero_sim.set_idle_timeout(0.3)
    client = clients()
    client.createSession("bob", omero_sim.users["bob"])
    key = client.getSessionId()
    client.getSession().detachOnDestroy()
    client.closeSession()
    assert _wait_until(lambda: omero_sim.session(key) is None)
    assert omero_sim.stats()["sessions_expired"] == 1
    with pytest.raises(Glacier2.PermissionDeniedException):
        clients().joinSession(key)


def test_keepalive_keeps_a_session_past_its_idle_timeout(
    omero_sim: OmeroSim,
    clients: Callable[..., Any],
) -> None:
    omero_sim.set_idle_timeout(1.5)
    client = clients()
    sf = client.createSession("bob", omero_sim.users["bob"])
    deadline = time.monotonic() + 2.5
    while time.monotonic() < deadline:
        assert sf.keepAlive(None)
        time.sleep(0.2)
    assert omero_sim.session(client.getSessionId()) is not None
    assert omero_sim.stats()["keepalives"] >= 10


def test_create_session_with_timeouts_is_for_admins_only(
    omero_sim: OmeroSim,
    clients: Callable[..., Any],
) -> None:
    principal = omero.sys.Principal("bob", "lab", "User")
    user_sf = clients().createSession("alice", omero_sim.users["alice"])
    with pytest.raises(omero.SecurityViolation):
        user_sf.getSessionService().createSessionWithTimeouts(principal, 60000, 20000)
    admin_sf = clients().createSession("root", omero_sim.users["root"])
    made = admin_sf.getSessionService().createSessionWithTimeouts(principal, 60000, 20000)
    assert (made.timeToLive.val, made.timeToIdle.val) == (60000, 20000)
    joined = clients().joinSession(made.uuid.val)
    assert joined.getAdminService().getEventContext().userName == "bob"


def test_an_operation_not_simulated_fails_at_once_naming_it(
    omero_sim: OmeroSim,
    clients: Callable[..., Any],
) -> None:
    sf = clients().createSession("alice", omero_sim.users["alice"])
    with pytest.raises(omero.InternalException, match=r"IQuery\.projection"):
        sf.getQueryService().projection("select e.id from Experimenter e", None)
    with pytest.raises(omero.InternalException, match="select e from Experimenter e"):
        sf.getQueryService().findAllByQuery("select e from Experimenter e", None)
    with pytest.raises(omero.InternalException, match="createRawFileStore"):
        sf.createRawFileStore()


def test_a_session_finds_the_images_of_its_groups_and_gets_their_thumbnails(
    omero_sim: OmeroSim,
) -> None:
    conn = BlitzGateway(
        "alice", omero_sim.users["alice"], host=omero_sim.host, port=omero_sim.ssl_port
    )
    assert conn.connect()
    try:
        assert conn.getObject("Image", 1) is None  # in public-data: not alice's group
        image = conn.getObject("Image", 3)
        assert (image.getName(), image.getSizeX(), image.getSizeY()) == (
            "unpublished.tif",
            512,
            512,
        )
        jpeg = image.getThumbnail(size=(200,), direct=False)
        from PIL import Image as Canvas

        assert Canvas.open(io.BytesIO(jpeg)).size == (200, 200)
        assert image.getThumbnail(size=(200,), direct=False) == jpeg  # the same picture each time
    finally:
        conn.close()
    public = BlitzGateway(
        "public", omero_sim.users["public"], host=omero_sim.host, port=omero_sim.ssl_port
    )
    assert public.connect()
    try:
        assert public.getObject("Image", 3) is None
        wide = public.getObject("Image", 1)  # 512 x 384
        assert Canvas.open(io.BytesIO(wide.getThumbnail(size=(96,)))).size == (96, 72)
    finally:
        public.close()


def test_blitz_gateway_connects_and_moves_to_the_insecure_router(
    omero_sim: OmeroSim,
) -> None:
    conn = BlitzGateway(
        "carol", omero_sim.users["carol"], host=omero_sim.host, port=omero_sim.ssl_port
    )
    try:
        assert conn.connect(), conn.getLastError()
        ctx = conn.getEventContext()
        assert ctx.userName == "carol"
        assert len(ctx.memberOfGroups) == 3
        assert not conn.isSecure()  # OMERO's omero.router.insecure: the sim's TCP port
    finally:
        conn.close(hard=True)
    assert omero_sim.stats()["sessions_active"] == 0


def test_down_refuses_connections_and_up_serves_the_surviving_sessions(
    omero_sim: OmeroSim,
    clients: Callable[..., Any],
) -> None:
    first = clients()
    first.createSession("alice", omero_sim.users["alice"])
    key = first.getSessionId()
    first.getSession().detachOnDestroy()
    omero_sim.down()
    with pytest.raises(Ice.ConnectionRefusedException):
        clients().createSession("bob", omero_sim.users["bob"])
    omero_sim.up()
    assert clients().joinSession(key).getAdminService().getEventContext().userName == "alice"


def test_slow_server_trips_the_client_invocation_timeout(
    omero_sim: OmeroSim,
    clients: Callable[..., Any],
) -> None:
    sf = clients().createSession("alice", omero_sim.users["alice"])
    admin = sf.getAdminService().ice_invocationTimeout(100)
    omero_sim.slow(1.0)
    with pytest.raises(Ice.InvocationTimeoutException):
        admin.getEventContext()
    omero_sim.slow(0)


def test_hung_server_trips_the_client_connect_timeout(
    omero_sim: OmeroSim,
    clients: Callable[..., Any],
) -> None:
    omero_sim.hang()
    client = clients(True, "--Ice.Override.ConnectTimeout=200")
    with pytest.raises(omero.ClientError):  # after 3 tries, each an Ice ConnectTimeout
        client.createSession("alice", omero_sim.users["alice"])
    omero_sim.up()
    assert omero_sim.stats()["calls"].get("Router.createSession", 0) == 0


def test_a_private_server_has_its_own_ports_sessions_and_idle_timeout(
    omero_sim: OmeroSim,
    omero_sim_factory: Callable[..., OmeroSim],
) -> None:
    private = omero_sim_factory(idle_timeout=42.0)
    client = omero.client(host=private.tcp_url)
    try:
        client.createSession("guest", private.users["guest"])
        (session,) = private.sessions()
    finally:
        client.__del__()
    assert private.tcp_port not in (omero_sim.tcp_port, omero_sim.ssl_port)
    assert (session["user"], session["time_to_idle"]) == ("guest", 42.0)
    assert omero_sim.stats()["sessions_created"] == 0
