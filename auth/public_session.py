"""The shared public session: one OMERO session per public server for all anonymous traffic.

    public = PublicSession(backend, settings.public, handoff, redis=None)
    login = await public.get(1)          # .session_key, .cookies (OMERO.web's, for upstream)
    await public.invalidate(1, login.session_key)   # OMERO.web or OMERO said it is gone
    await public.keep_alive()            # the keepalive job, every ping_interval
    await public.close()                 # at shutdown

The session is created on first need, once however many callers wait (single-flight), and
handed to OMERO.web once through the injected `handoff`. A failed creation is remembered for
`failure_backoff` seconds: callers get the same error at once instead of retrying.

With a Redis client, porter processes share one session per server, under the key prefix P:
  P public:<id>           hash: "key" (the OMERO session key), "c:<name>" (OMERO.web cookies)
  P public:<id>:lock      who is creating it (SET NX PX, a random token, compare-and-delete)
  P public:<id>:holders   set of process tokens using it; the last one to close() closes it
Give it a client with bounded timeouts and retries (as RedisSessionStore.from_settings builds):
while Redis cannot answer, a held session is kept and used.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import logging
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from redis.asyncio import Redis

import metrics
from auth.omero_backend import OmeroBackend
from auth.omero_errors import HandoffFailed, OmeroError, ServerUnavailable, SessionGone
from auth.public_settings import PublicSessionSettings
from auth.session_store import SessionStoreUnavailable, redis_errors
from auth.shared_slots import Handoff, SharedSlots, text
from auth.single_flight import SingleFlight
from auth.store_seal import StoreSeal

__all__ = ["PublicLogin", "PublicSession", "SharedPublicEntries"]

log = logging.getLogger("porter.auth.public")


_MAX_POLL = 0.25  # seconds between looks at Redis while another process creates the session
_MAX_DEAD = 64  # keys remembered per server as dropped while Redis was unreachable

_LEAVE = """
redis.call('SREM', KEYS[2], ARGV[1])
if redis.call('SCARD', KEYS[2]) > 0 then return false end
local key = redis.call('HGET', KEYS[1], 'key')
redis.call('DEL', KEYS[1])
return key
"""


@dataclass(frozen=True)
class PublicLogin:
    """The public session of one server: the OMERO key and OMERO.web's cookies for it.

    repr() shows neither."""

    server_id: int
    session_key: str = field(repr=False)
    cookies: Mapping[str, str] = field(repr=False)


@dataclass
class _Held:
    login: PublicLogin
    checked: float  # when this copy was last read from (or written to) Redis


@dataclass(frozen=True)
class _Failure:
    error: OmeroError | HandoffFailed
    until: float


def _again(error: OmeroError | HandoffFailed) -> OmeroError | HandoffFailed:
    """A fresh copy, so concurrent callers do not share one traceback."""
    fresh = copy.copy(error)
    fresh.__traceback__ = None
    return fresh


class SharedPublicEntries:
    """The Redis side: the shared entry and its creation lock (auth/shared_slots.py), and
    the set of processes holding it."""

    def __init__(self, redis: Redis, prefix: str, seal: StoreSeal) -> None:
        self._slots = SharedSlots(redis, "public session store", seal)
        self._redis = redis
        self._prefix = prefix
        self._leave = redis.register_script(_LEAVE)

    def _key(self, server_id: int, suffix: str = "") -> str:
        return f"{self._prefix}public:{server_id}{suffix}"

    async def read(self, server_id: int) -> PublicLogin | None:
        found = await self._slots.read(self._key(server_id))
        return None if found is None else PublicLogin(server_id, found[0], found[1])

    async def write(self, login: PublicLogin) -> None:
        await self._slots.write(self._key(login.server_id), login.session_key, login.cookies)

    async def lock(self, server_id: int, token: str, seconds: float) -> bool:
        return await self._slots.lock(self._key(server_id), token, seconds)

    async def unlock(self, server_id: int, token: str) -> None:
        await self._slots.unlock(self._key(server_id), token)

    async def drop(self, server_id: int, session_key: str) -> bool:
        """Delete the entry only if it still holds `session_key`."""
        return await self._slots.drop(self._key(server_id), session_key)

    async def join(self, server_id: int, token: str) -> None:
        with redis_errors("public session store"):
            await self._redis.sadd(self._key(server_id, ":holders"), token)

    async def leave(self, server_id: int, token: str) -> str | None:
        """Stop holding; the last holder gets the shared key (entry deleted) to close."""
        with redis_errors("public session store"):
            key = await self._leave(
                keys=[self._key(server_id), self._key(server_id, ":holders")], args=[token]
            )
        return self._slots.open_key(self._key(server_id), text(key)) if key else None


class PublicSession:
    """The public sessions of one porter process (one per server), shared through Redis
    with other processes when `shared` is given (auth/stores.py makes it)."""

    def __init__(
        self,
        backend: OmeroBackend,
        settings: PublicSessionSettings,
        handoff: Handoff,
        *,
        shared: SharedPublicEntries | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._backend = backend
        self._settings = settings
        self._handoff = handoff
        self._shared = shared
        self._clock = clock
        self._token = secrets.token_hex(16)  # this process, as lock owner and holder
        self._held: dict[int, _Held] = {}
        self._flights: SingleFlight[int, PublicLogin] = SingleFlight("public session")
        self._failures: dict[int, _Failure] = {}
        self._joined: set[int] = set()
        self._dead: dict[int, set[str]] = {}  # dropped while the store could not be told
        self._closing: set[asyncio.Task[None]] = set()
        self._closed = False

    def _server_id(self, server: int | str | None) -> int:
        return self._backend.servers.get(self._settings.server_id if server is None else server).id

    async def get(self, server: int | str | None = None) -> PublicLogin:
        """The public session of `server` (default: `server_id`), created when needed.

        Raises auth.omero_errors (e.g. ServerUnavailable, InvalidCredentials, HandoffFailed; an
        unknown server at once: UnknownServer), SessionStoreUnavailable when the shared store
        cannot be read and nothing is held, RuntimeError after close()."""
        if self._closed:
            raise RuntimeError("PublicSession is closed")
        server_id = self._server_id(server)
        now = self._clock()
        held = self._held.get(server_id)
        if held is not None and (
            self._shared is None or now - held.checked < self._settings.recheck_interval
        ):
            return held.login
        failure = self._failures.get(server_id)
        if failure is not None and now < failure.until:
            raise _again(failure.error)
        try:
            return await self._flights.run(server_id, lambda: self._fly(server_id))
        except (OmeroError, HandoffFailed) as exc:
            raise _again(exc) from None

    async def _fly(self, server_id: int) -> PublicLogin:
        try:
            if self._shared is None:
                login = await self._create(server_id)
            else:
                login = await self._fly_shared(self._shared, server_id)
        except (OmeroError, HandoffFailed) as error:
            if self._settings.failure_backoff > 0:  # callers get it at once for a while
                until = self._clock() + self._settings.failure_backoff
                self._failures[server_id] = _Failure(error, until)
            raise
        self._failures.pop(server_id, None)
        self._held[server_id] = _Held(login, self._clock())
        return login

    async def _create(self, server_id: int) -> PublicLogin:
        """Log in as the public user and hand the session to OMERO.web (closed on failure)."""
        user, password = self._settings.user or "", self._settings.password or ""
        login = await self._backend.login(server_id, user, password)
        try:
            cookies = dict(await self._handoff(server_id, login.session_key))
            if not cookies:
                raise HandoffFailed(
                    f"server {server_id}: OMERO.web set no cookie for the public session",
                    server_id=server_id,
                )
        except BaseException as exc:
            await asyncio.shield(self._close_quietly(server_id, login.session_key))
            if isinstance(exc, Exception) and not isinstance(exc, OmeroError | HandoffFailed):
                # the type only: a handoff error's text may carry the URL, hence the key
                raise HandoffFailed(
                    f"server {server_id}: OMERO.web handoff of the public session failed "
                    f"({type(exc).__name__})",
                    server_id=server_id,
                ) from None
            raise
        log.info("public session created on server %d as %s", server_id, login.user_name)
        metrics.OMERO_SESSIONS_CREATED.labels("public").inc()
        return PublicLogin(server_id, login.session_key, MappingProxyType(cookies))

    async def _fly_shared(self, shared: SharedPublicEntries, server_id: int) -> PublicLogin:
        """Adopt the shared session, or create it under the lock, or wait for its creator."""
        held = self._held.get(server_id)
        deadline = time.monotonic() + self._settings.create_timeout
        delay = 0.01
        try:
            while True:
                found = await self._read_live(shared, server_id)
                if found is None and await shared.lock(
                    server_id, self._token, self._settings.create_timeout
                ):
                    try:
                        found = await self._read_live(
                            shared, server_id
                        ) or await self._create_shared(shared, server_id)
                    finally:
                        with contextlib.suppress(SessionStoreUnavailable):
                            await shared.unlock(server_id, self._token)
                if found is not None:
                    if server_id not in self._joined:
                        await shared.join(server_id, self._token)
                        self._joined.add(server_id)
                    return found
                if time.monotonic() >= deadline:
                    raise ServerUnavailable(
                        f"server {server_id}: the shared public session was not created "
                        f"within {self._settings.create_timeout:g} s",
                        server_id=server_id,
                    )
                await asyncio.sleep(delay)
                delay = min(delay * 2, _MAX_POLL)
        except SessionStoreUnavailable:
            if held is None:
                raise
            log.warning("public session of server %d: store unavailable, keeping it", server_id)
            return held.login

    async def _read_live(self, shared: SharedPublicEntries, server_id: int) -> PublicLogin | None:
        """The shared entry, unless it names a session this process dropped while the store
        could not be told (then it is dropped now, and not adopted)."""
        found = await shared.read(server_id)
        if found is not None and found.session_key in self._dead.get(server_id, ()):
            await shared.drop(server_id, found.session_key)
            self._dead[server_id].discard(found.session_key)
            return None
        return found

    async def _create_shared(self, shared: SharedPublicEntries, server_id: int) -> PublicLogin:
        """Under the lock, with no shared entry: this process's own session when it is still
        alive (the store lost its data, e.g. a Redis restart), else a new one."""
        held = self._held.get(server_id)
        login = await self._still_alive(held.login) if held is not None else None
        if login is None:
            login = await self._create(server_id)
        else:
            log.info("public session of server %d: written back to the store", server_id)
        try:
            await shared.write(login)
        except SessionStoreUnavailable:
            log.warning("public session of server %d: not shared, store unavailable", server_id)
        return login

    async def _still_alive(self, login: PublicLogin) -> PublicLogin | None:
        """`login` if OMERO still has its session; else it is closed (never leaked)."""
        try:
            alive = await self._backend.keep_alive(login.server_id, login.session_key)
        except OmeroError:
            alive = False
        if alive:
            return login
        self._held.pop(login.server_id, None)
        await self._close_quietly(login.server_id, login.session_key)
        return None

    def _drop(self, server_id: int, session_key: str) -> bool:
        held = self._held.get(server_id)
        if held is None or held.login.session_key != session_key:
            return False
        del self._held[server_id]
        return True

    async def _drop_everywhere(self, server_id: int, session_key: str) -> bool:
        dropped = self._drop(server_id, session_key)
        if self._shared is not None:
            try:
                dropped = await self._shared.drop(server_id, session_key) or dropped
            except SessionStoreUnavailable:
                log.warning("public session of server %d: store unavailable on drop", server_id)
                # remembered, so the dead key is not adopted again once the store is back
                dead = self._dead.setdefault(server_id, set())
                if len(dead) < _MAX_DEAD:
                    dead.add(session_key)
        return dropped

    async def invalidate(self, server: int | str, session_key: str) -> None:
        """OMERO.web or OMERO no longer accepts this session: the next get() creates a new
        one. A key other than the current one (a stale report) changes nothing."""
        server_id = self._server_id(server)
        if await self._drop_everywhere(server_id, session_key):
            log.info("public session of server %d invalidated", server_id)
            metrics.PUBLIC_RECREATIONS.inc()
            # OMERO.web may have lost only its cookie: end the OMERO session too, off the
            # request path
            task = asyncio.create_task(self._close_quietly(server_id, session_key))
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)

    async def keep_alive(self) -> None:
        """Ping every held session; one the server has ended is dropped (re-created on the
        next get). A server that cannot answer keeps its session for the next round."""
        await asyncio.gather(
            *(self._ping(sid, held.login.session_key) for sid, held in list(self._held.items()))
        )

    async def _ping(self, server_id: int, session_key: str) -> None:
        """Keep the session alive, and make sure it is still the public user's (defence in
        depth: every anonymous visitor is served on it)."""
        try:
            alive = await self._backend.keep_alive(server_id, session_key)
            owner = await self._backend.join(server_id, session_key) if alive else None
        except SessionGone:
            alive, owner = False, None
        except OmeroError as exc:
            log.info("public session of server %d: keepalive failed (%s)", server_id, exc)
            return
        if owner is not None and (owner.user_name != self._settings.user or owner.is_admin):
            log.warning(
                "public session of server %d belongs to %s%s, not the public user %s: "
                "dropped and closed; a new one is made on the next request",
                server_id,
                owner.user_name,
                " (an admin)" if owner.is_admin else "",
                self._settings.user,
            )
            if await self._drop_everywhere(server_id, session_key):
                metrics.PUBLIC_RECREATIONS.inc()
                await self._close_quietly(server_id, session_key)
            return
        if not alive and await self._drop_everywhere(server_id, session_key):
            log.info("public session of server %d ended on the server; will re-create", server_id)
            metrics.PUBLIC_RECREATIONS.inc()

    async def close(self) -> None:
        """Stop creating, and close the held sessions on their servers. With Redis, only the
        last process holding a shared session closes it."""
        self._closed = True
        await self._flights.close()
        await asyncio.gather(*self._closing, return_exceptions=True)
        held, self._held = self._held, {}
        keys = {sid: h.login.session_key for sid, h in held.items()}
        if self._shared is not None:
            keys = {}
            for sid in self._joined:
                try:
                    last = await self._shared.leave(sid, self._token)
                except SessionStoreUnavailable:
                    log.warning("public session of server %d: store unavailable on close", sid)
                    continue
                if last is not None:
                    keys[sid] = last
        await asyncio.gather(*(self._close_quietly(sid, key) for sid, key in keys.items()))

    async def _close_quietly(self, server_id: int, session_key: str) -> None:
        try:
            await self._backend.close(server_id, session_key)
            metrics.OMERO_SESSIONS_CLOSED.labels("public").inc()
        except OmeroError as exc:
            log.info("public session of server %d: close failed (%s)", server_id, exc)
