"""Commands submitted to the ServiceFactory (``sf.submit``): ResetPasswordRequest only.

OMERO checks that the user name and e-mail address belong to one account, sets a new
password and mails it; the sim counts ``password_resets`` (matched) and
``password_reset_refusals`` and answers the handle at once with OK or ERR, as OMERO does.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

import omero
import omero.clients  # before omero.cmd: it loads omero.model in order
import omero.cmd

from tests.omero_sim.fallback import fail_fast

if TYPE_CHECKING:  # state.py holds the handles: no import at run time
    from tests.omero_sim.state import SimState

HANDLE = "omero.cmd.Handle"  # identity names: HANDLE + "/" + uuid


def run_command(state: SimState, request: Any) -> Any:
    """The response of `request`: omero.cmd.OK, or ERR naming why."""
    if not isinstance(request, omero.cmd.ResetPasswordRequest):
        return omero.cmd.ERR(category="::omero::cmd::Unknown", name="not simulated")
    user = state.directory.users.get(request.omename)
    registry = state.registry
    with registry._lock:
        if user is None or not user.email or user.email != request.email:
            registry.stats["password_reset_refusals"] += 1
            return omero.cmd.ERR(
                category=request.ice_staticId(), name="unknown-user-or-email", parameters={}
            )
        registry.stats["password_resets"] += 1
    return omero.cmd.OK()


@fail_fast
class HandleI(omero.cmd.Handle):  # type: ignore[misc]
    """One servant for every handle; each identity keeps its command's response."""

    def __init__(self) -> None:
        self._responses: dict[str, Any] = {}
        self._lock = threading.Lock()

    def answer(self, name: str, response: Any) -> None:
        with self._lock:
            self._responses[name] = response

    def getResponse(self, current: Any = None) -> Any:
        with self._lock:
            return self._responses.get(current.id.name)

    def getStatus(self, current: Any = None) -> Any:
        status = omero.cmd.Status()
        status.steps = status.currentStep = 1
        status.flags = []
        return status

    def getRequest(self, current: Any = None) -> Any:
        return None

    def addCallback(self, cb: Any, current: Any = None) -> None:
        pass

    def removeCallback(self, cb: Any, current: Any = None) -> None:
        pass

    def cancel(self, current: Any = None) -> bool:
        return False

    def close(self, current: Any = None) -> None:
        with self._lock:
            self._responses.pop(current.id.name, None)
