"""The Glacier2 router: log in, join by session key, end the Glacier2 session."""

from __future__ import annotations

from typing import Any

import Ice
import omero
import omero.clients
import omero.constants
from omero.clients import Glacier2  # never `import Glacier2` first: see state.py

from tests.omero_sim.fallback import fail_fast
from tests.omero_sim.sessions import SessionRegistry
from tests.omero_sim.state import SimState

ROUTER_ID = "OMERO.Glacier2/router"


class _ClosedCallback(Ice.ConnectionCallback):  # type: ignore[misc]
    def __init__(self, registry: SessionRegistry) -> None:
        self.registry = registry

    def heartbeat(self, con: Any) -> None:
        pass

    def closed(self, con: Any) -> None:
        # Glacier2 ends the session of a connection that goes away
        binding = self.registry.binding_for_connection(con)
        if binding is not None:
            self.registry.unbind(binding.category)


@fail_fast
class RouterI(Glacier2.Router):  # type: ignore[misc]
    def __init__(self, state: SimState) -> None:
        self.state = state
        self.on_close = _ClosedCallback(state.registry)

    def getClientProxy(self, current: Any = None) -> Any:
        return None  # clients then route through the endpoint they used for the router

    def getServerProxy(self, current: Any) -> Any:
        return current.adapter.createProxy(Ice.stringToIdentity("OMERO.Glacier2/server"))

    def addProxies(self, proxies: Any, current: Any = None) -> list[Any]:
        return []

    def getCategoryForClient(self, current: Any) -> str:
        binding = self.state.registry.binding_for_connection(current.con)
        return binding.category if binding else "sim-unbound"

    def getSessionTimeout(self, current: Any = None) -> int:
        return int(self.state.registry.idle_timeout)

    def getACMTimeout(self, current: Any = None) -> int:
        return 0

    def createSession_async(self, cb: Any, user: str, password: str, current: Any) -> None:
        registry = self.state.registry
        if registry.binding_for_connection(current.con) is not None:
            cb.ice_exception(Glacier2.CannotCreateSessionException("Session already exists"))
            return
        ctx = current.ctx
        agent, ip = ctx.get(omero.constants.AGENT, ""), ctx.get(omero.constants.IP, "")
        if user == password and user not in self.state.directory.users:
            session = registry.join(user)  # omero.client.joinSession(key)
        else:
            session = registry.login(user, password, agent, ip, self._group(ctx))
        if session is None:
            cb.ice_exception(Glacier2.PermissionDeniedException("Password check failed"))
            return
        binding = registry.bind(session.key, current.con)
        if current.con is not None:
            current.con.setCallback(self.on_close)
        prx = current.adapter.createProxy(Ice.Identity(session.key, binding.category))
        cb.ice_response(Glacier2.SessionPrx.uncheckedCast(prx))

    def _group(self, ctx: dict[str, str]) -> str | None:
        wanted = ctx.get(omero.constants.GROUP)
        for name, grp in self.state.directory.groups.items():
            if wanted in (name, str(grp.id)):
                return name
        return None

    def destroySession(self, current: Any) -> None:
        binding = self.state.registry.binding_for_connection(current.con)
        if binding is None:
            raise Glacier2.SessionNotExistException()
        self.state.registry.unbind(binding.category)
