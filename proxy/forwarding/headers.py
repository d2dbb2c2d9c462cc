"""Header hygiene for both directions of the proxy."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from aiohttp import hdrs
from multidict import CIMultiDict, CIMultiDictProxy

# RFC 9110 section 7.6.1, plus the non-standard ones still seen in the wild.
HOP_BY_HOP = frozenset(
    h.lower()
    for h in (
        hdrs.CONNECTION,
        "Proxy-Connection",
        hdrs.KEEP_ALIVE,
        hdrs.PROXY_AUTHENTICATE,
        hdrs.PROXY_AUTHORIZATION,
        hdrs.TE,
        hdrs.TRAILER,
        hdrs.TRANSFER_ENCODING,
        hdrs.UPGRADE,
    )
)


def connection_tokens(headers: CIMultiDictProxy[str] | CIMultiDict[str]) -> set[str]:
    """Header names listed in Connection: they are hop-by-hop for this message only."""
    return {
        token.strip().lower()
        for value in headers.getall(hdrs.CONNECTION, ())
        for token in value.split(",")
        if token.strip()
    }


def skip_set(drop: Iterable[str] = ()) -> frozenset[str]:
    """The lower-cased names `end_to_end` leaves out: hop-by-hop ones and `drop` (build once)."""
    return HOP_BY_HOP | frozenset(d.lower() for d in drop)


def end_to_end(
    headers: CIMultiDictProxy[str] | CIMultiDict[str],
    skip: frozenset[str] = HOP_BY_HOP,
    skip_shape: Callable[[str], bool] | None = None,
) -> CIMultiDict[str]:
    """A copy of `headers` without the names in `skip` (see `skip_set`), those whose
    lower-cased name `skip_shape` refuses, and the headers this message's Connection names,
    in one pass."""
    if hdrs.CONNECTION in headers:
        skip = skip | connection_tokens(headers)
    if skip_shape is None:
        return CIMultiDict(
            [(name, value) for name, value in headers.items() if name.lower() not in skip]
        )
    return CIMultiDict(
        [
            (name, value)
            for name, value in headers.items()
            if (lower := name.lower()) not in skip and not skip_shape(lower)
        ]
    )
