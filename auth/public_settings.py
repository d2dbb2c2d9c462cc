"""The auth half of the `[public]` section: the shared public session's account and upkeep.

The URL rules of `[public]` belong to filters (filters/settings.py, PublicRuleSettings);
`enabled` is read by both halves. Names follow OMERO.web's: `server_id`, `user`, `password`
are `omero.web.public.server_id`, `.user`, `.password`.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class PublicSessionSettings:
    """The OMERO account anonymous traffic runs as, and how its one shared session is kept."""

    enabled: bool = field(
        default=False,
        metadata={
            "doc": "Serve matching URLs to anonymous visitors as the public user "
            "(OMERO.web: omero.web.public.enabled)"
        },
    )
    server_id: int = field(
        default=1,
        metadata={
            "doc": "server_list id the public user logs in to (omero.web.public.server_id)",
            "min": 1,
        },
    )
    user: str | None = field(
        default=None,
        metadata={"doc": "OMERO user anonymous visitors act as (omero.web.public.user)"},
    )
    password: str | None = field(
        default=None,
        metadata={"doc": "Password of the public user (omero.web.public.password)", "secret": True},
    )
    failure_backoff: float = field(
        default=2.0,
        metadata={
            "doc": "Seconds a failed public login is remembered: callers get its error at "
            "once instead of retrying (0: off)",
            "min": 0.0,
            "max": 300.0,
        },
    )
    create_timeout: float = field(
        default=30.0,
        metadata={
            "doc": "Seconds one porter process may take to create the shared public session "
            "(Redis lock lifetime; others wait at most this long)",
            "min": 1.0,
            "max": 600.0,
        },
    )
    recheck_interval: float = field(
        default=5.0,
        metadata={
            "doc": "Seconds a process uses its copy of the Redis-shared public session before "
            "reading it again",
            "min": 0.0,
            "max": 600.0,
        },
    )

    def problems(self) -> list[tuple[str, str]]:
        """Public access needs the public user's name and password."""
        found: list[tuple[str, str]] = []
        if self.enabled and not self.user:
            found.append(("user", "must be set when public access is enabled"))
        if self.enabled and not self.password:
            found.append(("password", "must be set when public access is enabled"))
        return found
