"""The factory that picks a session store implementation from the settings."""

from __future__ import annotations

import time

from auth.lifecycle import EndWeb
from auth.session_settings import SessionSettings
from auth.store import Clock, OnEvict, SessionStore, SessionTimeouts
from auth.store_memory import MemorySessionStore
from auth.store_redis import RedisSessionStore
from auth.store_seal import StoreSeal


def create_store(
    settings: SessionSettings,
    *,
    on_evict: OnEvict,
    clock: Clock = time.time,
    end_web: EndWeb | None = None,
    seal: StoreSeal | None = None,
) -> SessionStore:
    """Build the store named by `settings.store`; ValueError for an unknown name. The Redis
    store needs `seal` (from proxy.secret_key): no cookie or held secret is written in clear."""
    timeouts = SessionTimeouts(
        idle=float(settings.session_idle_timeout), absolute=float(settings.session_cookie_age)
    )
    if settings.store == "memory":
        return MemorySessionStore(
            max_sessions=settings.max_sessions,
            timeouts=timeouts,
            on_evict=on_evict,
            clock=clock,
            evict_concurrency=settings.lifecycle_concurrency,
            end_web=end_web,
        )
    if settings.store == "redis":
        if seal is None:
            raise ValueError("the Redis session store needs a StoreSeal (proxy.secret_key)")
        return RedisSessionStore.from_settings(settings, timeouts=timeouts, seal=seal, clock=clock)
    raise ValueError(
        f"Setting session.store has value {settings.store!r}. Known stores: memory, redis."
    )
