"""OMERO session semantics of the test server: create, join, reference counts, timeouts.

Modelled on OMERO's SessionManagerImpl: a new session starts with one reference; a join adds
one; ``close`` removes one and ends the session at zero (returning -2), -1 when unknown;
``detach`` removes one without ever ending it. A Glacier2 session (one per client connection)
holds one reference and, when it ends, closes it, or only detaches it after detachOnDestroy.
Sessions idle longer than their time-to-idle, or older than their time-to-live, end.
No Ice here: the servants translate. Thread-safe (Ice dispatches on many threads).
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from tests.omero_sim.directory import Directory, User


@dataclass
class Session:
    id: int
    key: str
    user: User
    group: str
    started: float
    last_access: float
    tti: float
    ttl: float
    agent: str = ""
    ip: str = ""
    refcount: int = 1
    joins: int = 0

    def expired(self, now: float) -> bool:
        idle = self.tti > 0 and now - self.last_access > self.tti
        old = self.ttl > 0 and now - self.started > self.ttl
        return idle or old

    def describe(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "id": self.id,
            "user": self.user.name,
            "group": self.group,
            "refcount": self.refcount,
            "joins": self.joins,
            "agent": self.agent,
            "ip": self.ip,
            "idle_for": round(time.monotonic() - self.last_access, 3),
            "time_to_idle": self.tti,
            "time_to_live": self.ttl,
        }


@dataclass
class Binding:
    """One Glacier2 session: a client connection joined to an OMERO session."""

    category: str
    key: str
    connection: Any = None
    detach: bool = False


@dataclass
class SessionRegistry:
    directory: Directory
    idle_timeout: float = 600.0
    stats: Counter[str] = field(default_factory=Counter)
    calls: Counter[str] = field(default_factory=Counter)
    _sessions: dict[str, Session] = field(default_factory=dict)
    _bindings: dict[str, Binding] = field(default_factory=dict)
    _lock: threading.RLock = field(default_factory=threading.RLock)
    _next_id: int = 1

    # ~ creation
    def login(
        self, name: str, password: str, agent: str = "", ip: str = "", group: str | None = None
    ) -> Session | None:
        """A new session for a correct user name and password, else None."""
        user = self.directory.authenticate(name, password)
        with self._lock:
            if user is None:
                self.stats["login_failures"] += 1
                return None
            self.stats["logins"] += 1
            return self._new(user, group, 0.0, self.idle_timeout, agent, ip)

    def create_for(
        self,
        user: User,
        ttl: float = 0.0,
        tti: float | None = None,
        agent: str = "",
        ip: str = "",
        group: str | None = None,
    ) -> Session:
        """A new session for a user without password (ISession, admins only)."""
        with self._lock:
            return self._new(user, group, ttl, self.idle_timeout if tti is None else tti, agent, ip)

    def _new(
        self, user: User, group: str | None, ttl: float, tti: float, agent: str, ip: str
    ) -> Session:
        now = time.monotonic()
        chosen = group if group in user.groups else user.default_group
        session = Session(
            self._next_id, str(uuid.uuid4()), user, chosen, now, now, tti, ttl, agent, ip
        )
        self._next_id += 1
        self._sessions[session.key] = session
        self.stats["sessions_created"] += 1
        return session

    def join(self, key: str) -> Session | None:
        """The live session with that key, one more reference on it; else None."""
        with self._lock:
            session = self.touch(key)
            if session is None:
                self.stats["join_failures"] += 1
                return None
            session.refcount += 1
            session.joins += 1
            self.stats["joins"] += 1
            return session

    # ~ lookup
    def touch(self, key: str) -> Session | None:
        """The live session with that key, marked as just used; None when gone or expired."""
        with self._lock:
            session = self._sessions.get(key)
            if session is None:
                return None
            now = time.monotonic()
            if session.expired(now):
                self._remove(key, "sessions_expired")
                return None
            session.last_access = now
            return session

    def peek(self, key: str) -> Session | None:
        with self._lock:
            return self._sessions.get(key)

    # ~ Glacier2 sessions
    def bind(self, key: str, connection: Any) -> Binding:
        with self._lock:
            binding = Binding("sim-" + uuid.uuid4().hex, key, connection)
            self._bindings[binding.category] = binding
            self.stats["router_sessions_created"] += 1
            return binding

    def binding(self, category: str) -> Binding | None:
        with self._lock:
            return self._bindings.get(category)

    def binding_for_connection(self, connection: Any) -> Binding | None:
        with self._lock:
            return next((b for b in self._bindings.values() if b.connection == connection), None)

    def unbind(self, category: str) -> None:
        """End a Glacier2 session: detach or close its reference."""
        with self._lock:
            binding = self._bindings.pop(category, None)
            if binding is None:
                return
            if binding.detach:
                self.stats["detaches"] += 1
                self.detach(binding.key)
            else:
                self.close(binding.key)

    # ~ ending
    def detach(self, key: str) -> int:
        with self._lock:
            session = self._sessions.get(key)
            if session is None:
                return -1
            session.refcount -= 1
            return session.refcount

    def close(self, key: str) -> int:
        """One reference less; -2 when that ended the session, -1 when unknown."""
        with self._lock:
            session = self._sessions.get(key)
            if session is None:
                return -1
            session.refcount -= 1
            if session.refcount < 1:
                self._remove(key, "sessions_closed")
                return -2
            return session.refcount

    def kill(self, key: str) -> list[Any]:
        """End a session now; returns the client connections it had, for closing."""
        with self._lock:
            if key not in self._sessions:
                return []
            return self._remove(key, "sessions_killed")

    def reap(self) -> list[Any]:
        """End expired sessions; returns their client connections, for closing."""
        now = time.monotonic()
        connections: list[Any] = []
        with self._lock:
            for key in [k for k, s in self._sessions.items() if s.expired(now)]:
                connections += self._remove(key, "sessions_expired")
        return connections

    def _remove(self, key: str, reason: str) -> list[Any]:
        del self._sessions[key]
        self.stats[reason] += 1
        gone = [b for b in self._bindings.values() if b.key == key]
        for binding in gone:
            del self._bindings[binding.category]
        return [b.connection for b in gone if b.connection is not None]

    def reset(self) -> list[Any]:
        """Forget every session and counter; returns the connections to close."""
        with self._lock:
            connections = [b.connection for b in self._bindings.values() if b.connection]
            self._sessions.clear()
            self._bindings.clear()
            self.stats.clear()
            self.calls.clear()
            return connections

    # ~ observation
    def count_call(self, name: str) -> None:
        with self._lock:
            self.calls[name] += 1

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            keys = (
                "sessions_created",
                "sessions_closed",
                "sessions_expired",
                "sessions_killed",
                "logins",
                "login_failures",
                "joins",
                "join_failures",
                "detaches",
                "keepalives",
                "router_sessions_created",
                "password_resets",
                "password_reset_refusals",
            )
            out: dict[str, Any] = {k: self.stats[k] for k in keys}
            out["sessions_active"] = len(self._sessions)
            out["router_sessions_active"] = len(self._bindings)
            out["calls"] = dict(self.calls)
            return out

    def describe(self) -> list[dict[str, Any]]:
        with self._lock:
            return [s.describe() for s in self._sessions.values()]
