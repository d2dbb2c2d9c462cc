"""The simulated OMERO services: IAdmin, IConfig, ISession; and the unsimulated rest."""

from __future__ import annotations

import re
import time
from typing import Any

import Ice
import omero
import omero.api
import omero.clients
import omero.constants

from tests.omero_sim import model
from tests.omero_sim.directory import User
from tests.omero_sim.fallback import fail_fast
from tests.omero_sim.images import THUMBNAIL_STORE, QueryI, ThumbnailStoreI
from tests.omero_sim.state import SimState


@fail_fast
class AdminI(omero.api.IAdmin):  # type: ignore[misc]
    def __init__(self, state: SimState) -> None:
        self.state = state

    def getEventContext_async(self, cb: Any, current: Any) -> None:
        session = self.state.session_of(current)
        cb.ice_response(model.event_context(self.state.directory, session))

    def getExperimenter_async(self, cb: Any, user_id: int, current: Any) -> None:
        self.state.session_of(current)
        user = self.state.directory.user_by_id(user_id)
        if user is None:
            cb.ice_exception(omero.ApiUsageException(None, None, f"No experimenter {user_id}"))
            return
        cb.ice_response(model.experimenter(self.state.directory, user))

    def lookupExperimenter_async(self, cb: Any, name: str, current: Any) -> None:
        self.state.session_of(current)
        user = self.state.directory.users.get(name)
        if user is None:
            cb.ice_exception(omero.ApiUsageException(None, None, f"No experimenter {name}"))
            return
        cb.ice_response(model.experimenter(self.state.directory, user))

    def getMemberOfGroupIds_async(self, cb: Any, exp: Any, current: Any) -> None:
        user = self._user(exp, current)
        cb.ice_response([self.state.directory.groups[g].id for g in user.groups])

    def getLeaderOfGroupIds_async(self, cb: Any, exp: Any, current: Any) -> None:
        user = self._user(exp, current)
        cb.ice_response([self.state.directory.groups[g].id for g in user.leads])

    def getSecurityRoles_async(self, cb: Any, current: Any) -> None:
        self.state.session_of(current)
        cb.ice_response(
            omero.sys.Roles(
                rootId=0,
                rootName="root",
                systemGroupId=0,
                systemGroupName="system",
                userGroupId=1,
                userGroupName="user",
                guestId=1,
                guestName="guest",
                guestGroupId=2,
                guestGroupName="guest",
            )
        )

    def _user(self, exp: Any, current: Any) -> User:
        session = self.state.session_of(current)
        if exp is None:
            return session.user
        return self.state.directory.user_by_id(exp.id.val) or session.user


@fail_fast
class ConfigI(omero.api.IConfig):  # type: ignore[misc]
    def __init__(self, state: SimState) -> None:
        self.state = state

    def getVersion_async(self, cb: Any, current: Any) -> None:
        cb.ice_response(self.state.version)

    def getConfigValue_async(self, cb: Any, key: str, current: Any) -> None:
        cb.ice_response(self.state.config.get(key, ""))

    def getConfigValues_async(self, cb: Any, regex: str, current: Any) -> None:
        pattern = re.compile(regex)
        cb.ice_response({k: v for k, v in self.state.config.items() if pattern.search(k)})

    def getConfigDefaults_async(self, cb: Any, current: Any) -> None:
        cb.ice_response(dict(self.state.config))

    def getClientConfigValues_async(self, cb: Any, current: Any) -> None:
        cb.ice_response(
            {k: v for k, v in self.state.config.items() if k.startswith("omero.client.")}
        )

    def getClientConfigDefaults_async(self, cb: Any, current: Any) -> None:
        self.getClientConfigValues_async(cb, current)

    def getDatabaseUuid_async(self, cb: Any, current: Any) -> None:
        cb.ice_response("00000000-0000-0000-0000-0000000051a0")

    def getServerTime_async(self, cb: Any, current: Any) -> None:
        cb.ice_response(omero.rtypes.rtime(int(time.time() * 1000)))

    getDatabaseTime_async = getServerTime_async


def _seconds(ms: int) -> float:
    return max(ms, 0) / 1000.0


