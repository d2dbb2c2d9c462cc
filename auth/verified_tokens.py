"""Identities of tokens verified lately, so a script's token is not checked on every request."""

from __future__ import annotations

import hashlib
import time

from cachetools import TTLCache

from auth.sso_identity import SsoIdentity


class VerifiedTokens:
    """Identities of tokens verified lately, so a script's token is not checked again on
    every request: keyed by the token's SHA-256, kept until the token's `exp` and at most
    `ttl` seconds, bounded in number. Only accepted tokens are kept."""

    def __init__(self, maxsize: int = 10_000, ttl: float = 60.0) -> None:
        self._cache: TTLCache[bytes, tuple[SsoIdentity, float]] = TTLCache(maxsize, ttl)

    def get(self, token: str) -> SsoIdentity | None:
        found = self._cache.get(_digest(token))
        if found is None or time.time() >= found[1]:
            return None
        return found[0]

    def put(self, token: str, identity: SsoIdentity, expires: float) -> None:
        self._cache[_digest(token)] = (identity, expires)


def _digest(token: str) -> bytes:
    # surrogateescape: a header's undecodable bytes hash as themselves instead of raising
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).digest()
