"""server_list: the OMERO servers porter may log in to, as OMERO.web numbers them.

Entries use OMERO.web's shape, ``[host, port, name]`` (``omero.web.server_list`` pastes as is);
ids are 1-based in list order, as OMERO.web's ``server`` parameter. `host` is what omero-py's
``omero.client(host=, port=)`` accepts:

- a plain host name or IPv4 address: Glacier2 over SSL on `port` (OMERO's default is 4064);
  omero-py cannot use IPv6 literals (it writes the host unquoted into an Ice endpoint);
- a URL ``tcp://host[:port]``, ``ssl://host[:port]``, ``ws://host[:port][/path]`` or
  ``wss://host[:port][/path]``: that transport; a port in the URL wins over `port`
  (omero-py's rule), else `port` is used.

`name` is the display name and may be empty; lookup works by id (int or its decimal string,
as it comes from a query string) or by name.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from auth.omero_errors import UnknownServer

__all__ = ["Server", "ServerList", "check_server_list"]

# omero-py's own pattern (omero/clients.py, BaseClient._check_for_hosturl)
_HOST_URL = re.compile(r"(?P<protocol>\w+)://(?P<server>[^:/]+)(:(?P<port>\d+))?(?P<path>/.*)?$")
_PROTOCOLS = ("tcp", "ssl", "ws", "wss")
_HOSTNAME = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)(\.(?!-)[A-Za-z0-9-]{1,63}(?<!-))*\.?\Z")

Entry = tuple[str, int, str]


@dataclass(frozen=True)
class Server:
    """One server_list entry, validated."""

    id: int  # 1-based, OMERO.web's `server` parameter
    host: str  # as configured: plain host or URL, passed to omero.client unchanged
    port: int  # the port omero-py will use (the URL's when it has one)
    name: str | None  # display name; None when empty
    protocol: str  # "ssl", "tcp", "ws" or "wss"

    @property
    def label(self) -> str:
        """What to show a user or admin: the name, else the host."""
        return self.name or self.host

    @property
    def address(self) -> str:
        """Where porter connects, as a URL (for logs and error messages)."""
        if "://" in self.host:
            return self.host
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"ssl://{host}:{self.port}"


def _parse(index: int, entry: Entry) -> Server:
    host, port, name = entry
    _check_port(port)
    if not host or host != host.strip() or any(c.isspace() for c in host):
        raise ValueError(f"host {host!r} is empty or contains spaces")
    if name.isdigit():
        raise ValueError(f"name {name!r} is all digits: it would read as a server id")
    if "://" in host:
        protocol, url_port = _parse_url(host, port)
        return Server(index + 1, host, url_port, name or None, protocol)
    if not _is_host(host):
        raise ValueError(
            f"host {host!r} is not a host name, IPv4 address or omero-py URL "
            "(omero-py cannot use IPv6 literals: use a host name)"
        )
    return Server(index + 1, host, port, name or None, "ssl")


def _check_port(port: int) -> None:
    if not 1 <= port <= 65535:
        raise ValueError(f"port {port} is not between 1 and 65535")


def _parse_url(host: str, port: int) -> tuple[str, int]:
    """The protocol and port of an omero-py URL host (`port` when the URL names none)."""
    match = _HOST_URL.match(host)
    if match is None:
        raise ValueError(f"host {host!r} is not an omero-py URL (protocol://host[:port][/path])")
    protocol, path = match["protocol"], match["path"]
    if protocol not in _PROTOCOLS:
        raise ValueError(f"protocol {protocol!r} is not one of {', '.join(_PROTOCOLS)}")
    if path and protocol not in ("ws", "wss"):
        raise ValueError(f"a path is only allowed for ws:// and wss://, not {protocol}://")
    if not _is_host(match["server"]):
        raise ValueError(f"{match['server']!r} is not a host name or IPv4 address")
    url_port = int(match["port"]) if match["port"] else port
    _check_port(url_port)
    return protocol, url_port


def _is_host(value: str) -> bool:
    try:
        address = ipaddress.ip_address(value)
    except ValueError:
        return _HOSTNAME.match(value) is not None
    # omero-py writes the host unquoted into an Ice endpoint, where ':' separates endpoints
    return address.version == 4


class ServerList:
    """The configured servers, by 1-based id and by name."""

    def __init__(self, servers: Sequence[Server]) -> None:
        self._servers = tuple(servers)
        self._by_name = {s.name: s for s in self._servers if s.name is not None}

    @classmethod
    def from_entries(cls, entries: Sequence[Entry]) -> ServerList:
        """Validate ``[host, port, name]`` entries; ValueError names the first bad entry."""
        servers: list[Server] = []
        for index, entry in enumerate(entries):
            try:
                server = _parse(index, entry)
            except ValueError as exc:
                raise ValueError(f"entry [{index}] (server {index + 1}): {exc}") from None
            for other in servers:
                if (other.host, other.port) == (server.host, server.port):
                    raise ValueError(
                        f"entry [{index}] (server {index + 1}): same host and "
                        f"port as entry [{other.id - 1}]"
                    )
                if server.name is not None and other.name == server.name:
                    raise ValueError(
                        f"entry [{index}] (server {index + 1}): name "
                        f"{server.name!r} already names entry [{other.id - 1}]"
                    )
            servers.append(server)
        return cls(servers)

    def get(self, ref: int | str) -> Server:
        """The server with that id (int, or decimal string) or name; else UnknownServer."""
        if isinstance(ref, str) and ref.isdigit():
            ref = int(ref)
        if isinstance(ref, int) and not isinstance(ref, bool):
            if 1 <= ref <= len(self._servers):
                return self._servers[ref - 1]
        elif isinstance(ref, str) and ref in self._by_name:
            return self._by_name[ref]
        raise UnknownServer(
            f"no server {_show(ref)} in server_list (ids 1 to {len(self._servers)})"
        )

    def __iter__(self) -> Iterator[Server]:
        return iter(self._servers)

    def __len__(self) -> int:
        return len(self._servers)


def _show(ref: object) -> str:
    text = repr(ref)
    return text if len(text) <= 40 else text[:37] + "..."


def check_server_list(entries: Sequence[Entry]) -> None:
    """Settings `check`: raise ValueError naming the bad entry's index."""
    if not entries:
        raise ValueError("must list at least one server")
    ServerList.from_entries(entries)
