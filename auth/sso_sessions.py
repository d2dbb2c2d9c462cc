"""One OMERO session per (server, SSO user), made by the admin and reused until it ends.

Never one OMERO session per request: the first request of a user creates it (single-flight,
through `OmeroBackend.create_session_for` with the configured time-to-live and time-to-idle),
hands it to OMERO.web once, and every later request of that user reuses both. When OMERO.web or
OMERO says it has ended, `invalidate` drops it and the next request makes a new one. Entries
live at most `ttl` seconds in porter (OMERO itself ends the session at its time-to-live, or after
time-to-idle without use); at most `max_users` are held, the least recently used dropped first.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from cachetools import TTLCache

import metrics
from auth.errors import AdminRefused, OmeroError
from auth.omero_backend import OmeroBackend
from auth.omero_ice import OmeroLogin
from auth.single_flight import SingleFlight

log = logging.getLogger("porter.auth.sso")

Handoff = Callable[[int, str], Awaitable[Mapping[str, str]]]


@dataclass(frozen=True)
class SsoLogin:
    """The OMERO session of one SSO user and the OMERO.web cookies held for it."""

    server_id: int
    user_name: str
    session_key: str = field(repr=False)
    cookies: Mapping[str, str] = field(repr=False, default_factory=dict)


class SsoSessions:
    def __init__(
        self,
        backend: OmeroBackend,
        handoff: Handoff,
        *,
        ttl: float,
        tti: float,
        allowed_admins: frozenset[str] = frozenset(),
        max_users: int = 10_000,
    ) -> None:
        """`allowed_admins`: user names (casefolded) let in although OMERO says they are
        admins; every other admin is refused."""
        self._backend = backend
        self._allowed_admins = frozenset(name.casefold() for name in allowed_admins)
        self._handoff = handoff
        self._ttl_ms = int(ttl * 1000)
        self._tti_ms = int(tti * 1000)
        # Forget a little before OMERO's time-to-live, so porter never hands out an ended one.
        self._held: TTLCache[tuple[int, str], SsoLogin] = TTLCache(
            maxsize=max_users, ttl=max(1.0, ttl * 0.95)
        )
        self._creations: SingleFlight[tuple[int, str], SsoLogin] = SingleFlight("SSO session")
        self._closing: set[asyncio.Task[None]] = set()
        self.created = 0  # OMERO sessions made (for tests and benchmarks)

    async def get(self, server_id: int, user_name: str, client_ip: str | None) -> SsoLogin:
        """The held session of that user, or a new one (one creation at a time per user)."""
        key = (server_id, user_name)
        held = self._held.get(key)
        if held is not None:
            return held
        return await self._creations.run(key, lambda: self._create(server_id, user_name, client_ip))

    async def new_session(
        self, server_id: int, user_name: str, client_ip: str | None
    ) -> OmeroLogin:
        """A new OMERO session of `user_name` (not held), unless OMERO says that user has
        admin privileges and is not allowed by name: then it is closed and AdminRefused."""
        login = await self._backend.create_session_for(
            server_id, user_name, self._ttl_ms, self._tti_ms, client_ip=client_ip
        )
        if login.is_admin and login.user_name.casefold() not in self._allowed_admins:
            await asyncio.shield(self._close_quietly(login))
            log.warning(
                "SSO refused user=%s server=%d: OMERO admin, not in allow_admin_accounts",
                login.user_name,
                server_id,
            )
            raise AdminRefused(
                f"server {server_id}: OMERO admins cannot sign in by SSO", server_id=server_id
            )
        return login

    async def _close_quietly(self, login: OmeroLogin | SsoLogin) -> None:
        with contextlib.suppress(OmeroError):
            await self._backend.close(login.server_id, login.session_key)
            metrics.OMERO_SESSIONS_CLOSED.labels("sso").inc()

    async def _create(self, server_id: int, user_name: str, client_ip: str | None) -> SsoLogin:
        login = await self.new_session(server_id, user_name, client_ip)
        try:
            cookies = await self._handoff(login.server_id, login.session_key)
        except BaseException:  # cancelled at shutdown too: the session made is still closed
            await asyncio.shield(self._close_quietly(login))
            raise
        self.created += 1
        made = SsoLogin(
            login.server_id, login.user_name, login.session_key, MappingProxyType(dict(cookies))
        )
        self._held[(server_id, user_name)] = made
        log.info("SSO session created user=%s server=%d", user_name, server_id)
        metrics.OMERO_SESSIONS_CREATED.labels("sso").inc()
        return made

    def invalidate(self, login: SsoLogin) -> None:
        """Drop `login` if it is still the held one (OMERO.web or OMERO no longer knows it)."""
        key = (login.server_id, login.user_name)
        held = self._held.get(key)
        if held is not None and held.session_key == login.session_key:
            del self._held[key]
            # OMERO.web may only have lost its cookie: end the OMERO session too, off the
            # request path, so no session is left until its time-to-idle
            task = asyncio.create_task(self._close_quietly(login))
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)

    async def close(self) -> None:
        """Cancel the creations in flight (a session they made is closed), then close every
        held session on its server (at shutdown)."""
        await self._creations.close()
        await asyncio.gather(*self._closing, return_exceptions=True)
        held = list(self._held.values())
        self._held.clear()
        for login in held:
            with contextlib.suppress(OmeroError):
                await self._backend.close(login.server_id, login.session_key)
                metrics.OMERO_SESSIONS_CLOSED.labels("sso").inc()
