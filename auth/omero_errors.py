"""The errors of porter's OMERO backend. Nothing Ice-specific escapes auth/: every Ice or
omero-py exception is translated, in one place (auth/omero_ice.py), into one of these.

    OmeroError
     ├── UnknownServer        no server_list entry has that id or name (OMERO not contacted)
     ├── InvalidCredentials   wrong password, unknown user, locked account, empty username or
     │                        password (refused before contacting OMERO)
     ├── ServerUnavailable    refused, unreachable, DNS, SSL or socket failure, or no answer
     │                        within the configured timeout
     ├── SessionGone          the OMERO session key is unknown, closed or timed out
     ├── PermissionDenied     the server refused the operation to this user (e.g. a non-admin
     │                        creating a session for someone else)
     ├── AdminRefused         OMERO says the user has admin privileges, and porter's policy
     │                        keeps admins out of this way in (SSO; the session is closed)
     └── OtherOmeroError      anything else the server or omero-py raised

    HandoffFailed             not an OMERO error: OMERO.web (HTTP) did not take an OMERO
                              session over (no cookie, an error, no answer); raised by the
                              handoff porter injects into the public and SSO sessions

In porter's tree (porter_errors.py) OmeroError and HandoffFailed are UpstreamFailed (502),
ServerUnavailable is also Unavailable (503) and SessionGone also SessionEnded (log in again).

Messages name the server id and, for errors from OMERO, the Ice type name (`ice_type`); they
never contain a session key, password or user-supplied secret, so they are safe to log.
"""

from __future__ import annotations

from porter_errors import SessionEnded, Unavailable, UpstreamFailed

__all__ = [
    "AdminRefused",
    "HandoffFailed",
    "InvalidCredentials",
    "OmeroError",
    "OtherOmeroError",
    "PermissionDenied",
    "ServerUnavailable",
    "SessionGone",
    "UnknownServer",
]


class OmeroError(UpstreamFailed):
    """Base of every error of the OMERO backend.

    `server_id` is the server_list id the call was for (None when unknown);
    `ice_type` the type name of the Ice/omero-py exception behind it (None when porter
    raised it itself).
    """

    def __init__(
        self, message: str, *, server_id: int | None = None, ice_type: str | None = None
    ) -> None:
        super().__init__(message)
        self.server_id = server_id
        self.ice_type = ice_type


class UnknownServer(OmeroError, LookupError):
    """No server_list entry has that id or name."""


class InvalidCredentials(OmeroError):
    """The server (or porter, for empty values) refused the user name and password."""


class ServerUnavailable(Unavailable, OmeroError):
    """The server could not be reached or did not answer in time; worth retrying later."""


class SessionGone(SessionEnded, OmeroError):
    """The OMERO session is unknown, closed or expired on the server."""


class PermissionDenied(OmeroError):
    """The server refused the operation to the user the call ran as."""


class AdminRefused(OmeroError):
    """OMERO says the user has admin privileges (isAdmin or any adminPrivileges), and porter
    does not let admins in this way unless allowed by name; the session made was closed."""


class GroupRefused(OmeroError):
    """The OMERO group asked for a session is not one of the user's groups (or the session
    OMERO made is in another group); no session is left open."""


class OtherOmeroError(OmeroError):
    """Any other failure from OMERO or omero-py; `ice_type` names it."""


class HandoffFailed(UpstreamFailed):
    """OMERO.web did not take an OMERO session over (`?server=&bsession=` answered without
    its session cookie, with an error, or not in time): an HTTP failure of OMERO.web, not of
    OMERO. `server_id` is the server the session was on (None when unknown)."""

    def __init__(self, message: str, *, server_id: int | None = None) -> None:
        super().__init__(message)
        self.server_id = server_id
