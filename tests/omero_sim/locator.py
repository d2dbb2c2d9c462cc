"""Finds the servant of every incoming call, counts it, and applies the injected delay.

Identities: the router is ``OMERO.Glacier2/router``; a client's ServiceFactory is
``<glacier2 category>/<session key>`` and its services ``<category>/omero.api.IAdmin`` etc.
A call whose Glacier2 session or OMERO session has gone finds no servant, and the client
gets Ice.ObjectNotExistException, as with a real OMERO server.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import Ice

from tests.omero_sim.commands import HANDLE
from tests.omero_sim.factory import ServiceFactoryI
from tests.omero_sim.router import ROUTER_ID, RouterI
from tests.omero_sim.services import service_servants, unsimulated_service
from tests.omero_sim.state import SimState


class Faults:
    """Fault injection shared with the control channel."""

    def __init__(self) -> None:
        self.delay = 0.0


class Locator(Ice.ServantLocator):  # type: ignore[misc]
    def __init__(self, state: SimState, faults: Faults) -> None:
        self.state = state
        self.faults = faults
        self.router = RouterI(state)
        self.factory = ServiceFactoryI(state)
        self.services = service_servants(state)
        self._lock = threading.Lock()

    def locate(self, current: Any) -> Any:
        if self.faults.delay > 0:
            time.sleep(self.faults.delay)
        servant = self._find(current)
        if servant is not None:
            iface = servant.ice_staticId().rsplit("::", 1)[-1]
            self.state.registry.count_call(f"{iface}.{current.operation}")
        return (servant, None) if servant is not None else None

    def _find(self, current: Any) -> Any:
        ident = current.id
        if Ice.identityToString(ident) == ROUTER_ID:
            return self.router
        binding = self.state.registry.binding(ident.category)
        if binding is None or self.state.registry.touch(binding.key) is None:
            return None
        if ident.name == binding.key:
            return self.factory
        # stateful services (createThumbnailStore): "<service>/<uuid>", one servant for all
        name = ident.name.split("/", 1)[0]
        if name == HANDLE:
            return self.state.handles
        return self.services.get(name) or self._unsimulated(name)

    def _unsimulated(self, name: str) -> Any:
        with self._lock:
            if name not in self.services:
                servant = unsimulated_service(name)
                if servant is None:
                    return None
                self.services[name] = servant
            return self.services[name]

    def finished(self, current: Any, servant: Any, cookie: Any) -> None:
        pass

    def deactivate(self, category: str) -> None:
        pass
