"""What every servant shares: users, sessions, server configuration.

Servants are stateless; every call finds its session through the identity category of the
client's Glacier2 session (see locator.py), so one instance of each serves every client.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any

import Ice

from tests.omero_sim.commands import HandleI
from tests.omero_sim.directory import Directory
from tests.omero_sim.sessions import Session, SessionRegistry

# Never `import Glacier2` before omero.clients (use `from omero.clients import Glacier2`):
# zeroc-ice 3.6's Glacier2.py, when a plain import runs it first, replaces the Slice
# Glacier2.SessionNotExistException with a plain Python class; omero.clients then no longer
# catches it, and closeSession() after the session was killed raises.

SERVER_VERSION = "5.6.16-ice36-sim"


@dataclass
class SimState:
    """What every servant shares: users, sessions, server configuration."""

    directory: Directory
    registry: SessionRegistry
    config: dict[str, str] = field(default_factory=dict)
    version: str = SERVER_VERSION
    handles: HandleI = field(default_factory=HandleI)  # submitted commands' answers

    def session_of(self, current: Any) -> Session:
        """The session a call belongs to; ObjectNotExist when it has gone (as OMERO)."""
        binding = self.registry.binding(current.id.category)
        session = self.registry.touch(binding.key) if binding else None
        if session is None:
            raise Ice.ObjectNotExistException(id=current.id, operation=current.operation)
        return session


def close_connections(connections: list[Any]) -> None:
    """Close client connections whose Glacier2 session the server ended."""
    for con in connections:
        with contextlib.suppress(Ice.LocalException):
            con.close(False)
