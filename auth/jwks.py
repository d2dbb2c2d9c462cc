"""Verification keys: PEM files, JWKS files and a JWKS URL cache, each key bound to its family.

A key is only ever offered for algorithms of its own family (HMAC secrets for HS*, RSA keys
for RS*/PS*, EC keys for the ES* of their curve, OKP keys for EdDSA), so a public key can
never be used as an HMAC secret. `JwksCache` fetches a provider's JWKS with aiohttp, keeps it
for `max_age` seconds, refetches on an unknown kid at most once per `min_refresh_interval`,
runs one fetch at a time for all callers, and fails closed (`JwksUnavailable`).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import aiohttp
from aiohttp import hdrs
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm
from jwt.exceptions import PyJWTError

import metrics
from auth.single_flight import SingleFlight
from porter_errors import Internal, Unavailable

__all__ = [
    "ALGORITHMS",
    "ASYMMETRIC_ALGORITHMS",
    "HMAC_ALGORITHMS",
    "JwksCache",
    "JwksUnavailable",
    "KeyLoadError",
    "KeySource",
    "SigningKey",
    "StaticKeys",
    "VerifyKey",
    "check_hmac_secret",
    "family_of",
    "jwk_thumbprint",
    "load_jwks_file",
    "load_pem_private_key_file",
    "load_pem_public_key_file",
    "parse_jwks",
    "read_limited",
]

log = logging.getLogger("porter.auth.jwks")

HMAC_ALGORITHMS = ("HS256", "HS384", "HS512")
_RSA_ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512")
_EC_CURVES = {"ES256": "secp256r1", "ES384": "secp384r1", "ES512": "secp521r1"}
ASYMMETRIC_ALGORITHMS = (*_RSA_ALGORITHMS, *_EC_CURVES, "EdDSA")
ALGORITHMS = (*HMAC_ALGORITHMS, *ASYMMETRIC_ALGORITHMS)
_MIN_RSA_BITS = 2048
_MAX_KEY_FILE = 1024 * 1024

PublicKey = (
    rsa.RSAPublicKey | ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey | (ed448.Ed448PublicKey)
)
PrivateKey = (
    rsa.RSAPrivateKey
    | ec.EllipticCurvePrivateKey
    | ed25519.Ed25519PrivateKey
    | (ed448.Ed448PrivateKey)
)


class KeyLoadError(Internal, ValueError):
    """A key file or JWKS cannot be read or used; the message names its path or URL."""


class JwksUnavailable(Unavailable):
    """The JWKS URL could not be fetched or parsed; the message names the URL and the cause."""


def family_of(alg: str) -> str:
    """The key family an algorithm needs: "oct", "RSA", "EC" or "OKP"."""
    if alg in HMAC_ALGORITHMS:
        return "oct"
    if alg in _RSA_ALGORITHMS:
        return "RSA"
    if alg in _EC_CURVES:
        return "EC"
    if alg == "EdDSA":
        return "OKP"
    raise ValueError(f"{alg!r} is not a supported algorithm")


def _family_of_key(key: PublicKey | PrivateKey, where: str) -> str:
    if isinstance(key, (rsa.RSAPublicKey, rsa.RSAPrivateKey)):
        if key.key_size < _MIN_RSA_BITS:
            raise KeyLoadError(f"{where}: RSA key of {key.key_size} bits, at least 2048 needed")
        return "RSA"
    if isinstance(key, (ec.EllipticCurvePublicKey, ec.EllipticCurvePrivateKey)):
        if key.curve.name not in _EC_CURVES.values():
            raise KeyLoadError(f"{where}: EC curve {key.curve.name} (use P-256, P-384 or P-521)")
        return "EC"
    return "OKP"


def _fits(family: str, key: object, bound_alg: str | None, alg: str) -> bool:
    if alg not in ALGORITHMS or family_of(alg) != family:
        return False
    if bound_alg is not None and bound_alg != alg:
        return False
    if family == "EC":
        return isinstance(key, (ec.EllipticCurvePublicKey, ec.EllipticCurvePrivateKey)) and (
            key.curve.name == _EC_CURVES[alg]
        )
    return True


@dataclass(frozen=True)
class VerifyKey:
    """A key that verifies signatures: an HMAC secret (bytes) or a public key object.

    `kid` None matches any kid; `alg` (a JWK's "alg") restricts it to that one algorithm.
    """

    family: str
    key: bytes | PublicKey
    kid: str | None = None
    alg: str | None = None

    def fits(self, alg: str) -> bool:
        """May this key verify a token signed with `alg`?"""
        return _fits(self.family, self.key, self.alg, alg)

    def matches(self, kid: str | None, alg: str) -> bool:
        """Does this key fit `alg` and a token whose header names `kid`?"""
        return self.fits(alg) and (kid is None or self.kid is None or self.kid == kid)

    def __repr__(self) -> str:  # never print an HMAC secret
        return f"VerifyKey(family={self.family!r}, kid={self.kid!r}, alg={self.alg!r})"


@dataclass(frozen=True)
class SigningKey:
    """A private key porter signs with."""

    family: str
    key: PrivateKey

    def fits(self, alg: str) -> bool:
        """May this key sign with `alg`?"""
        return _fits(self.family, self.key, None, alg)

    def __repr__(self) -> str:
        return f"SigningKey(family={self.family!r})"


def _read(path: str, limit: int = _MAX_KEY_FILE) -> bytes:
    try:
        with Path(path).open("rb") as f:
            data = f.read(limit + 1)
    except OSError as exc:
        raise KeyLoadError(f"{path}: cannot read: {exc.strerror or exc}") from None
    if len(data) > limit:
        raise KeyLoadError(f"{path}: larger than {limit} bytes")
    return data


def load_pem_public_key_file(path: str) -> VerifyKey:
    """A PEM public key or X.509 certificate; KeyLoadError naming `path` when unusable."""
    data = _read(path)
    try:
        if b"-----BEGIN CERTIFICATE-----" in data:
            key: Any = x509.load_pem_x509_certificate(data).public_key()
        else:
            key = serialization.load_pem_public_key(data)
    except ValueError:
        raise KeyLoadError(f"{path}: not a PEM public key or certificate") from None
    if not isinstance(key, PublicKey):
        raise KeyLoadError(f"{path}: unsupported key type {type(key).__name__}")
    return VerifyKey(_family_of_key(key, path), key)


def load_pem_private_key_file(path: str) -> SigningKey:
    """An unencrypted PEM private key; KeyLoadError naming `path` when unusable."""
    data = _read(path)
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError):
        raise KeyLoadError(f"{path}: not an unencrypted PEM private key") from None
    if not isinstance(key, PrivateKey):
        raise KeyLoadError(f"{path}: unsupported key type {type(key).__name__}")
    return SigningKey(_family_of_key(key, path), key)


def check_hmac_secret(secret: bytes, algorithms: Sequence[str]) -> None:
    """KeyLoadError unless `secret` is long enough for every HS* listed and not a PEM key."""
    if b"-----BEGIN" in secret:
        raise KeyLoadError("is a PEM key: an HMAC secret must be a random string, not a key")
    needed = max((int(a[2:]) // 8 for a in algorithms if a in HMAC_ALGORITHMS), default=32)
    if len(secret) < needed:
        raise KeyLoadError(f"must be at least {needed} bytes for {', '.join(algorithms)}")


def _key_from_jwk(jwk: dict[str, Any]) -> VerifyKey | None:
    """The verification key of one JWK, or None for keys that must not verify signatures."""
    if jwk.get("use", "sig") != "sig":
        return None
    ops = jwk.get("key_ops")
    if ops is not None and "verify" not in ops:
        return None
    kty, kid, alg = jwk.get("kty"), jwk.get("kid"), jwk.get("alg")
    if kid is not None and not isinstance(kid, str):
        raise ValueError("kid is not a string")
    if alg is not None and alg not in ASYMMETRIC_ALGORITHMS:
        raise ValueError(f"alg {alg!r} is not a supported public-key algorithm")
    loaders: dict[str, Callable[[dict[str, Any]], Any]] = {
        "RSA": RSAAlgorithm.from_jwk,
        "EC": ECAlgorithm.from_jwk,
        "OKP": OKPAlgorithm.from_jwk,
    }
    loader = loaders.get(str(kty))
    if loader is None:  # "oct": a published JWKS never carries shared secrets
        raise ValueError(f"kty {kty!r} is not a public-key type")
    key: Any = loader(jwk)
    if not isinstance(key, PublicKey):
        key = key.public_key()  # a JWK with private members: keep only the public part
    family = _family_of_key(key, f"kid {kid!r}")
    if alg is not None and family_of(alg) != family:
        raise ValueError(f"alg {alg} does not fit a {family} key")
    return VerifyKey(family, key, kid, alg)


def parse_jwks(data: bytes, source: str) -> tuple[VerifyKey, ...]:
    """The usable signature keys of a JWKS document; KeyLoadError naming `source` if none."""
    try:
        doc = json.loads(data)
    except ValueError:
        raise KeyLoadError(f"{source}: not JSON") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("keys"), list):
        raise KeyLoadError(f'{source}: not a JWKS (an object with a "keys" list)')
    keys: list[VerifyKey] = []
    for index, jwk in enumerate(doc["keys"]):
        try:
            if not isinstance(jwk, dict):
                raise ValueError("not an object")
            key = _key_from_jwk(jwk)
        except (ValueError, TypeError, PyJWTError, KeyLoadError) as exc:
            log.warning("%s: key %d skipped: %s", source, index, exc)
            continue
        if key is not None:
            keys.append(key)
    if not keys:
        raise KeyLoadError(f"{source}: no usable signature keys")
    return tuple(keys)


def load_jwks_file(path: str) -> tuple[VerifyKey, ...]:
    """The keys of a JWKS file; KeyLoadError naming `path` when unreadable or keyless."""
    return parse_jwks(_read(path), path)


def jwk_thumbprint(jwk: dict[str, Any]) -> str:
    """The RFC 7638 SHA-256 thumbprint of a public JWK, base64url without padding."""
    import base64

    members = {"RSA": ("e", "kty", "n"), "EC": ("crv", "kty", "x", "y"), "OKP": ("crv", "kty", "x")}
    required = {k: jwk[k] for k in members[jwk["kty"]]}
    digest = hashlib.sha256(json.dumps(required, separators=(",", ":")).encode()).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


class KeySource(Protocol):
    """Where a trusted issuer's keys come from."""

    async def candidates(self, kid: str | None, alg: str) -> list[VerifyKey]:
        """Keys that may verify a token with this kid and alg (raises JwksUnavailable)."""
        ...

    async def aclose(self) -> None:
        """Release what the source holds."""
        ...


class StaticKeys:
    """Keys read once at start: an HMAC secret, PEM files, a JWKS file."""

    def __init__(self, keys: Sequence[VerifyKey]) -> None:
        self._keys = tuple(keys)

    async def candidates(self, kid: str | None, alg: str) -> list[VerifyKey]:
        """Keys that may verify a token with this kid and alg."""
        return [k for k in self._keys if k.matches(kid, alg)]

    async def aclose(self) -> None:
        """Nothing to release."""


class JwksCache:
    """A JWKS URL's keys, fetched on first use, after `max_age`, and on an unknown kid.

    At most one fetch runs at a time (callers share it). An unknown kid always gets one
    refetch, so a login right after a key rotation (even two rotations within a second)
    passes; the rate limit is per kid (one refetch per kid per `min_refresh_interval`), and
    a refetch that found nothing new holds every further unknown-kid refetch back for the
    interval, so tokens with made-up kids cannot make porter hammer the provider. When the
    last fetch failed, or the keys are older than `max_age` and cannot be refetched,
    `candidates` raises `JwksUnavailable` (fail closed).
    `session`: an aiohttp ClientSession to use; None: the cache opens (and closes) its own.
    """

    def __init__(
        self,
        url: str,
        *,
        session: aiohttp.ClientSession | None = None,
        timeout: float = 5.0,
        max_size: int = 256 * 1024,
        min_refresh_interval: float = 30.0,
        max_age: float = 600.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.url = url
        self.fetches = 0  # fetch attempts, for metrics and tests
        self._session = session
        self._own_session: aiohttp.ClientSession | None = None
        self._timeout = timeout
        self._max_size = max_size
        self._min_interval = min_refresh_interval
        self._max_age = max_age
        self._clock = clock
        self._keys: tuple[VerifyKey, ...] = ()
        self._fetched_at: float | None = None
        self._attempted_at: float | None = None
        self._error: str | None = None
        self._fetches: SingleFlight[str, bool] = SingleFlight("JWKS fetch")
        self._kids_tried: dict[str | None, float] = {}  # unknown kid -> its last refetch
        self._quiet_until = float("-inf")  # after a refetch that found nothing new

    async def candidates(self, kid: str | None, alg: str) -> list[VerifyKey]:
        """Keys for this kid and alg, refetching once (rate-limited) when none is known."""
        if not self._fresh():
            await self._refresh()
            if not self._fresh():
                raise self._unavailable()
        found = [k for k in self._keys if k.matches(kid, alg)]
        if not found:
            if await self._refetch_for(kid):
                found = [k for k in self._keys if k.matches(kid, alg)]
            elif self._error is not None:  # the last fetch failed: the kid may well exist
                raise self._unavailable()
        return found

    async def aclose(self) -> None:
        """Stop a running fetch and close the cache's own HTTP session."""
        await self._fetches.close()
        if self._own_session is not None:
            await self._own_session.close()
            self._own_session = None

    def _fresh(self) -> bool:
        return self._fetched_at is not None and self._clock() - self._fetched_at < self._max_age

    def _unavailable(self) -> JwksUnavailable:
        return JwksUnavailable(f"JWKS {self.url} unavailable: {self._error or 'not fetched'}")

    async def _refresh(self) -> bool:
        """Fetch unless one started within the interval (then wait for a running one)."""
        if not self._fetches.running(self.url):
            now = self._clock()
            if self._attempted_at is not None and now - self._attempted_at < self._min_interval:
                return False
            self._attempted_at = now
        return await self._fetches.run(self.url, self._fetch)

    async def _refetch_for(self, kid: str | None) -> bool:
        """One refetch for an unknown `kid`, unless this kid had one within the interval or
        the last refetch found nothing new (then share a running fetch, or give up)."""
        if self._fetches.running(self.url):
            return await self._fetches.run(self.url, self._fetch)
        now = self._clock()
        tried = self._kids_tried.get(kid)
        if now < self._quiet_until or (tried is not None and now - tried < self._min_interval):
            return False
        if len(self._kids_tried) >= 1024:  # bounded whatever kids tokens make up
            self._kids_tried.clear()
        self._kids_tried[kid] = self._attempted_at = now
        before = _identities(self._keys)
        fetched = await self._fetches.run(self.url, self._fetch)
        if (
            fetched and _identities(self._keys) <= before
        ):  # nothing new: hold further refetches back
            self._quiet_until = self._clock() + self._min_interval
        return fetched

    async def _fetch(self) -> bool:
        self.fetches += 1
        try:
            data = await asyncio.wait_for(self._download(), self._timeout)
            keys = parse_jwks(data, self.url)
        except (
            aiohttp.ClientError,
            TimeoutError,
            asyncio.TimeoutError,
            OSError,
            ValueError,
        ) as exc:
            self._error = describe_failure(exc)
            log.warning("JWKS %s unavailable: %s", self.url, self._error)
            metrics.JWKS_FETCHES.labels("error").inc()
            return False
        self._keys, self._fetched_at, self._error = keys, self._clock(), None
        log.info("JWKS %s: %d key(s) loaded", self.url, len(keys))
        metrics.JWKS_FETCHES.labels("ok").inc()
        return True

    async def _download(self) -> bytes:
        session = self._session
        if session is None:
            if self._own_session is None:
                self._own_session = aiohttp.ClientSession(trust_env=False)
            session = self._own_session
        headers = {hdrs.ACCEPT: "application/jwk-set+json, application/json"}
        async with session.get(self.url, headers=headers, allow_redirects=False) as resp:
            if resp.status != 200:
                raise KeyLoadError(f"HTTP status {resp.status}")
            return await read_limited(resp, self._max_size)


async def read_limited(resp: aiohttp.ClientResponse, limit: int) -> bytes:
    """An HTTP answer's body, at most `limit` bytes; KeyLoadError (a ValueError) past it."""
    if resp.content_length is not None and resp.content_length > limit:
        raise KeyLoadError(f"larger than {limit} bytes")
    body = bytearray()
    async for chunk in resp.content.iter_chunked(64 * 1024):
        body += chunk
        if len(body) > limit:
            raise KeyLoadError(f"larger than {limit} bytes")
    return bytes(body)


def _identities(keys: Sequence[VerifyKey]) -> set[tuple[str, str | None, str | None, bytes]]:
    """What tells keys apart (public key objects are not hashable)."""
    found = set()
    for k in keys:
        raw = (
            k.key
            if isinstance(k.key, bytes)
            else k.key.public_bytes(
                serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )
        found.add((k.family, k.kid, k.alg, raw))
    return found


def describe_failure(exc: BaseException) -> str:
    """A fetch's failure in a few words, for a log line and readyz."""
    if isinstance(exc, (TimeoutError, asyncio.TimeoutError)):
        return "no answer in time"
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
