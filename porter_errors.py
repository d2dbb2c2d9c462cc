"""Porter's exceptions: one root, five branches. Every exception class porter defines
descends from one branch, and the error boundary (proxy/middleware/boundary.py) answers each
by the first class of its MRO that has a row, so no answer depends on the order of a list.

    PorterError
     ├── Refused         porter's own decision: `status` (4xx) and what the user is told
     │    ├── SsoError   a token, an identity or an OpenID step refused (401/403/400; 502
     │    │              or 503 when the provider failed), with a stable `reason` code
     │    └── ...        BadPath 400, BodyTooLarge 413, FormTooLarge 413, LoginFailed
     ├── Unavailable     a part porter needs cannot answer now: 503, worth retrying
     │                   (the session store, an OMERO server, a JWKS, OMERO.web's slots)
     ├── UpstreamFailed  OMERO or OMERO.web answered with a failure: 502
     │                   (OmeroError and its family, HandoffFailed)
     ├── SessionEnded    the session a request named is over: log in again
     └── Internal        raised and caught inside porter: a configuration problem at start
                         (ConfigError), a signal between two functions of one module
                         (MatchTimeout, DeliveryError, ...). One that reaches the boundary
                         is a bug: 500, its traceback mailed to the admins

Each library's exceptions (Ice, Redis, aiohttp's client, PyJWT, aiosmtplib) are translated
into these once, at the module that calls the library. Messages never hold a secret.
"""

from __future__ import annotations

from collections.abc import Mapping

__all__ = [
    "Internal",
    "PorterError",
    "Refused",
    "SessionEnded",
    "Unavailable",
    "UpstreamFailed",
]


class PorterError(Exception):
    """The root of every exception porter defines (never raised itself)."""


class Refused(PorterError):
    """Porter's own decision, made deep inside a handler: `status` and what the user is told,
    with `headers` to send along (Allow, Retry-After, ...)."""

    def __init__(self, status: int, message: str, headers: Mapping[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = dict(headers or {})


class Unavailable(PorterError):
    """A part porter needs cannot answer now (503); trying again later may work."""


class UpstreamFailed(PorterError):
    """OMERO or OMERO.web answered with a failure, or not as the protocol says (502)."""


class SessionEnded(PorterError):
    """The session the request named is over: the browser logs in again."""


class Internal(PorterError):
    """Raised and caught inside porter; one that reaches the error boundary is a bug (500)."""
