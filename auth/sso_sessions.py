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
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from cachetools import TTLCache
from redis.asyncio import Redis

import metrics
from auth.omero_backend import OmeroBackend
from auth.omero_errors import AdminRefused, GroupRefused, OmeroError, ServerUnavailable
from auth.omero_ice import OmeroLogin
from auth.session_store import SessionStoreUnavailable
from auth.shared_slots import Handoff, SharedSlots
from auth.single_flight import SingleFlight
from auth.store_seal import StoreSeal

log = logging.getLogger("porter.auth.sso")


@dataclass(frozen=True)
class SsoLogin:
    """The OMERO session of one SSO user and the OMERO.web cookies held for it."""

    server_id: int
    user_name: str
    session_key: str = field(repr=False)
    cookies: Mapping[str, str] = field(repr=False, default_factory=dict)
    group: str | None = None  # the OMERO group asked for (None: the user's default)


_MAX_POLL = 0.2


class SharedSsoSessions:
    """The SSO sessions in Redis, shared by every porter process: one slot per (server,
    user) with its OMERO.web cookies, and the lock its one creator holds."""

    def __init__(
        self, redis: Redis, prefix: str, ttl: float, create_timeout: float, seal: StoreSeal
    ) -> None:
        self._slots = SharedSlots(redis, "SSO sessions", seal)
        self._prefix = prefix + "sso:"
        self._ttl = ttl
        self.create_timeout = create_timeout

    def _key(self, key: SlotKey) -> str:
        server_id, user, group = key
        # a user's session in another group is another session
        return f"{self._prefix}{server_id}:{user}" + (f"\x00{group}" if group else "")

    async def read(self, key: SlotKey) -> SsoLogin | None:
        found = await self._slots.read(self._key(key))
        return None if found is None else SsoLogin(key[0], key[1], found[0], found[1], key[2])

    async def write(self, login: SsoLogin) -> None:
        key = self._key(_slot(login))
        await self._slots.write(key, login.session_key, login.cookies, self._ttl)

    async def lock(self, key: SlotKey, token: str) -> bool:
        return await self._slots.lock(self._key(key), token, self.create_timeout)

    async def unlock(self, key: SlotKey, token: str) -> None:
        await self._slots.unlock(self._key(key), token)

    async def drop(self, login: SsoLogin) -> bool:
        """Delete the slot if it still names `login`'s session; True if it did."""
        return await self._slots.drop(self._key(_slot(login)), login.session_key)


SlotKey = tuple[int, str, str | None]  # server id, user name, group


