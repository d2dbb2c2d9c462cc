"""The `[session]` section: porter's cookie, session lifetimes, the store and its jobs.

Names follow OMERO.web's where one exists: `session_cookie_age` is
`omero.web.session_cookie_age`, `ping_interval` is `omero.web.ping_interval` (milliseconds).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from urllib.parse import urlsplit

_COOKIE_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+\Z")  # an RFC 6265 token


def _check_cookie_name(value: str) -> None:
    if not _COOKIE_NAME.match(value):
        raise ValueError(f"{value!r} is not a cookie name (letters, digits and !#$%&'*+-.^_`|~)")


def _check_sentinels(value: tuple[tuple[str, int], ...]) -> None:
    for index, (host, port) in enumerate(value):
        if not host or not 0 < int(port) < 65536:
            raise ValueError(f"item {index}: must be [host, port] with a port in 1-65535")


def _check_redis_url(value: str) -> None:
    parts = urlsplit(value)
    if parts.scheme not in ("redis", "rediss", "unix"):
        raise ValueError("must be a redis://, rediss:// or unix:// URL")
    if parts.password is not None:
        raise ValueError("must not contain a password: set redis_password (or redis_password_file)")


def _check_key_prefix(value: str) -> None:
    if not value or any(c.isspace() for c in value):
        raise ValueError('must be a non-empty string without spaces, e.g. "porter:"')


@dataclass(frozen=True)
class SessionSettings:
    """Porter's session cookie, session lifetimes, the session store and its lifecycle jobs."""

    cookie_name: str = field(
        default="porter_session",
        metadata={"doc": "Name of porter's session cookie", "check": _check_cookie_name},
    )
    session_cookie_age: int = field(
        default=86400,
        metadata={
            "doc": "Absolute session lifetime in seconds (omero.web.session_cookie_age)",
            "min": 60,
        },
    )
    session_expire_at_browser_close: bool = field(
        default=True,
        metadata={
            "doc": "Cookie ends with the browser, else has max-age "
            "(omero.web.session_expire_at_browser_close)"
        },
    )
    session_cookie_secure: str = field(
        default="auto",
        metadata={
            "doc": 'Secure cookie flag; "auto" follows the request scheme '
            "(omero.web.session_cookie_secure)",
            "choices": ("auto", "true", "false"),
        },
    )
    session_cookie_samesite: str = field(
        default="Lax",
        metadata={"doc": "SameSite attribute of the cookie", "choices": ("Lax", "Strict", "None")},
    )
    session_idle_timeout: int = field(
        default=3600,
        metadata={
            "doc": "Seconds without a request after which a session ends (accurate to 1/20, "
            "at most 60 s)",
            "min": 60,
        },
    )
    max_sessions: int = field(
        default=100000,
        metadata={
            "doc": "Most sessions the memory store holds; the least recently used is logged "
            "out beyond",
            "min": 1,
        },
    )
    store: str = field(
        default="memory",
        metadata={
            "doc": "Session store: memory (one process) or redis (shared by porter processes)",
            "choices": ("memory", "redis"),
        },
    )
    redis_url: str = field(
        default="redis://127.0.0.1:6379/0",
        metadata={
            "doc": "Redis server of the redis store (no password here)",
            "check": _check_redis_url,
        },
    )
    redis_password: str | None = field(
        default=None, metadata={"doc": "Password of the Redis server", "secret": True}
    )
    redis_sentinels: tuple[tuple[str, int], ...] = field(
        default=(),
        metadata={
            "doc": "Redis Sentinels as [[host, port], ...]; set: porter asks them for the "
            "primary of redis_sentinel_master (redis_url then gives only the database)",
            "check": _check_sentinels,
        },
    )
    redis_sentinel_master: str = field(
        default="mymaster",
        metadata={"doc": "Name of the primary the Sentinels watch"},
    )
    redis_sentinel_password: str | None = field(
        default=None,
        metadata={"doc": "Password of the Sentinels themselves, if they have one", "secret": True},
    )
    redis_key_prefix: str = field(
        default="porter:",
        metadata={"doc": "Prefix of porter's Redis keys", "check": _check_key_prefix},
    )
    redis_local_cache: float = field(
        default=0.0,
        metadata={
            "doc": "Seconds a process may reuse a session it read from Redis without reading "
            "it again (0: read every request). Also how long a logout on another process may "
            "take to reach this one",
            "min": 0.0,
            "max": 10.0,
        },
    )
    redis_connect_timeout: float = field(
        default=2.0,
        metadata={"doc": "Seconds to connect to Redis before answering 503", "min": 0.05},
    )
    redis_timeout: float = field(
        default=2.0,
        metadata={"doc": "Seconds Redis may take to answer before porter answers 503", "min": 0.05},
    )
    redis_max_connections: int = field(
        default=64,
        metadata={"doc": "Most connections to Redis at once per porter process", "min": 1},
    )
    purge_interval: int = field(
        default=60,
        metadata={
            "doc": "Seconds between purges of expired sessions (their OMERO sessions are closed)",
            "min": 1,
        },
    )
    ping_interval: int = field(
        default=60000,
        metadata={
            "doc": "Milliseconds between OMERO keepalives of sessions in use "
            "(omero.web.ping_interval)",
            "min": 1000,
        },
    )
    lifecycle_concurrency: int = field(
        default=8,
        metadata={"doc": "Most OMERO closes or keepalives the jobs run at once", "min": 1},
    )

    def problems(self) -> list[tuple[str, str]]:
        """Cross-field problems as (field name, message) pairs."""
        found: list[tuple[str, str]] = []
        if self.session_cookie_samesite == "None" and self.session_cookie_secure == "false":
            found.append(
                (
                    "session_cookie_samesite",
                    "browsers reject SameSite=None without Secure; "
                    'set session_cookie_secure to "auto" or "true"',
                )
            )
        return found
