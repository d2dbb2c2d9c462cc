"""auth/verified_tokens.py: identities of accepted tokens, kept until the token expires."""

from __future__ import annotations

import time

from auth.sso_identity import SsoIdentity
from auth.verified_tokens import VerifiedTokens

BOB = SsoIdentity("bob", (), "https://idp.example.org", "sub-bob")


def test_an_identity_is_kept_until_its_token_expires() -> None:
    cache = VerifiedTokens()
    cache.put("token-a", BOB, time.time() + 30)
    cache.put("token-b", BOB, time.time() - 1)
    assert cache.get("token-a") == BOB
    assert cache.get("token-b") is None  # expired: verified again
    assert cache.get("token-c") is None


def test_at_most_ttl_seconds_and_maxsize_tokens_are_kept() -> None:
    cache = VerifiedTokens(maxsize=2, ttl=0.05)
    cache.put("a", BOB, time.time() + 300)
    time.sleep(0.1)
    assert cache.get("a") is None  # past the ttl, although the token is still valid
    for name in ("x", "y", "z"):
        cache.put(name, BOB, time.time() + 300)
    assert [cache.get(n) is not None for n in ("x", "y", "z")] == [False, True, True]


def test_a_token_with_undecodable_bytes_is_looked_up_without_an_error() -> None:
    cache = VerifiedTokens()
    assert cache.get("ey\udcff.x.y") is None
