"""The `[omero]` section: the servers porter logs in to and how it talks to them.

`server_list` is OMERO.web's `omero.web.server_list`, same shape: its JSON value pastes into
config.toml unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from auth.servers import check_server_list


def _check_agent(value: str) -> None:
    if not value or not value.isprintable():
        raise ValueError("must be a non-empty printable string")


@dataclass(frozen=True)
class OmeroSettings:
    """OMERO servers, the backend's thread pool and timeouts, and the admin account for SSO."""

    server_list: tuple[tuple[str, int, str], ...] = field(
        default=(("localhost", 4064, "omero"),),
        metadata={
            "doc": "Servers as [host, port, name]; ids are 1-based in this order "
            "(omero.web.server_list)",
            "check": check_server_list,
        },
    )
    pool_size: int = field(
        default=8,
        metadata={
            "doc": "Threads running blocking omero-py calls; more calls queue",
            "min": 1,
            "max": 256,
        },
    )
    call_timeout: float = field(
        default=10.0,
        metadata={
            "doc": "Seconds a caller waits for one OMERO call (login, join, keepalive, "
            "...) before the server counts as unavailable",
            "min": 0.5,
            "max": 300,
        },
    )
    admin_user: str | None = field(
        default=None,
        metadata={
            "doc": "OMERO administrator that creates sessions for SSO users "
            "(ISession.createSessionWithTimeouts)"
        },
    )
    admin_password: str | None = field(
        default=None, metadata={"doc": "Password of admin_user", "secret": True}
    )
    user_agent: str = field(
        default="omero-porter",
        metadata={
            "doc": "Agent recorded on the OMERO sessions porter creates",
            "check": _check_agent,
        },
    )

    def problems(self) -> list[tuple[str, str]]:
        """admin_user and admin_password go together."""
        if bool(self.admin_user) != bool(self.admin_password):
            missing = "admin_password" if self.admin_user else "admin_user"
            return [(missing, "admin_user and admin_password must both be set, or neither")]
        return []
