"""OMERO.web's credentials in a query string: porter's business, never OMERO.web's.

OMERO.web's `login_required` (omeroweb/decorators.py, `get_authenticated_connection`) reads
from ``request.GET`` of ANY login-required view:

- ``bsession``: an OMERO session key to join;
- ``username`` and ``password``: a login;
- ``server``: the server_list id those are for.

and stores the resulting connection in the Django session the request came with. Forwarded,
one link would switch porter's held OMERO.web session (a user's, or the one shared by every
anonymous visitor) to another OMERO session, and let anyone try passwords unthrottled.
Porter refuses such requests (400) rather than strip the names, so that an OMERO.insight
"open in web" link (``?server=&bsession=``) gets a clear answer instead of a silent change.

Names are compared after the decoding Django applies (``%62session`` is ``bsession``).
"""

from __future__ import annotations

from urllib.parse import parse_qsl

# Pinned against the installed omero-web by tests/test_credentials.py.
OMERO_WEB_CREDENTIAL_PARAMS = frozenset({"bsession", "password", "server", "username"})
_NAMES = tuple(OMERO_WEB_CREDENTIAL_PARAMS)


def credential_params(query: str) -> list[str]:
    """The names in raw `query` that OMERO.web reads as credentials, sorted, each once.

    A name without ``=`` counts too (Django's QueryDict keeps it with an empty value).
    """
    if not query or ("%" not in query and not any(n in query for n in _NAMES)):
        return []  # the common case, without parsing
    names = {
        name
        for name, _ in parse_qsl(query, keep_blank_values=True, errors="replace")
        if name in OMERO_WEB_CREDENTIAL_PARAMS
    }
    return sorted(names)
