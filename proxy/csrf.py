"""CSRF tokens for porter's own forms: a signed double-submit cookie.

The browser holds a random nonce in an HttpOnly, SameSite=Strict cookie; a form carries
HMAC(secret, purpose, nonce). A cross-site page can neither read the nonce nor compute the
HMAC, and a cookie planted by a sibling domain is useless without the secret.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Callable

from aiohttp import web

COOKIE = "porter_csrf"
_NONCE = re.compile(r"[A-Za-z0-9_-]{22,64}\Z")


class Csrf:
    """Issue and check form tokens; `secret` from proxy.secret_key or random per process."""

    def __init__(
        self, secret: str | None, cookie_path: str, https: Callable[[web.Request], bool]
    ) -> None:
        """`https(request)`: whether the client's own connection is https (the trusted-proxy
        scheme, not the peer's): the nonce cookie is then Secure."""
        self._key = (secret or secrets.token_urlsafe(32)).encode()
        self._path = cookie_path
        self._https = https

    def _sign(self, nonce: str, purpose: str) -> str:
        message = f"{purpose}\x00{nonce}".encode()
        return hmac.new(self._key, message, hashlib.sha256).hexdigest()

    def token(self, request: web.Request, response: web.StreamResponse, purpose: str) -> str:
        """A token for a form answering `request`; sets the nonce cookie when missing."""
        nonce = request.cookies.get(COOKIE, "")
        if not _NONCE.match(nonce):
            nonce = secrets.token_urlsafe(24)
            response.set_cookie(
                COOKIE,
                nonce,
                path=self._path,
                httponly=True,
                samesite="Strict",
                secure=self._https(request),
            )
        return self._sign(nonce, purpose)

    def valid(self, request: web.Request, token: str | None, purpose: str) -> bool:
        nonce = request.cookies.get(COOKIE, "")
        if not token or not _NONCE.match(nonce):
            return False
        return hmac.compare_digest(token, self._sign(nonce, purpose))