def _slot(login: SsoLogin) -> SlotKey:
    return (login.server_id, login.user_name, login.group)


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
        shared: SharedSsoSessions | None = None,
        recheck: float = 5.0,
    ) -> None:
        """`allowed_admins`: user names (casefolded) let in although OMERO says they are
        admins; every other admin is refused. With `shared` (the Redis store), every porter
        process uses the same session of a user; this process keeps its copy `recheck`
        seconds before reading the shared entry again."""
        self._backend = backend
        self._allowed_admins = frozenset(name.casefold() for name in allowed_admins)
        self._handoff = handoff
        self._ttl_ms = int(ttl * 1000)
        self._tti_ms = int(tti * 1000)
        # Forget a little before OMERO's time-to-live, so porter never hands out an ended one.
        self._held: TTLCache[SlotKey, SsoLogin] = TTLCache(
            maxsize=max_users, ttl=max(1.0, ttl * 0.95) if shared is None else recheck
        )
        self._shared = shared
        self._token = secrets.token_hex(16)  # this process, as lock owner
        self._creations: SingleFlight[SlotKey, SsoLogin] = SingleFlight("SSO session")
        self._closing: set[asyncio.Task[None]] = set()

    async def get(
        self, server_id: int, user_name: str, client_ip: str | None, group: str | None = None
    ) -> SsoLogin:
        """The held session of that user in that group (None: the user's default group), or
        a new one (one creation at a time per user and group)."""
        key = (server_id, user_name, group)
        held = self._held.get(key)
        if held is not None:
            return held
        if self._shared is not None:
            shared = self._shared
            return await self._creations.run(key, lambda: self._get_shared(shared, key, client_ip))
        return await self._creations.run(key, lambda: self._create(key, client_ip))

    async def _get_shared(
        self, shared: SharedSsoSessions, key: SlotKey, client_ip: str | None
    ) -> SsoLogin:
        """The shared session of that user, or a new one made under the shared lock, or the
        one another process is making (waited for)."""
        deadline = time.monotonic() + shared.create_timeout
        delay = 0.01
        while True:
            found = await shared.read(key)
            if found is None and await shared.lock(key, self._token):
                try:
                    found = await shared.read(key)
                    if found is None:
                        found = await self._create(key, client_ip)
                        await shared.write(found)
                finally:
                    with contextlib.suppress(SessionStoreUnavailable):
                        await shared.unlock(key, self._token)
            if found is not None:
                self._held[key] = found
                return found
            if time.monotonic() >= deadline:
                raise ServerUnavailable(
                    f"server {key[0]}: the SSO session of a user was not made within "
                    f"{shared.create_timeout:g} s by another porter process",
                    server_id=key[0],
                )
            await asyncio.sleep(delay)
            delay = min(delay * 2, _MAX_POLL)

    async def new_session(
        self, server_id: int, user_name: str, client_ip: str | None, group: str | None = None
    ) -> OmeroLogin:
        """A new OMERO session of `user_name` (not held) in `group` (None: the user's
        default group). AdminRefused when OMERO says that user has admin privileges and is
        not allowed by name, GroupRefused when the user is not a member of `group`; a session
        made is closed then."""
        try:
            login = await self._backend.create_session_for(
                server_id, user_name, self._ttl_ms, self._tti_ms, client_ip=client_ip, group=group
            )
        except GroupRefused:
            raise self._group_refused(server_id, user_name, group or "") from None
        metrics.OMERO_SESSIONS_CREATED.labels("sso").inc()
        if group is not None and login.group_name != group:
            # a server may also fall back to the default group: that is not what was asked
            await asyncio.shield(self._close_quietly(login))
            raise self._group_refused(server_id, user_name, group)
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

    @staticmethod
    def _group_refused(server_id: int, user_name: str, group: str) -> GroupRefused:
        log.warning(
            "SSO refused user=%s server=%d: not a member of group %s", user_name, server_id, group
        )
        return GroupRefused(
            f"server {server_id}: the user is not a member of that group", server_id=server_id
        )

    async def _close_quietly(self, login: OmeroLogin | SsoLogin) -> None:
        with contextlib.suppress(OmeroError):
            await self._backend.close(login.server_id, login.session_key)
            metrics.OMERO_SESSIONS_CLOSED.labels("sso").inc()

    async def _create(self, key: SlotKey, client_ip: str | None) -> SsoLogin:
        server_id, user_name, group = key
        login = await self.new_session(server_id, user_name, client_ip, group)
        try:
            cookies = await self._handoff(login.server_id, login.session_key)
        except BaseException:  # cancelled at shutdown too: the session made is still closed
            await asyncio.shield(self._close_quietly(login))
            raise
        made = SsoLogin(
            login.server_id,
            login.user_name,
            login.session_key,
            MappingProxyType(dict(cookies)),
            group,
        )
        self._held[key] = made
        log.info("SSO session created user=%s server=%d", user_name, server_id)
        return made

    async def invalidate(self, login: SsoLogin) -> None:
        """Drop `login` if it is still the held one (OMERO.web or OMERO no longer knows it);
        with the shared entries, in every process."""
        key = _slot(login)
        held = self._held.get(key)
        if held is not None and held.session_key == login.session_key:
            del self._held[key]
        elif self._shared is None:
            return
        if self._shared is None or await self._shared.drop(login):
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
        if self._shared is not None:
            return  # shared with other processes: OMERO ends them at their time-to-idle
        for login in held:
            with contextlib.suppress(OmeroError):
                await self._backend.close(login.server_id, login.session_key)
                metrics.OMERO_SESSIONS_CLOSED.labels("sso").inc()
