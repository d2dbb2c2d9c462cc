"""The one factory of porter's state: it picks where state lives (this process, or Redis for
every process and host) from `[session]`, and it alone holds the Redis client. Sessions, the
replay cache and the logout index come out of it ready; other components that share state
through Redis get the client from `shared()`, and never reach through the session store."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

from redis.asyncio import Redis

from auth.lifecycle import EndWeb
from auth.logout_index import LogoutIndex, MemoryLogoutIndex, RedisLogoutIndex
from auth.replays import MemoryReplayCache, RedisReplayCache, ReplayCache
from auth.session_settings import SessionSettings
from auth.session_store import Clock, OnEvict, SessionStore, SessionTimeouts
from auth.store_memory import MemorySessionStore
from auth.store_redis import RedisSessionStore, redis_client
from auth.store_seal import StoreSeal

T = TypeVar("T")


@dataclass(frozen=True)
class Stores:
    """Where porter keeps its state, and the parts that keep it."""

    sessions: SessionStore
    replays: ReplayCache
    logouts: LogoutIndex
    _redis: Redis | None = field(default=None, repr=False)
    _prefix: str = ""

    def shared(self, make: Callable[[Redis, str], T]) -> T | None:
        """`make(client, key_prefix)`: a component that keeps its state in Redis beside the
        sessions; None when porter's state lives in this process."""
        return None if self._redis is None else make(self._redis, self._prefix)


def create_stores(
    settings: SessionSettings,
    *,
    on_evict: OnEvict,
    clock: Clock = time.time,
    end_web: EndWeb | None = None,
    seal: StoreSeal | None = None,
) -> Stores:
    """The stores `settings.store` names; ValueError for an unknown name. Redis needs `seal`
    (from proxy.secret_key): no cookie or held secret is written in clear."""
    timeouts = SessionTimeouts(
        idle=float(settings.session_idle_timeout), absolute=float(settings.session_cookie_age)
    )
    if settings.store == "memory":
        sessions = MemorySessionStore(
            max_sessions=settings.max_sessions,
            timeouts=timeouts,
            on_evict=on_evict,
            clock=clock,
            evict_concurrency=settings.lifecycle_concurrency,
            end_web=end_web,
        )
        names = max(1000, settings.max_sessions)
        return Stores(sessions, MemoryReplayCache(names, clock), MemoryLogoutIndex(names, clock))
    if settings.store == "redis":
        if seal is None:
            raise ValueError("the Redis session store needs a StoreSeal (proxy.secret_key)")
        redis, prefix = redis_client(settings), settings.redis_key_prefix
        return Stores(
            RedisSessionStore.from_settings(
                settings, redis=redis, timeouts=timeouts, seal=seal, clock=clock
            ),
            RedisReplayCache(redis, prefix, clock),
            RedisLogoutIndex(redis, prefix, seal, clock),
            redis,
            prefix,
        )
    raise ValueError(
        f"Setting session.store has value {settings.store!r}. Known stores: memory, redis."
    )


def create_store(
    settings: SessionSettings,
    *,
    on_evict: OnEvict,
    clock: Clock = time.time,
    end_web: EndWeb | None = None,
    seal: StoreSeal | None = None,
) -> SessionStore:
    """The session store alone (run.py clearsessions, the store's own tests)."""
    stores = create_stores(settings, on_evict=on_evict, clock=clock, end_web=end_web, seal=seal)
    return stores.sessions
