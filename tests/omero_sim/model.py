"""omero.model and omero.sys values built from the simulator's sessions and users."""

from __future__ import annotations

import time
from typing import Any

import omero
import omero.model
import omero.sys
from omero.rtypes import rbool, rint, rlong, rstring, rtime

from tests.omero_sim.directory import Directory, Image, User
from tests.omero_sim.sessions import Session

ADMIN_PRIVILEGES = (
    "Chgrp",
    "Chown",
    "DeleteFile",
    "DeleteManagedRepo",
    "DeleteOwned",
    "DeleteScriptRepo",
    "ModifyGroup",
    "ModifyGroupMembership",
    "ModifyUser",
    "ReadSession",
    "Sudo",
    "WriteFile",
    "WriteManagedRepo",
    "WriteOwned",
    "WriteScriptRepo",
)


def _ms(seconds: float) -> int:
    return int(seconds * 1000)


def event_context(directory: Directory, session: Session) -> Any:
    """The omero.sys.EventContext of a session."""
    user = session.user
    group = directory.groups[session.group]
    return omero.sys.EventContext(
        shareId=-1,
        sessionId=session.id,
        sessionUuid=session.key,
        userId=user.id,
        userName=user.name,
        sudoerId=None,
        sudoerName=None,
        groupId=group.id,
        groupName=group.name,
        isAdmin=user.admin,
        adminPrivileges=list(ADMIN_PRIVILEGES) if user.admin else [],
        eventId=-1,
        eventType="User",
        memberOfGroups=[directory.groups[g].id for g in user.groups],
        leaderOfGroups=[directory.groups[g].id for g in user.leads],
        groupPermissions=omero.model.PermissionsI(group.permissions),
    )


def experimenter(directory: Directory, user: User) -> Any:
    """A loaded omero.model.Experimenter with its group memberships."""
    exp = omero.model.ExperimenterI(user.id, True)
    exp.omeName = rstring(user.name)
    exp.firstName = rstring(user.first)
    exp.lastName = rstring(user.last)
    exp.email = rstring("")
    exp.ldap = rbool(False)
    for name in user.groups:
        group = omero.model.ExperimenterGroupI(directory.groups[name].id, True)
        group.name = rstring(name)
        group.details.permissions = omero.model.PermissionsI(directory.groups[name].permissions)
        link = exp.linkExperimenterGroup(group)
        link.owner = rbool(name in user.leads)
    return exp


def group(directory: Directory, name: str) -> Any:
    """A loaded omero.model.ExperimenterGroup."""
    found = directory.groups[name]
    grp = omero.model.ExperimenterGroupI(found.id, True)
    grp.name = rstring(found.name)
    grp.details.permissions = omero.model.PermissionsI(found.permissions)
    return grp


def session_object(directory: Directory, session: Session) -> Any:
    """The omero.model.Session of a session, as ISession.getSession returns it."""
    obj = omero.model.SessionI(session.id, True)
    obj.uuid = rstring(session.key)
    obj.timeToIdle = rlong(_ms(session.tti))
    obj.timeToLive = rlong(_ms(session.ttl))
    obj.started = rtime(_ms(time.time() - (time.monotonic() - session.started)))
    obj.userAgent = rstring(session.agent)
    obj.defaultEventType = rstring("User")
    obj.details.owner = omero.model.ExperimenterI(session.user.id, False)
    obj.details.group = omero.model.ExperimenterGroupI(directory.groups[session.group].id, False)
    return obj


def image(directory: Directory, found: Image) -> Any:
    """A loaded omero.model.Image with its owner, group and primary pixels (one plane)."""
    img = omero.model.ImageI(found.id, True)
    img.name = rstring(found.name)
    img.description = rstring(f"{found.name} of {found.dataset}")
    img.acquisitionDate = rtime(0)
    img.archived = rbool(False)
    img.partial = rbool(False)
    owner = directory.users[found.owner]
    img.details.owner = omero.model.ExperimenterI(owner.id, False)
    img.details.group = group(directory, found.group)
    img.details.permissions = omero.model.PermissionsI(directory.groups[found.group].permissions)
    pixels = omero.model.PixelsI(found.id, True)
    pixels.sizeX = rint(found.size[0])
    pixels.sizeY = rint(found.size[1])
    pixels.sizeZ = rint(1)
    pixels.sizeC = rint(1)
    pixels.sizeT = rint(1)
    pixels.details.owner = img.details.owner
    pixels.details.group = img.details.group
    img.addPixels(pixels)
    return img
