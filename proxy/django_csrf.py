"""Django's CSRF double-submit check, for OMERO.web's JSON login API that porter serves."""

from __future__ import annotations

import hmac
import secrets
import string

_CHARS = string.ascii_letters + string.digits
_SECRET_LENGTH = 32


def _unmask(token: str) -> str | None:
    if len(token) == _SECRET_LENGTH:
        return token
    if len(token) != 2 * _SECRET_LENGTH or any(c not in _CHARS for c in token):
        return None
    mask, cipher = token[:_SECRET_LENGTH], token[_SECRET_LENGTH:]
    n = len(_CHARS)
    return "".join(
        _CHARS[(_CHARS.index(c) - _CHARS.index(m)) % n] for c, m in zip(cipher, mask, strict=True)
    )


def django_csrf_valid(cookie: str | None, token: str | None) -> bool:
    """True when the submitted `token` (header or form) matches the csrftoken `cookie`,
    as Django checks it (both may be masked)."""
    if not cookie or not token:
        return False
    secret, submitted = _unmask(cookie), _unmask(token)
    if secret is None or submitted is None or any(c not in _CHARS for c in secret):
        return False
    return hmac.compare_digest(secret, submitted)


def new_django_secret() -> str:
    """A fresh CSRF cookie secret in Django's format (32 letters and digits)."""
    return "".join(secrets.choice(_CHARS) for _ in range(_SECRET_LENGTH))
