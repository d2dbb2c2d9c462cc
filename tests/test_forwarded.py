"""filters/forwarded.py: X-Forwarded-* believed only from trusted proxies."""

from __future__ import annotations

from filters.forwarded import TrustedProxies


def test_an_untrusted_peer_is_the_client_whatever_it_claims() -> None:
    client = TrustedProxies().resolve(
        "203.0.113.9", "http", "omero.example.org", ["198.51.100.1"], ["https"], ["evil.example"]
    )
    assert (client.address, client.scheme, client.host) == (
        "203.0.113.9",
        "http",
        "omero.example.org",
    )
    assert client.forwarded_for == ("203.0.113.9",)


def test_the_chain_is_walked_from_porter_outwards_to_the_first_untrusted_hop() -> None:
    proxies = TrustedProxies(["10.0.0.0/8"])
    client = proxies.resolve(
        "10.0.0.2",
        "http",
        "internal:8080",
        ["198.51.100.7, 203.0.113.9", "10.0.0.5"],
        ["https"],
        ["images.example.org"],
    )
    assert client.address == "203.0.113.9"  # what 203.0.113.9 claims about earlier hops: ignored
    assert client.forwarded_for == ("203.0.113.9", "10.0.0.5", "10.0.0.2")
    assert (client.scheme, client.host) == ("https", "images.example.org")


def test_malformed_forwarded_values_are_not_believed() -> None:
    proxies = TrustedProxies(["127.0.0.0/8"])
    client = proxies.resolve(
        "127.0.0.1", "http", "omero.example.org", ["not-an-ip"], ["gopher"], ["evil/../x"]
    )
    assert client.address == "127.0.0.1"  # an unparseable hop stops the walk at the peer
    assert client.scheme == "http"
    assert client.host == "omero.example.org"


def test_ipv4_mapped_ipv6_peers_are_trusted_as_their_ipv4() -> None:
    proxies = TrustedProxies(["127.0.0.0/8"])
    assert proxies.trusts_text("::ffff:127.0.0.1")
    assert not proxies.trusts_text("::ffff:192.0.2.1")
    assert not proxies.trusts_text("unknown")
