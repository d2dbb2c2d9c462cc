"""Porter's secrets at rest in Redis: what someone who reads Redis, its RDB/AOF files or a
replica learns must not let them replay a session.

- A porter cookie never appears in Redis: a session lives under its *handle*, an HMAC of the
  cookie under a key derived from `proxy.secret_key`. From a handle nobody finds the cookie.
- The secrets a session holds (the OMERO session key, OMERO.web's cookies) are sealed with
  AES-GCM under another key derived from it, bound to the session's handle and the field's
  name, so a sealed value copied to another session or field does not open.
- Rotation: `proxy.secret_key_previous` is accepted while reading. A session made under it is
  found under its old handle and its values open; values written again are sealed with the
  current key. Once every session made before the rotation has expired (at most
  `session_cookie_age`), the previous key can go.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

_VERSION = "s1"
_REF = "~"  # a store-made reference to a handle: never the shape of a porter cookie


def _derive(secret: str, purpose: bytes) -> bytes:
    return hmac.new(secret.encode(), b"omero-porter session store: " + purpose, "sha256").digest()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


class _Key:
    def __init__(self, secret: str) -> None:
        self.handle_key = _derive(secret, b"handle")
        sealing = _derive(secret, b"seal")
        self.id = hashlib.sha256(sealing).hexdigest()[:8]  # names the key, reveals nothing
        self.aead = AESGCM(sealing)

    def handle(self, session_id: str) -> str:
        return _b64(hmac.new(self.handle_key, session_id.encode(), "sha256").digest())


class StoreSeal:
    """Handles and sealed values for the Redis store: the current key, and the previous
    one accepted while reading."""

    def __init__(self, secret: str, previous: str | None = None) -> None:
        self._current = _Key(secret)
        self._keys = [self._current] + ([_Key(previous)] if previous else [])
        self._by_id = {key.id: key for key in reversed(self._keys)}

    @classmethod
    def random(cls) -> StoreSeal:
        """A key of this process only (sessions it writes to Redis are its own)."""
        return cls(secrets.token_urlsafe(32))

    def handle(self, session_id: str) -> str:
        """The name a new session gets in Redis."""
        return self._current.handle(session_id)

    def handles(self, session_id: str) -> list[str]:
        """Where the session of cookie `session_id`, or of reference `~<handle>`, may be:
        under the current key's handle, then the previous key's."""
        if is_reference(session_id):
            return [session_id[len(_REF) :]]
        return [key.handle(session_id) for key in self._keys]

    def seal(self, value: str, handle: str, field: str) -> str:
        """`value` sealed for `field` of the session under `handle`."""
        iv = secrets.token_bytes(12)
        sealed = self._current.aead.encrypt(iv, value.encode(), _context(handle, field))
        return f"{_VERSION}.{self._current.id}.{_b64(iv + sealed)}"

    def open(self, sealed: str, handle: str, field: str) -> str | None:
        """The value sealed by `seal` (with either key); None when it does not open."""
        version, _, rest = sealed.partition(".")
        key_id, _, data = rest.partition(".")
        key = self._by_id.get(key_id)
        if version != _VERSION or key is None:
            return None
        try:
            raw = base64.urlsafe_b64decode(data + "=" * (-len(data) % 4))
            return key.aead.decrypt(raw[:12], raw[12:], _context(handle, field)).decode()
        except (ValueError, InvalidTag):
            return None


def reference(handle: str) -> str:
    """The id a record read by handle carries (purge, keepalive, logout index): the store
    accepts it where it accepts a cookie, except to find a session from a request."""
    return _REF + handle


def is_reference(value: str) -> bool:
    return value.startswith(_REF) and len(value) == len(_REF) + 43


def _context(handle: str, field: str) -> bytes:
    return f"{handle}\x00{field}".encode()
