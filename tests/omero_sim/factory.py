"""The ServiceFactory (a Glacier2 session): hands out services, keepAlive, detach/close."""

from __future__ import annotations

import uuid
from typing import Any

import Ice
import omero
import omero.api
import omero.clients
import omero.cmd

from tests.omero_sim import model
from tests.omero_sim.commands import HANDLE, run_command
from tests.omero_sim.fallback import fail_fast
from tests.omero_sim.images import THUMBNAIL_STORE
from tests.omero_sim.state import SimState


def _service_iface(op: str) -> str | None:
    """getAdminService -> omero.api.IAdmin; None for other operations."""
    if op.startswith("get") and op.endswith("Service") and op != "getByName":
        return "omero.api.I" + op[len("get") : -len("Service")]
    return None


@fail_fast
class ServiceFactoryI(omero.api.ServiceFactory):  # type: ignore[misc]
    def __init__(self, state: SimState) -> None:
        self.state = state

    def _service(self, iface: str, current: Any) -> Any:
        prx_type = getattr(omero.api, iface.rsplit(".", 1)[1] + "Prx")
        return prx_type.uncheckedCast(
            current.adapter.createProxy(Ice.Identity(iface, current.id.category))
        )

    def getByName(self, name: str, current: Any) -> Any:
        return omero.api.ServiceInterfacePrx.uncheckedCast(
            current.adapter.createProxy(Ice.Identity(name, current.id.category))
        )

    def createThumbnailStore(self, current: Any) -> Any:
        name = f"{THUMBNAIL_STORE}/{uuid.uuid4()}"
        return omero.api.ThumbnailStorePrx.uncheckedCast(
            current.adapter.createProxy(Ice.Identity(name, current.id.category))
        )

    def submit_async(self, cb: Any, request: Any, current: Any) -> None:
        try:
            self.state.session_of(current)
        except Ice.ObjectNotExistException as exc:
            cb.ice_exception(exc)
            return
        name = f"{HANDLE}/{uuid.uuid4()}"
        self.state.handles.answer(name, run_command(self.state, request))
        cb.ice_response(
            omero.cmd.HandlePrx.uncheckedCast(
                current.adapter.createProxy(Ice.Identity(name, current.id.category))
            )
        )

    def keepAlive(self, service: Any, current: Any) -> bool:
        self.state.session_of(current)
        self.state.registry.stats["keepalives"] += 1
        return True

    def keepAllAlive(self, services: Any, current: Any) -> int:
        self.state.session_of(current)
        self.state.registry.stats["keepalives"] += 1
        return 0

    def setCallback(self, callback: Any, current: Any = None) -> None:
        pass

    def subscribe(self, topic: str, prx: Any, current: Any = None) -> None:
        pass

    def detachOnDestroy(self, current: Any) -> None:
        self._binding(current).detach = True

    def closeOnDestroy(self, current: Any) -> None:
        self._binding(current).detach = False

    def activeServices(self, current: Any = None) -> list[str]:
        return []

    def getSecurityContexts(self, current: Any) -> list[Any]:
        session = self.state.session_of(current)
        return [model.group(self.state.directory, g) for g in session.user.groups]

    def setSecurityContext(self, obj: Any, current: Any) -> Any:
        session = self.state.session_of(current)
        old = model.group(self.state.directory, session.group)
        for name in session.user.groups:
            if self.state.directory.groups[name].id == obj.id.val:
                session.group = name
                return old
        raise omero.SecurityViolation(None, None, "Not a member of that group")

    def destroy(self, current: Any) -> None:
        self.state.registry.unbind(current.id.category)

    def _binding(self, current: Any) -> Any:
        binding = self.state.registry.binding(current.id.category)
        if binding is None:
            raise Ice.ObjectNotExistException(id=current.id, operation=current.operation)
        return binding


def _service_getter(iface: str) -> Any:
    def get_service(self: ServiceFactoryI, current: Any) -> Any:
        return self._service(iface, current)

    return get_service


# every getXService of ServiceFactory hands out the service's proxy, simulated or not
for _op in dir(ServiceFactoryI):
    _iface = _service_iface(_op[len("_op_") :]) if _op.startswith("_op_") else None
    if _iface is not None:
        setattr(ServiceFactoryI, _op[len("_op_") :], _service_getter(_iface))
