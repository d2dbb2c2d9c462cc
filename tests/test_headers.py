"""proxy/forwarding/headers.py: hop-by-hop headers never cross porter, either way."""

from __future__ import annotations

from multidict import CIMultiDict

from proxy.forwarding.headers import HOP_BY_HOP, connection_tokens, end_to_end, skip_set


def test_hop_by_hop_and_connection_named_headers_are_dropped() -> None:
    headers = CIMultiDict(
        [
            ("Connection", "keep-alive, X-Secret-Hop"),
            ("Connection", "Upgrade"),
            ("X-Secret-Hop", "1"),
            ("Keep-Alive", "timeout=5"),
            ("Transfer-Encoding", "chunked"),
            ("Proxy-Authorization", "Basic abc"),
            ("Accept", "text/html"),
            ("Cookie", "a=1"),
            ("Cookie", "b=2"),
        ]
    )
    assert connection_tokens(headers) == {"keep-alive", "x-secret-hop", "upgrade"}
    kept = end_to_end(headers)
    assert list(kept.items()) == [("Accept", "text/html"), ("Cookie", "a=1"), ("Cookie", "b=2")]


def test_names_in_drop_are_dropped_whatever_their_case() -> None:
    headers = CIMultiDict([("x-forwarded-for", "1.2.3.4"), ("X-Keep", "yes")])
    skip = skip_set(("X-Forwarded-For",))
    assert list(end_to_end(headers, skip).items()) == [("X-Keep", "yes")]


def test_the_hop_by_hop_list_is_rfc_9110s_plus_proxy_connection() -> None:
    assert {
        "connection",
        "proxy-connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    } == HOP_BY_HOP
