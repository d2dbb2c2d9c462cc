"""The Host a request names: well-formed, and one porter serves (``proxy.allowed_hosts``).

A Host header is passed on to OMERO.web and into ``X-Forwarded-Host``, where Django builds
absolute URLs from it. So it is refused (400) unless it is a host name or an IP literal with
an optional port, and, when ``allowed_hosts`` does not hold ``*``, one of those listed
(Django's ``ALLOWED_HOSTS`` rules: exact names, or ``.example.org`` for the domain and its
subdomains; compared without the port, case-insensitively).
"""

from __future__ import annotations

import re
from collections.abc import Iterable

# A DNS name (labels of letters, digits and hyphens) or a bracketed IPv6 literal; optional port.
HOST = re.compile(
    r"(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?)(?::[0-9]{1,5})?"
)
_NAME = re.compile(r"\.?[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?\.?|\[[0-9A-Fa-f:.]+\]")


def well_formed(host: str) -> bool:
    """Whether `host` is ``name[:port]`` or ``[v6]:port`` and nothing else."""
    return len(host) <= 260 and HOST.fullmatch(host) is not None


def host_name(host: str) -> str:
    """`host` without its port, lower-cased and without a trailing dot."""
    if host.startswith("["):
        return host[: host.index("]") + 1].lower()
    return host.rsplit(":", 1)[0].lower().rstrip(".")


def check_allowed_hosts(entries: tuple[str, ...]) -> None:
    """Settings ``check`` for ``allowed_hosts``."""
    if not entries:
        raise ValueError("list at least one host name, or '*'")
    for entry in entries:
        if entry != "*" and not _NAME.fullmatch(entry):
            raise ValueError(f"{entry!r} is not a host name, '.domain' or '*'")


_KNOWN_HOSTS = 256


class AllowedHosts:
    """Which Host values porter serves."""

    def __init__(self, entries: Iterable[str]) -> None:
        entries = tuple(entries)
        self.any = "*" in entries
        names = [e.lower().rstrip(".") for e in entries if e != "*"]
        self._exact = frozenset(n for n in names if not n.startswith("."))
        self._domains = tuple(n for n in names if n.startswith("."))
        # A site is asked for by a handful of names: remember the answers (bounded).
        self._known: dict[str, bool] = {}

    def allows(self, host: str) -> bool:
        """Whether a request naming `host` is served (`host` may carry a port)."""
        known = self._known.get(host)
        if known is None:
            known = self._decide(host)
            if len(self._known) < _KNOWN_HOSTS:
                self._known[host] = known
        return known

    def _decide(self, host: str) -> bool:
        if not well_formed(host):
            return False
        if self.any:
            return True
        name = host_name(host)
        return name in self._exact or any(name == d[1:] or name.endswith(d) for d in self._domains)