@fail_fast
class SessionServiceI(omero.api.ISession):  # type: ignore[misc]
    def __init__(self, state: SimState) -> None:
        self.state = state

    def _create(
        self, cb: Any, principal: Any, ttl_ms: int, tti_ms: int | None, current: Any
    ) -> None:
        caller = self.state.session_of(current)
        if not caller.user.admin:
            cb.ice_exception(
                omero.SecurityViolation(
                    None, None, "Only administrators may create sessions for other users"
                )
            )
            return
        user = self.state.directory.users.get(principal.name if principal else "")
        if user is None:
            cb.ice_exception(omero.ApiUsageException(None, None, "Unknown user"))
            return
        group = principal.group or None
        tti = None if tti_ms is None or tti_ms == 0 else _seconds(tti_ms)
        session = self.state.registry.create_for(
            user,
            _seconds(ttl_ms),
            tti,
            current.ctx.get(omero.constants.AGENT, ""),
            current.ctx.get(omero.constants.IP, ""),
            group,
        )
        cb.ice_response(model.session_object(self.state.directory, session))

    def createSessionWithTimeouts_async(
        self, cb: Any, principal: Any, ttl_ms: int, tti_ms: int, current: Any
    ) -> None:
        self._create(cb, principal, ttl_ms, tti_ms, current)

    def createSessionWithTimeout_async(
        self, cb: Any, principal: Any, ttl_ms: int, current: Any
    ) -> None:
        self._create(cb, principal, ttl_ms, None, current)

    def createSession_async(self, cb: Any, principal: Any, credentials: str, current: Any) -> None:
        self.state.session_of(current)
        name = principal.name if principal else ""
        session = self.state.registry.login(
            name, credentials, current.ctx.get(omero.constants.AGENT, "")
        )
        if session is None:
            cb.ice_exception(omero.SecurityViolation(None, None, "Password check failed"))
            return
        cb.ice_response(model.session_object(self.state.directory, session))

    def getSession_async(self, cb: Any, key: str, current: Any) -> None:
        self.state.session_of(current)
        session = self.state.registry.touch(key)
        if session is None:
            cb.ice_exception(omero.RemovedSessionException(None, None, "No session"))
            return
        cb.ice_response(model.session_object(self.state.directory, session))

    def getReferenceCount_async(self, cb: Any, key: str, current: Any) -> None:
        self.state.session_of(current)
        session = self.state.registry.peek(key)
        if session is None:
            cb.ice_exception(omero.RemovedSessionException(None, None, "No session"))
            return
        cb.ice_response(session.refcount)

    def closeSession_async(self, cb: Any, sess: Any, current: Any) -> None:
        self.state.session_of(current)
        key = sess.uuid.val if sess is not None and sess.uuid is not None else ""
        if self.state.registry.peek(key) is None:
            cb.ice_exception(omero.RemovedSessionException(None, None, "No session"))
            return
        cb.ice_response(self.state.registry.close(key))

    def getMyOpenSessions_async(self, cb: Any, current: Any) -> None:
        caller = self.state.session_of(current)
        mine = [
            s
            for s in (self.state.registry.peek(d["key"]) for d in self.state.registry.describe())
            if s is not None and s.user.name == caller.user.name
        ]
        cb.ice_response([model.session_object(self.state.directory, s) for s in mine])


def service_servants(state: SimState) -> dict[str, Ice.Object]:
    """The simulated services by the identity name ServiceFactory gives them."""
    return {
        "omero.api.IAdmin": AdminI(state),
        "omero.api.IConfig": ConfigI(state),
        "omero.api.ISession": SessionServiceI(state),
        "omero.api.IQuery": QueryI(state),
        THUMBNAIL_STORE: ThumbnailStoreI(state),
    }


def unsimulated_service(iface: str) -> Ice.Object | None:
    """A servant for an OMERO service not simulated: every operation fails at once."""
    cls = getattr(omero.api, iface.rsplit(".", 1)[-1], None)
    if not isinstance(cls, type) or not issubclass(cls, Ice.Object):
        return None
    servant: Ice.Object = fail_fast(type(cls.__name__ + "Unsimulated", (cls,), {}))()
    return servant
