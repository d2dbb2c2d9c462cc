"""Web origins (``scheme://host[:port]``) in one comparable form."""

from __future__ import annotations

import re

# Browsers send a serialised origin: no path, no userinfo, no trailing slash.
_ORIGIN = re.compile(
    r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*)://"
    r"(?P<host>\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.~-]+)"
    r"(?::(?P<port>[0-9]{1,5}))?"
)
_DEFAULT_PORTS = {"http": "80", "https": "443"}
# Longer than any real origin; bounds the work of origin patterns.
MAX_ORIGIN_LENGTH = 300


def normalise_origin(origin: str) -> str | None:
    """`origin` lower-cased with a default port removed, or None when it is not an origin.

    ``null`` (sandboxed frames, file: pages) is returned as ``"null"``.
    """
    if origin == "null":
        return "null"
    if len(origin) > MAX_ORIGIN_LENGTH:
        return None
    match = _ORIGIN.fullmatch(origin)
    if match is None:
        return None
    scheme, host, port = match["scheme"].lower(), match["host"].lower(), match["port"]
    if port is not None and not 0 < int(port) <= 65535:
        return None
    if port is None or _DEFAULT_PORTS.get(scheme) == port.lstrip("0"):
        return f"{scheme}://{host}"
    return f"{scheme}://{host}:{int(port)}"


def check_origins(origins: tuple[str, ...]) -> None:
    """Settings ``check``: every item is an origin like ``https://example.org``."""
    for index, origin in enumerate(origins):
        if origin == "null":
            raise ValueError(f"item {index}: use allow_null_origin = true to allow 'null'")
        if normalise_origin(origin) is None:
            raise ValueError(
                f"item {index} ({origin!r}) is not an origin: write scheme://host[:port], "
                "e.g. https://example.org, with no path or trailing /"
            )
