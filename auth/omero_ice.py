"""The Ice side of the OMERO backend: blocking omero-py calls, run in the backend's threads.

Every call builds its own omero.client and releases it in `finally` (communicator destroyed,
so no Ice thread or socket outlives the call), and every Ice or omero-py exception is
translated here, in `translate`, into auth.omero_errors. Nothing else in porter imports Ice.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

import Ice
import omero
import omero.clients
import omero.cmd
import omero.constants
import omero.model
import omero.rtypes
import omero.sys

# Never a plain `import Glacier2` before omero.clients: zeroc-ice 3.6's Glacier2.py would
# replace Glacier2.SessionNotExistException with a plain class that omero-py no longer catches.
from omero.clients import Glacier2

from auth.omero_errors import (
    GroupRefused,
    InvalidCredentials,
    OmeroError,
    OtherOmeroError,
    PermissionDenied,
    ServerUnavailable,
    SessionGone,
)
from auth.servers import Server
from porter_errors import Internal

T = TypeVar("T")

# A join adds one reference; closing drops them all, bounded in case a server misbehaves.
_MAX_CLOSE_REFERENCES = 1000


@dataclass(frozen=True)
class OmeroLogin:
    """An OMERO session and who it belongs to. repr() never shows the session key."""

    session_key: str = field(repr=False)
    user_id: int
    user_name: str
    group_id: int
    group_name: str
    is_admin: bool
    server_id: int


@dataclass(frozen=True)
class IceConfig:
    """What every call needs besides its server: client properties and the user agent."""

    properties: Mapping[str, str]
    agent: str

    @classmethod
    def for_timeout(cls, timeout: float, agent: str) -> IceConfig:
        ms = str(max(1, int(timeout * 1000)))
        return cls(
            {
                "Ice.Override.ConnectTimeout": ms,  # connection set-up to a dead host
                "Ice.Default.InvocationTimeout": ms,  # a reply that never comes frees the thread
                "Ice.Override.CloseTimeout": ms,  # closing a connection to a silent server
            },
            agent,
        )


@contextmanager
def _client(config: IceConfig, server: Server, ip: str | None = None) -> Iterator[Any]:
    """A fresh omero.client for `server`; its session is closed (or only detached, when the
    caller called detachOnDestroy) and its communicator destroyed on exit."""
    client = omero.client(host=server.host, port=server.port, pmap=dict(config.properties))
    communicator = client.getCommunicator()
    try:
        client.setAgent(config.agent)
        if ip:
            client.setIP(ip)
        yield client
    finally:
        with contextlib.suppress(Exception):  # the server is gone or slow: nothing to end
            client.closeSession()
        communicator.destroy()  # closeSession destroys it too, unless it failed half-way


def _login_of(client: Any, server: Server) -> OmeroLogin:
    ec = client.getSession().getAdminService().getEventContext()
    return OmeroLogin(
        client.getSessionId(),
        ec.userId,
        ec.userName,
        ec.groupId,
        ec.groupName,
        bool(ec.isAdmin) or bool(getattr(ec, "adminPrivileges", None)),  # light admins too
        server.id,
    )


def login(
    config: IceConfig,
    server: Server,
    username: str,
    password: str,
    ip: str | None,
    abandoned: threading.Event,
) -> OmeroLogin:
    """Log in; the new session stays open on the server unless the caller gave up."""
    with _client(config, server, ip) as client:
        session = client.createSession(username, password)
        result = _login_of(client, server)
        if not abandoned.is_set():
            session.detachOnDestroy()
        return result


def join(config: IceConfig, server: Server, key: str) -> OmeroLogin:
    """The event context of an existing session (joined, then detached: left as found)."""
    with _client(config, server) as client:
        session = client.joinSession(key)
        result = _login_of(client, server)
        session.detachOnDestroy()
        return result


def keep_alive(config: IceConfig, server: Server, key: str) -> bool:
    """Mark the session as used now (SessionGone when it has ended)."""
    with _client(config, server) as client:
        session = client.joinSession(key)
        session.keepAlive(None)
        session.detachOnDestroy()
        return True


def close(config: IceConfig, server: Server, key: str) -> None:
    """End the session on the server, whoever else holds it (OMERO.web's joins included)."""
    with _client(config, server) as client:
        service = client.joinSession(key).getSessionService()
        target = omero.model.SessionI()
        target.uuid = omero.rtypes.rstring(key)
        try:
            for _ in range(_MAX_CLOSE_REFERENCES):
                if service.closeSession(target) <= 0:
                    break
        except omero.RemovedSessionException:
            pass  # already ended: that is what we wanted


def create_session_for(
    config: IceConfig,
    server: Server,
    admin_key: str,
    username: str,
    ttl_ms: int,
    tti_ms: int,
    ip: str | None,
    abandoned: threading.Event,
    group: str | None = None,
) -> OmeroLogin:
    """Through the admin's held session `admin_key`, a new session for `username` without
    its password, in `group` when given (None: the user's default group). _AdminGone when
    the admin session has ended."""
    context = {omero.constants.AGENT: config.agent}
    if ip:
        context[omero.constants.IP] = ip
    with _client(config, server, ip) as admin_client:
        try:
            admin_session = admin_client.joinSession(admin_key)
        except (Glacier2.PermissionDeniedException, Glacier2.CannotCreateSessionException):
            raise _AdminGone() from None
        # the admin session stays, held by the backend, whatever happens below (an unknown
        # user or a refused group must not end it)
        admin_session.detachOnDestroy()
        principal = omero.sys.Principal()
        principal.name = username
        principal.eventType = "User"
        if group:
            # OMERO itself does not check that the user is in the group the session is made
            # in (SessionManagerImpl.validateSessionInputs); its later calls would fail
            if group not in _group_names(admin_session, username):
                raise GroupRefused(
                    f"server {server.id}: the user is not a member of that group",
                    server_id=server.id,
                )
            principal.group = group
        created = admin_session.getSessionService().createSessionWithTimeouts(
            principal, ttl_ms, tti_ms, context
        )
        key = created.getUuid().getValue()
    result = join(config, server, key)
    if abandoned.is_set():  # nobody will use or close it
        close(config, server, key)
    return result


def _group_names(admin_session: Any, username: str) -> set[str]:
    """The names of the groups `username` is a member of (ApiUsageException: no such user)."""
    user = admin_session.getAdminService().lookupExperimenter(username)
    names = set()
    for group in user.linkedExperimenterGroupList():
        name = group.getName() if group is not None and group.isLoaded() else None
        if name is not None:
            names.add(name.getValue())
    return names


def server_version(config: IceConfig, server: Server) -> str:
    """The server's version, read as OMERO.web does: through a guest session."""
    with _client(config, server) as client:
        return str(client.createSession("guest", "guest").getConfigService().getVersion())


RESET_WAIT = 0.1  # seconds between polls of a ResetPasswordRequest's handle


def reset_password(config: IceConfig, server: Server, username: str, email: str) -> bool:
    """Ask the server to mail `username` a new password, as OMERO.web's forgotten-password
    view does: a ResetPasswordRequest through a guest session. True when the server did it
    (the name and address matched an account); the caller tells the user the same either way.
    """
    with _client(config, server) as client:
        handle = client.createSession("guest", "guest").submit(
            omero.cmd.ResetPasswordRequest(username, email)
        )
        try:
            while (response := handle.getResponse()) is None:  # bounded by the caller's timeout
                time.sleep(RESET_WAIT)
        finally:
            with contextlib.suppress(Exception):
                handle.close()
        return not isinstance(response, omero.cmd.ERR)


class _AdminGone(Internal):
    """The admin session the backend held has ended; the backend logs in again."""


# -- the one translation of Ice and omero-py exceptions ---------------------------------------

_UNAVAILABLE = (
    Ice.SocketException,
    Ice.TimeoutException,
    Ice.DNSException,
    Ice.ProtocolException,
    Ice.SecurityException,
)
_GONE = (
    omero.RemovedSessionException,
    omero.SessionTimeoutException,
    Glacier2.SessionNotExistException,
    Ice.ObjectNotExistException,
)
_CREATE_REFUSED = (Glacier2.PermissionDeniedException, Glacier2.CannotCreateSessionException)


def _type_name(exc: BaseException) -> str:
    return f"{type(exc).__module__}.{type(exc).__qualname__}"


def translate(exc: BaseException, op: str, server: Server) -> OmeroError | None:
    """The auth.omero_errors value for an exception raised during `op`; None when it is not an
    Ice/omero-py exception (a bug: let it propagate). Never includes the exception's text,
    which may hold a session key (Ice identities are named by it)."""
    where = f"server {server.id} ({server.address})"
    kind = _type_name(exc)
    if isinstance(exc, _AdminGone):
        return SessionGone(f"{where}: the held admin session has ended", server_id=server.id)
    if isinstance(exc, omero.WrappedCreateSessionException) and exc.concurrency:
        return ServerUnavailable(f"{where} is busy ({kind})", server_id=server.id, ice_type=kind)
    if isinstance(exc, _CREATE_REFUSED):
        if op == "login":
            return InvalidCredentials(
                f"{where} refused the user name and password", server_id=server.id, ice_type=kind
            )
        return SessionGone(f"{where} has no such session", server_id=server.id, ice_type=kind)
    if isinstance(exc, _UNAVAILABLE) or (
        isinstance(exc, omero.ClientError) and "null object" in str(exc)  # connect retries
    ):
        return ServerUnavailable(
            f"{where} is unavailable ({kind})", server_id=server.id, ice_type=kind
        )
    if isinstance(exc, Ice.ObjectNotExistException) and op in ("login", "server_version"):
        return OtherOmeroError(
            f"{where} has no OMERO router ({kind})", server_id=server.id, ice_type=kind
        )
    if isinstance(exc, _GONE):
        return SessionGone(
            f"{where}: the session has ended ({kind})", server_id=server.id, ice_type=kind
        )
    if isinstance(exc, omero.SecurityViolation):
        if op == "login":
            return InvalidCredentials(
                f"{where} refused the login ({kind})", server_id=server.id, ice_type=kind
            )
        return PermissionDenied(
            f"{where} refused the operation ({kind})", server_id=server.id, ice_type=kind
        )
    if isinstance(exc, omero.ApiUsageException) and op == "create_session_for":
        return InvalidCredentials(
            f"{where} does not know that user ({kind})", server_id=server.id, ice_type=kind
        )
    if isinstance(exc, (Ice.Exception, omero.ClientError)):
        return OtherOmeroError(f"{where}: {op} failed ({kind})", server_id=server.id, ice_type=kind)
    return None


def translated(op: str, server: Server, call: Callable[..., T], *args: Any) -> T:
    """Run `call(*args)`, raising only auth.omero_errors for Ice failures; the Ice exception is not
    chained (its text and frames may hold a key or password)."""
    try:
        return call(*args)
    except Exception as exc:
        error = translate(exc, op, server)
        if error is None:
            raise
        failure: OmeroError = error
    raise failure  # outside the except block: no implicit __context__ either
