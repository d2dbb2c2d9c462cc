"""Who the client is: believe X-Forwarded-* only when the peer is a trusted proxy."""

from __future__ import annotations

import functools
import ipaddress
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from filters.hosts import well_formed

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# Headers a client may use to claim an address, scheme or host; porter sets its own.
FORWARDING_HEADERS = (
    "Forwarded",
    "X-Forwarded-For",
    "X-Forwarded-Proto",
    "X-Forwarded-Host",
    "X-Forwarded-Port",
    "X-Forwarded-Prefix",
    "X-Forwarded-Server",
    "X-Forwarded-Ssl",
    "X-Real-IP",
    "X-Client-IP",
)


# Headers that name a user to whatever trusts them (Apache's REMOTE_USER, oauth2-proxy,
# Authelia, forward-auth answers): a client never sends them to OMERO.web, in case a later
# OMERO.web set-up believes one. These names, and every name of the same shape
# (`is_identity_header`): a list of names misses the next product's.
IDENTITY_HEADERS = (
    "Remote-User",
    "Remote-Groups",
    "Remote-Email",
    "Remote-Name",
    "X-Remote-User",
    "X-Remote-Group",
    "X-Forwarded-User",
    "X-Forwarded-Email",
    "X-Forwarded-Groups",
    "X-Forwarded-Preferred-Username",
    "X-Auth-Request-User",
    "X-Auth-Request-Email",
    "X-Auth-Request-Groups",
    "X-Auth-Request-Preferred-Username",
    "X-Webauth-User",
    "X-Porter-User",
    "X-Porter-Kind",
)


# *-User, *-Username, *-Email, *-Group(s), *-Role(s), and Remote-* / *-Remote-*.
_IDENTITY_SHAPE = re.compile(r"(?:^|-)remote-|-(?:user|username|email|groups?|roles?)\Z")


@functools.lru_cache(maxsize=1024)  # header names repeat from request to request
def is_identity_header(lower_name: str) -> bool:
    """Whether a (lower-cased) header name has the shape of one that names a user."""
    return _IDENTITY_SHAPE.search(lower_name) is not None


@dataclass(frozen=True)
class Client:
    """The client as porter believes it: address, scheme and host, and the hops to report."""

    address: str
    scheme: str
    host: str
    forwarded_for: tuple[str, ...]


@functools.lru_cache(maxsize=4096)  # the same few proxies and clients, request after request
def _parse_ip(text: str) -> IPAddress | None:
    text = text.strip()
    if text.startswith("[") and "]" in text:  # [v6]:port
        text = text[1 : text.index("]")]
    elif text.count(":") == 1:  # v4:port
        text = text.split(":", 1)[0]
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def _last_value(values: Sequence[str]) -> str | None:
    items = [v.strip() for value in values for v in value.split(",") if v.strip()]
    return items[-1] if items else None


def check_cidrs(value: Iterable[str]) -> None:
    """Settings ``check`` for a list of addresses or CIDR networks."""
    for item in value:
        try:
            ipaddress.ip_network(item, strict=False)
        except ValueError:
            raise ValueError(f"{item!r} is not an IP address or CIDR network") from None


class TrustedProxies:
    """The peers whose forwarding headers are believed (default: none)."""

    def __init__(self, cidrs: Iterable[str] = ()) -> None:
        self._networks: tuple[IPNetwork, ...] = tuple(
            ipaddress.ip_network(c, strict=False) for c in cidrs
        )
        # peers and hops repeat from request to request: their verdicts are kept, bounded
        self._trusted_text = functools.lru_cache(maxsize=4096)(self.trusts_text)

    def trusts(self, address: IPAddress | None) -> bool:
        if address is None:
            return False
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        return any(address in net for net in self._networks)

    def trusts_text(self, address: str) -> bool:
        """`trusts` for an address as text (False when it is not an IP address)."""
        return self.trusts(_parse_ip(address))

    def resolve(
        self,
        peer: str | None,
        scheme: str,
        host: str | None,
        forwarded_for: Sequence[str] = (),
        forwarded_proto: Sequence[str] = (),
        forwarded_host: Sequence[str] = (),
    ) -> Client:
        """The client behind `peer`; header values are all those the request carried."""
        peer_text = peer or "unknown"
        host = host or ""
        if not self._networks:  # nobody is trusted (the default): no address to parse
            return Client(peer_text, scheme, host, (peer_text,))
        if not self._trusted_text(peer_text):
            return Client(peer_text, scheme, host, (peer_text,))
        hops = [h.strip() for value in forwarded_for for h in value.split(",") if h.strip()]
        chain = [*hops, peer_text]
        index = self._client_index(chain)
        client = chain[index]
        proto = _last_value(forwarded_proto)
        if proto is not None and proto.lower() in ("http", "https"):
            scheme = proto.lower()
        fwd_host = _last_value(forwarded_host)
        if fwd_host is not None and well_formed(fwd_host):
            host = fwd_host
        return Client(_canonical(client) or client, scheme, host, tuple(chain[index:]))

    def _client_index(self, chain: Sequence[str]) -> int:
        """Where the client stands in `chain` (hops, then the trusted peer): walking from
        the nearest hop outwards, the first hop not trusted (or not an address's neighbour)."""
        index = len(chain) - 1
        while index > 0:
            candidate = chain[index - 1]
            if _canonical(candidate) is None:
                break
            index -= 1
            if not self._trusted_text(candidate):
                break
        return index


@functools.lru_cache(maxsize=4096)
def _canonical(text: str) -> str | None:
    """An address as text in its one spelling, None when it is not an IP address."""
    ip = _parse_ip(text)
    return None if ip is None else str(ip)
