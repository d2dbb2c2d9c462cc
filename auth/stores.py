"""The factory that picks a session store implementation from the settings."""

from __future__ import annotations

import time

from auth.lifecycle import EndWeb
from auth.session_settings import SessionSettings
from auth.store import Clock, OnEvict, SessionStore, SessionTimeouts
from auth.store_memory import MemorySessionStore
from auth.store_redis import RedisSessionStore


def create_store(
    settings: SessionSettings,
    *,
    on_evict: OnEvict,
    clock: Clock = time.time,
    end_web: EndWeb | None = None,
) -> SessionStore:
    """Build the store named by `settings.store`; ValueError for an unknown name."""
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
        return RedisSessionStore.from_settings(settings, timeouts=timeouts, clock=clock)
    raise ValueError(
        f"Setting session.store has value {settings.store!r}. Known stores: memory, redis."
    )
