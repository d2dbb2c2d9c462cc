"""Porter's OMERO backend: async calls to the servers of server_list.

omero-py blocks, so every call runs in one bounded thread pool (`pool_size` threads; further
calls queue) and never on the event loop. A caller waits at most `call_timeout` seconds,
queueing included, then gets ServerUnavailable; Ice's own timeouts free the thread soon after.
Errors are auth.omero_errors only (see its docstring for the tree).

    backend = OmeroBackend(settings.omero)
    login = await backend.login(1, "alice", "secret", client_ip="192.0.2.7")
    ...
    await backend.aclose()
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from types import TracebackType
from typing import Any, TypeVar

from auth import omero_ice
from auth.omero_errors import (
    InvalidCredentials,
    OmeroError,
    PermissionDenied,
    ServerUnavailable,
    SessionGone,
)
from auth.omero_ice import IceConfig, OmeroLogin
from auth.omero_settings import OmeroSettings
from auth.servers import Server, ServerList
from auth.single_flight import SingleFlight

__all__ = ["OmeroBackend", "OmeroLogin"]

log = logging.getLogger("porter.auth.omero")
T = TypeVar("T")


class OmeroBackend:
    """Log in, join, keep alive and close OMERO sessions; `servers` is the server_list.

    `server` arguments take a server_list id (int or decimal string) or a name; an unknown
    one raises UnknownServer at once.
    """

    def __init__(self, settings: OmeroSettings) -> None:
        self.settings = settings
        self.servers = ServerList.from_entries(settings.server_list)
        self._config = IceConfig.for_timeout(settings.call_timeout, settings.user_agent)
        self._pool = ThreadPoolExecutor(settings.pool_size, thread_name_prefix="porter-omero")
        self._admin_keys: dict[int, str] = {}  # server id -> the held admin session (SSO)
        self._admin_logins: SingleFlight[int, str] = SingleFlight("admin login")
        # told of every call's outcome per server (porter's outage mail): reached, or not
        self.on_reached: Callable[[int], None] | None = None
        self.on_unreachable: Callable[[int, str], None] | None = None

    async def login(
        self, server: int | str, username: str, password: str, client_ip: str | None = None
    ) -> OmeroLogin:
        """A new OMERO session for that user. `client_ip` is recorded on the session.

        Empty user name or password: InvalidCredentials without contacting the server."""
        target = self.servers.get(server)
        if not username or not password:
            raise InvalidCredentials(
                f"server {target.id}: empty user name or password", server_id=target.id
            )
        abandoned = threading.Event()
        return await self._run(
            "login",
            target,
            omero_ice.login,
            self._config,
            target,
            username,
            password,
            client_ip,
            abandoned,
            abandoned=abandoned,
        )

    async def join(self, server: int | str, key: str) -> OmeroLogin:
        """Who owns an existing session key; SessionGone when it has ended."""
        target = self.servers.get(server)
        if not key:
            raise SessionGone(f"server {target.id}: empty session key", server_id=target.id)
        return await self._run("join", target, omero_ice.join, self._config, target, key)

    async def keep_alive(self, server: int | str, key: str) -> bool:
        """Mark the session as used; False when it has ended, ServerUnavailable when the
        server cannot tell."""
        target = self.servers.get(server)
        try:
            return await self._run(
                "keep_alive", target, omero_ice.keep_alive, self._config, target, key
            )
        except SessionGone:
            return False

    async def close(self, server: int | str, key: str) -> None:
        """End the session on the server (all its references); a no-op when already gone."""
        target = self.servers.get(server)
        with contextlib.suppress(SessionGone):
            await self._run("close", target, omero_ice.close, self._config, target, key)

    async def create_session_for(
        self,
        server: int | str,
        username: str,
        ttl_ms: int,
        tti_ms: int,
        client_ip: str | None = None,
        group: str | None = None,
    ) -> OmeroLogin:
        """As the configured admin_user, a new session for `username` (no password) with
        time-to-live and time-to-idle in milliseconds (0: the server's default), in OMERO
        group `group` (None: the user's default group). For SSO.

        The admin's own session is held, one per server (created with single-flight, kept
        alive by `keep_admin_alive`, re-created once when it has ended)."""
        target = self.servers.get(server)
        if not username:
            raise InvalidCredentials(f"server {target.id}: empty user name", server_id=target.id)
        if ttl_ms < 0 or tti_ms < 0:
            raise ValueError("ttl_ms and tti_ms must be >= 0")
        for attempt in (1, 2):
            admin_key = await self._admin_key(target)
            abandoned = threading.Event()
            try:
                return await self._run(
                    "create_session_for",
                    target,
                    omero_ice.create_session_for,
                    self._config,
                    target,
                    admin_key,
                    username,
                    ttl_ms,
                    tti_ms,
                    client_ip,
                    abandoned,
                    group,
                    abandoned=abandoned,
                )
            except SessionGone:
                self._admin_keys.pop(target.id, None)
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    async def _admin_key(self, target: Server) -> str:
        key = self._admin_keys.get(target.id)
        if key is not None:
            return key
        return await self._admin_logins.run(target.id, lambda: self._admin_login(target))

    async def _admin_login(self, target: Server) -> str:
        admin, password = self.settings.admin_user, self.settings.admin_password
        if not admin or not password:
            raise PermissionDenied(
                f"server {target.id}: [omero] admin_user is not set", server_id=target.id
            )
        login: OmeroLogin | None = None
        with contextlib.suppress(InvalidCredentials):  # raised below, without its context
            login = await self.login(target.id, admin, password)
        if login is None:
            raise PermissionDenied(
                f"server {target.id}: the configured admin_user was refused; check [omero] "
                "admin_user and admin_password",
                server_id=target.id,
            )
        self._admin_keys[target.id] = login.session_key
        return login.session_key

    async def keep_admin_alive(self) -> None:
        """Keep the held admin sessions alive (a gone one is re-created on next use)."""
        for server_id, key in list(self._admin_keys.items()):
            try:
                alive = await self.keep_alive(server_id, key)
            except ServerUnavailable:
                continue
            if not alive and self._admin_keys.get(server_id) == key:
                del self._admin_keys[server_id]

    async def server_version(self, server: int | str) -> str:
        """The server's version string (read through a guest session, as OMERO.web does)."""
        target = self.servers.get(server)
        return await self._run(
            "server_version", target, omero_ice.server_version, self._config, target
        )

    async def reset_password(self, server: int | str, username: str, email: str) -> bool:
        """Ask the server to mail a new password (see omero_ice.reset_password)."""
        target = self.servers.get(server)
        return await self._run(
            "reset_password",
            target,
            omero_ice.reset_password,
            self._config,
            target,
            username,
            email,
        )

    async def _run(
        self,
        op: str,
        server: Server,
        call: Callable[..., T],
        *args: Any,
        abandoned: threading.Event | None = None,
    ) -> T:
        loop = asyncio.get_running_loop()
        work = functools.partial(omero_ice.translated, op, server, call, *args)
        future = loop.run_in_executor(self._pool, work)
        timeout = self.settings.call_timeout
        try:
            result = await asyncio.wait_for(future, timeout)
        except asyncio.TimeoutError:
            if abandoned is not None:
                abandoned.set()  # a login finishing late closes its session
            log.info("OMERO %s on server %d: no answer within %g s", op, server.id, timeout)
            why = f"server {server.id} ({server.address}) did not answer within {timeout:g} s"
            self._told(server.id, why)
            raise ServerUnavailable(why, server_id=server.id) from None
        except ServerUnavailable as exc:
            self._told(server.id, str(exc))
            raise
        except OmeroError:  # it answered (with an error of its own): reachable
            self._told(server.id, None)
            raise
        except asyncio.CancelledError:
            if abandoned is not None:
                abandoned.set()
            raise
        self._told(server.id, None)
        return result

    def _told(self, server_id: int, unreachable: str | None) -> None:
        if unreachable is None:
            if self.on_reached is not None:
                self.on_reached(server_id)
        elif self.on_unreachable is not None:
            self.on_unreachable(server_id, unreachable)

    async def aclose(self) -> None:
        """Stop the pool: queued calls are dropped, running ones finish (bounded by Ice's
        timeouts) without blocking the event loop. Held admin sessions are closed first."""
        await self._admin_logins.close()
        for server_id, key in list(self._admin_keys.items()):
            with contextlib.suppress(OmeroError):
                await self.close(server_id, key)
        self._admin_keys.clear()
        loop = asyncio.get_running_loop()
        done = loop.create_future()

        def stop() -> None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            loop.call_soon_threadsafe(done.set_result, None)

        # its own short-lived thread: the loop's default executor would keep a thread alive
        stopper = threading.Thread(target=stop, name="porter-omero-stop", daemon=True)
        stopper.start()
        await done
        stopper.join()

    async def __aenter__(self) -> OmeroBackend:
        return self

    async def __aexit__(
        self,
        _exc_type: type[BaseException] | None,
        _exc: BaseException | None,
        _tb: TracebackType | None,
    ) -> None:
        await self.aclose()
