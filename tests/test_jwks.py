"""JWKS parsing and the JWKS URL cache, against a real local aiohttp server that counts fetches."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import jwt
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from auth.jwks import JwksCache, KeyLoadError, load_jwks_file, parse_jwks
from auth.jwt_verify import JwtVerifier, TokenRejected, TrustedIssuer
from auth.sso_settings import IssuerSettings

ISS = "https://idp.example/realms/lab"
ServerFactory = Callable[..., Awaitable[TestServer]]


@cache
def rsa_key(n: int = 0) -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@cache
def ec_key(n: int = 0) -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def rsa_jwk(kid: str, n: int = 0, **extra: Any) -> dict[str, Any]:
    jwk: dict[str, Any] = RSAAlgorithm.to_jwk(rsa_key(n).public_key(), as_dict=True)
    return {**jwk, "kid": kid, **extra}


def ec_jwk(kid: str, **extra: Any) -> dict[str, Any]:
    jwk: dict[str, Any] = ECAlgorithm.to_jwk(ec_key().public_key(), as_dict=True)
    return {**jwk, "kid": kid, **extra}


def token(kid: str | None, n: int = 0, alg: str = "RS256") -> str:
    now = int(time.time())
    claims = {"iss": ISS, "aud": "omero", "sub": "s", "iat": now, "exp": now + 300}
    headers = {"kid": kid} if kid else None
    key: Any = ec_key() if alg.startswith("ES") else rsa_key(n)
    return jwt.encode(claims, key, alg, headers=headers)


@dataclass
class Idp:
    """A local identity provider serving /jwks; `fetches` counts requests."""

    keys: list[dict[str, Any]]
    fetches: int = 0
    status: int = 200
    gate: asyncio.Event | None = None
    body: bytes | None = None
    server: TestServer | None = None
    clock: list[float] = field(default_factory=lambda: [1000.0])
    caches: list[JwksCache] = field(default_factory=list)

    async def handle(self, request: web.Request) -> web.Response:
        self.fetches += 1
        if self.gate is not None:
            await self.gate.wait()
        body = self.body if self.body is not None else json.dumps({"keys": self.keys}).encode()
        return web.Response(body=body, status=self.status, content_type="application/json")

    @property
    def url(self) -> str:
        assert self.server is not None
        return str(self.server.make_url("/jwks"))

    def cache(self, **options: Any) -> JwksCache:
        options.setdefault("clock", lambda: self.clock[0])
        self.caches.append(JwksCache(self.url, **options))
        return self.caches[-1]

    def verifier(self, cache: JwksCache) -> JwtVerifier:
        settings = IssuerSettings(
            issuer=ISS, audience=("omero",), algorithms=("RS256", "ES256"), jwks_url=self.url
        )
        return JwtVerifier([TrustedIssuer(settings, (cache,))])


@pytest.fixture
async def idp(aiohttp_server: ServerFactory) -> AsyncIterator[Idp]:
    provider = Idp(keys=[rsa_jwk("k1")])
    app = web.Application()
    app.router.add_get("/jwks", provider.handle)
    provider.server = await aiohttp_server(app)
    yield provider
    if provider.gate is not None:
        provider.gate.set()
    for jwks_cache in provider.caches:
        await jwks_cache.aclose()


async def reason(verifier: JwtVerifier, jwt_token: str) -> str:
    with pytest.raises(TokenRejected) as info:
        await verifier.verify(jwt_token)
    return info.value.reason


async def test_token_verifies_with_a_key_fetched_from_the_jwks_url_once(idp: Idp) -> None:
    cache = idp.cache()
    verifier = idp.verifier(cache)
    for _ in range(3):
        assert (await verifier.verify(token("k1"))).kid == "k1"
    assert idp.fetches == 1


async def test_unknown_kid_refetches_once_then_is_rejected_and_refetching_is_rate_limited(
    idp: Idp,
) -> None:
    cache = idp.cache(min_refresh_interval=30)
    verifier = idp.verifier(cache)
    await verifier.verify(token("k1"))
    assert await reason(verifier, token("k-new", n=1)) == "unknown_kid"  # one refetch
    assert idp.fetches == 2
    idp.clock[0] += 5  # that refetch found nothing new: made-up kids refetch nothing now
    assert await reason(verifier, token("k-other", n=2)) == "unknown_kid"
    assert await reason(verifier, token("k-new", n=1)) == "unknown_kid"
    assert idp.fetches == 2
    idp.clock[0] += 30  # after the interval, one more
    assert await reason(verifier, token("k-third", n=3)) == "unknown_kid"
    assert idp.fetches == 3


async def test_a_login_right_after_a_key_rotation_passes_even_two_rotations_a_second(
    idp: Idp,
) -> None:
    """The provider rotates its signing key twice within a second of porter's last fetch:
    each new kid gets its refetch (each found something new), so no login fails."""
    cache = idp.cache(min_refresh_interval=30)
    verifier = idp.verifier(cache)
    await verifier.verify(token("k1"))  # porter's fetch at start
    idp.keys.append(rsa_jwk("k2", n=1))  # rotation 1
    assert (await verifier.verify(token("k2", n=1))).kid == "k2"
    idp.clock[0] += 0.5
    idp.keys.append(rsa_jwk("k3", n=2))  # rotation 2, half a second later
    assert (await verifier.verify(token("k3", n=2))).kid == "k3"
    assert idp.fetches == 3
    # a kid the fresh key set does not hold is still refused (401), after its one refetch
    assert await reason(verifier, token("k-forged", n=3)) == "unknown_kid"
    assert idp.fetches == 4


async def test_keys_are_refetched_when_older_than_max_age(idp: Idp) -> None:
    cache = idp.cache(max_age=600)
    verifier = idp.verifier(cache)
    await verifier.verify(token("k1"))
    idp.clock[0] += 600
    await verifier.verify(token("k1"))
    assert idp.fetches == 2


async def test_concurrent_callers_share_one_fetch(idp: Idp) -> None:
    idp.gate = asyncio.Event()
    cache = idp.cache(min_refresh_interval=0)
    verifier = idp.verifier(cache)
    tasks = [asyncio.create_task(verifier.verify(token("k1"))) for _ in range(20)]
    while idp.fetches == 0:
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.05)  # let every caller reach the cache while the fetch is held
    idp.gate.set()
    results = await asyncio.gather(*tasks)
    assert [r.kid for r in results] == ["k1"] * 20
    assert idp.fetches == 1


async def test_unreachable_jwks_fails_closed_with_503(idp: Idp) -> None:
    assert idp.server is not None
    cache = idp.cache()
    verifier = idp.verifier(cache)
    url = idp.url
    await idp.server.close()
    with pytest.raises(TokenRejected) as info:
        await verifier.verify(token("k1"))
    assert info.value.reason == "jwks_unavailable"
    assert info.value.status == 503
    assert url in info.value.message


async def test_known_kid_keeps_verifying_after_the_jwks_server_stops_but_unknown_kid_fails(
    idp: Idp,
) -> None:
    assert idp.server is not None
    cache = idp.cache()
    verifier = idp.verifier(cache)
    await verifier.verify(token("k1"))
    await idp.server.close()
    idp.clock[0] += 60
    assert await reason(verifier, token("k9", n=1)) == "jwks_unavailable"
    assert (await verifier.verify(token("k1"))).kid == "k1"  # cached, not older than max_age
    idp.clock[0] += 600
    assert await reason(verifier, token("k1")) == "jwks_unavailable"  # too old, not refetchable


@pytest.mark.parametrize(
    ("status", "body", "words"),
    [
        (500, None, "HTTP status 500"),
        (200, b"x" * 5000, "larger than 4096 bytes"),
        (200, b"<html>", "not JSON"),
        (200, b'{"keys": []}', "no usable signature keys"),
    ],
)
async def test_bad_jwks_answer_fails_closed(
    idp: Idp, status: int, body: bytes | None, words: str
) -> None:
    idp.status, idp.body = status, body
    cache = idp.cache(max_size=4096)
    with pytest.raises(TokenRejected) as info:
        await idp.verifier(cache).verify(token("k1"))
    assert info.value.reason == "jwks_unavailable"
    assert words in info.value.message


async def test_slow_jwks_server_fails_closed_after_the_timeout(idp: Idp) -> None:
    idp.gate = asyncio.Event()
    cache = idp.cache(timeout=0.2)
    with pytest.raises(TokenRejected) as info:
        await idp.verifier(cache).verify(token("k1"))
    assert info.value.reason == "jwks_unavailable"
    assert "no answer in time" in info.value.message


async def test_ec_key_from_jwks_verifies_es256_and_never_an_rs256_token(idp: Idp) -> None:
    idp.keys = [ec_jwk("shared")]
    cache = idp.cache()
    verifier = idp.verifier(cache)
    assert (await verifier.verify(token("shared", alg="ES256"))).alg == "ES256"
    assert await reason(verifier, token("shared")) == "unknown_kid"


def test_parse_jwks_keeps_only_public_signature_keys() -> None:
    small = rsa.generate_private_key(public_exponent=65537, key_size=1024)  # noqa: S505 - the too-small key under test
    private_jwk = json.loads(RSAAlgorithm.to_jwk(rsa_key(3)))  # has d, p, q, ...
    sign_only = {**private_jwk, "kid": "sign-only"}  # key_ops ["sign"]: not for verifying
    del private_jwk["key_ops"]
    doc = {
        "keys": [
            rsa_jwk("sig"),
            rsa_jwk("enc", use="enc"),
            {"kty": "oct", "k": "c2VjcmV0", "kid": "hmac"},
            {**RSAAlgorithm.to_jwk(small.public_key(), as_dict=True), "kid": "small"},
            {**private_jwk, "kid": "private"},
            sign_only,
            rsa_jwk("bad-alg", alg="ES256"),
            {"kty": "RSA", "kid": "broken", "n": "AQAB"},
            "not an object",
        ]
    }
    keys = parse_jwks(json.dumps(doc).encode(), "test")
    assert [k.kid for k in keys] == ["sig", "private"]
    assert isinstance(keys[1].key, rsa.RSAPublicKey)


def test_jwk_alg_binds_the_key_to_that_algorithm() -> None:
    (key,) = parse_jwks(json.dumps({"keys": [rsa_jwk("k", alg="RS256")]}).encode(), "test")
    assert key.matches("k", "RS256")
    assert not key.matches("k", "PS256")
    assert not key.matches("k", "HS256")
    assert not key.matches("other", "RS256")


def test_jwks_file_without_usable_keys_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps({"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}))
    with pytest.raises(KeyLoadError, match=f"{path}: no usable signature keys"):
        load_jwks_file(str(path))


async def test_jwks_file_keys_verify_tokens(tmp_path: Path) -> None:
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps({"keys": [rsa_jwk("k1"), ec_jwk("e1")]}))
    settings = IssuerSettings(
        issuer=ISS, audience=("omero",), algorithms=("RS256", "ES256"), jwks_file=str(path)
    )
    from auth.jwt_verify import trusted_issuer_from_settings
    from auth.sso_settings import SsoSettings

    verifier = JwtVerifier([trusted_issuer_from_settings(settings, SsoSettings())])
    assert (await verifier.verify(token("k1"))).kid == "k1"
    assert (await verifier.verify(token("e1", alg="ES256"))).kid == "e1"
    assert (await verifier.verify(token(None))).kid is None  # no kid: every fitting key is tried
    assert await reason(verifier, token("k1", n=1)) == "bad_signature"
