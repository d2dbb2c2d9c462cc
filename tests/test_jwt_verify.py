"""JwtVerifier against real RSA, EC (P-256) and HMAC keys generated here, and [sso] loading."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from functools import cache
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from auth.jwt_verify import REASONS, JwtVerifier, TokenRejected
from auth.sso_settings import IssuerSettings, SsoSettings
from proxy.config import Problem, build

RSA_ISS, EC_ISS, HMAC_ISS, BOTH_ISS = (
    "https://idp.example/rsa",
    "https://idp.example/ec",
    "https://idp.example/hmac",
    "https://idp.example/both",
)
HMAC_SECRET = "s3cret-" + "x" * 40
OTHER_SECRET = "other-" + "y" * 40


@cache
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@cache
def ec_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def public_pem(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def b64(data: bytes | dict[str, Any]) -> str:
    raw = json.dumps(data).encode() if isinstance(data, dict) else data
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def claims(iss: str, /, **extra: Any) -> dict[str, Any]:
    now = int(time.time())
    base: dict[str, Any] = {
        "iss": iss,
        "aud": "omero",
        "sub": "u-123",
        "preferred_username": "alice",
        "iat": now,
        "exp": now + 300,
    }
    base.update(extra)
    return {k: v for k, v in base.items() if v is not None}


def signed(iss: str, alg: str = "", /, **extra: Any) -> str:
    """A valid token of one of the three issuers, with claim overrides (None removes)."""
    if iss in (RSA_ISS, BOTH_ISS):
        return jwt.encode(claims(iss, **extra), rsa_key(), alg or "RS256")
    if iss == EC_ISS:
        return jwt.encode(claims(iss, **extra), ec_key(), alg or "ES256")
    return jwt.encode(claims(iss, **extra), HMAC_SECRET, alg or "HS256")


def hand_signed(header: dict[str, Any], payload: dict[str, Any], secret: bytes) -> str:
    """A token signed with HMAC-SHA256 by hand (PyJWT refuses PEM keys as HMAC secrets)."""
    signing_input = f"{b64(header)}.{b64(payload)}"
    mac = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64(mac)}"


def settings(tmp_path: Path, **overrides: Any) -> SsoSettings:
    (tmp_path / "rsa.pem").write_bytes(public_pem(rsa_key()))
    (tmp_path / "ec.pem").write_bytes(public_pem(ec_key()))
    rsa_pem, ec_pem = str(tmp_path / "rsa.pem"), str(tmp_path / "ec.pem")
    issuers = (
        IssuerSettings(issuer=RSA_ISS, audience=("omero",), public_key_files=(rsa_pem,)),
        IssuerSettings(
            issuer=EC_ISS, audience=("omero",), algorithms=("ES256",), public_key_files=(ec_pem,)
        ),
        IssuerSettings(
            issuer=HMAC_ISS,
            audience=("omero", "other"),
            algorithms=("HS256",),
            hmac_secret=HMAC_SECRET,
            **overrides,
        ),
        IssuerSettings(
            issuer=BOTH_ISS,
            audience=("omero",),
            algorithms=("RS256", "HS256"),
            hmac_secret=OTHER_SECRET,
            public_key_files=(rsa_pem,),
        ),
    )
    return SsoSettings(enabled=True, issuers=issuers, max_token_size=2048)


@pytest.fixture
def verifier(tmp_path: Path) -> JwtVerifier:
    return JwtVerifier.from_settings(settings(tmp_path))


async def rejected(verifier: JwtVerifier, token: str) -> TokenRejected:
    with pytest.raises(TokenRejected) as info:
        await verifier.verify(token)
    exc = info.value
    assert exc.reason in REASONS
    for part in token.split("."):  # never the token or any of its parts in the message
        assert len(part) < 8 or part not in str(exc)
    return exc


@pytest.mark.parametrize(
    ("iss", "alg"), [(RSA_ISS, "RS256"), (EC_ISS, "ES256"), (HMAC_ISS, "HS256")]
)
async def test_valid_token_of_each_key_type_verifies(
    verifier: JwtVerifier, iss: str, alg: str
) -> None:
    result = await verifier.verify(signed(iss))
    assert result.alg == alg
    assert result.issuer.issuer == iss
    assert result.claims["preferred_username"] == "alice"


@pytest.mark.parametrize(
    "token",
    [
        "garbage",
        "only.two",
        "!!!.e30.c2ln",
        b64(b"{not json") + "." + b64({"iss": HMAC_ISS}) + ".c2ln",
        b64({"alg": "HS256"}) + "." + b64(b"[1, 2]") + ".c2ln",
        b64({"kid": "k"}) + "." + b64({"iss": HMAC_ISS}) + ".c2ln",
        "",
    ],
    ids=[
        "garbage",
        "two-parts",
        "bad-base64",
        "bad-json-header",
        "array-payload",
        "no-alg",
        "empty",
    ],
)
async def test_malformed_token_is_rejected_as_malformed(verifier: JwtVerifier, token: str) -> None:
    assert (await rejected(verifier, token)).reason == "malformed"


@pytest.mark.parametrize("alg", ["none", "None", "NONE"])
async def test_unsigned_alg_none_token_is_rejected(verifier: JwtVerifier, alg: str) -> None:
    token = f"{b64({'alg': alg, 'typ': 'JWT'})}.{b64(claims(HMAC_ISS))}."
    exc = await rejected(verifier, token)
    assert exc.reason == "alg_not_allowed"
    assert exc.status == 401


async def test_hs256_signed_with_the_rsa_public_key_is_rejected_by_an_rs256_issuer(
    verifier: JwtVerifier,
) -> None:
    token = hand_signed({"alg": "HS256", "typ": "JWT"}, claims(RSA_ISS), public_pem(rsa_key()))
    assert (await rejected(verifier, token)).reason == "alg_not_allowed"


async def test_hs256_signed_with_the_rsa_public_key_fails_where_hs256_is_allowed_too(
    verifier: JwtVerifier,
) -> None:
    # BOTH_ISS allows RS256 and HS256: the RSA key must still never serve as an HMAC secret
    token = hand_signed({"alg": "HS256"}, claims(BOTH_ISS), public_pem(rsa_key()))
    assert (await rejected(verifier, token)).reason == "bad_signature"
    honest = hand_signed({"alg": "HS256"}, claims(BOTH_ISS), OTHER_SECRET.encode())
    assert (await verifier.verify(honest)).alg == "HS256"


async def test_algorithm_the_issuer_does_not_list_is_rejected(verifier: JwtVerifier) -> None:
    token = jwt.encode(claims(RSA_ISS), rsa_key(), "PS256")
    assert (await rejected(verifier, token)).reason == "alg_not_allowed"


async def test_expired_token_is_rejected_but_accepted_within_the_leeway(
    verifier: JwtVerifier,
) -> None:
    now = int(time.time())
    assert (await rejected(verifier, signed(RSA_ISS, exp=now - 120))).reason == "expired"
    assert await verifier.verify(signed(RSA_ISS, exp=now - 5))  # leeway 30 s


async def test_not_yet_valid_token_depends_on_the_leeway(tmp_path: Path) -> None:
    future = int(time.time()) + 10
    lenient = JwtVerifier.from_settings(settings(tmp_path, leeway=30))
    strict = JwtVerifier.from_settings(settings(tmp_path, leeway=0))
    assert await lenient.verify(signed(HMAC_ISS, nbf=future))
    assert (await rejected(strict, signed(HMAC_ISS, nbf=future))).reason == "not_yet_valid"
    assert (await rejected(strict, signed(HMAC_ISS, iat=future))).reason == "not_yet_valid"


async def test_unknown_or_missing_issuer_is_rejected(verifier: JwtVerifier) -> None:
    evil = jwt.encode(claims("https://evil.example"), HMAC_SECRET, "HS256")
    assert (await rejected(verifier, evil)).reason == "wrong_issuer"
    anonymous = jwt.encode(claims(HMAC_ISS, iss=None), HMAC_SECRET, "HS256")
    assert (await rejected(verifier, anonymous)).reason == "wrong_issuer"


async def test_token_of_one_issuer_signed_by_another_issuers_key_fails(
    verifier: JwtVerifier,
) -> None:
    token = jwt.encode(claims(EC_ISS), rsa_key(), "RS256")
    assert (await rejected(verifier, token)).reason == "alg_not_allowed"
    forged = jwt.encode(claims(RSA_ISS), rsa.generate_private_key(65537, 2048), "RS256")
    assert (await rejected(verifier, forged)).reason == "bad_signature"


async def test_audience_must_match_one_of_the_issuers(verifier: JwtVerifier) -> None:
    assert (await rejected(verifier, signed(HMAC_ISS, aud="stranger"))).reason == "wrong_audience"
    assert await verifier.verify(signed(HMAC_ISS, aud=["stranger", "other"]))


@pytest.mark.parametrize("claim", ["exp", "aud", "sub"])
async def test_required_claim_missing_is_rejected(verifier: JwtVerifier, claim: str) -> None:
    exc = await rejected(verifier, signed(HMAC_ISS, **{claim: None}))
    assert exc.reason == "missing_claim"
    assert claim in exc.message


async def test_oversized_token_is_rejected_before_decoding(verifier: JwtVerifier) -> None:
    assert (await rejected(verifier, signed(HMAC_ISS, pad="x" * 3000))).reason == "too_large"
    assert (await rejected(verifier, "\x00" * 5000)).reason == "too_large"


async def test_tampered_signature_or_payload_is_rejected(verifier: JwtVerifier) -> None:
    for iss in (RSA_ISS, EC_ISS, HMAC_ISS):
        header, payload, sig = signed(iss).split(".")
        flipped = sig[:10] + ("A" if sig[10] != "A" else "B") + sig[11:]
        exc = await rejected(verifier, f"{header}.{payload}.{flipped}")
        assert exc.reason == "bad_signature"
        evil_payload = b64(claims(iss, preferred_username="root"))
        assert (
            await rejected(verifier, f"{header}.{evil_payload}.{sig}")
        ).reason == "bad_signature"


def load(table: dict[str, Any]) -> tuple[SsoSettings | None, list[Problem]]:
    problems: list[Problem] = []
    built = build(SsoSettings, table, "sso", problems)
    return (built if not problems else None), problems


def issuer_table(**fields: Any) -> dict[str, Any]:
    return {"enabled": True, "issuers": [{"issuer": RSA_ISS, "audience": ["omero"], **fields}]}


def test_settings_load_a_valid_issuer_with_a_secret_file(tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text(HMAC_SECRET + "\n")
    loaded, problems = load(issuer_table(algorithms=["HS256"], hmac_secret_file=str(secret)))
    assert problems == []
    assert loaded is not None
    assert loaded.issuers[0].hmac_secret == HMAC_SECRET


@pytest.mark.parametrize(
    ("fields", "key", "words"),
    [
        ({"algorithms": ["none"]}, "sso.issuers[0].algorithms", "never allowed"),
        ({"algorithms": ["HS1"]}, "sso.issuers[0].algorithms", "is not one of"),
        ({"algorithms": ["HS256"]}, "sso.issuers[0].hmac_secret", "needs hmac_secret_file"),
        ({"algorithms": ["RS256"]}, "sso.issuers[0].algorithms", "needs public_key_files"),
        (
            {"public_key_files": ["/nonexistent/k.pem"]},
            "sso.issuers[0].public_key_files",
            "/nonexistent/k.pem: cannot read",
        ),
        (
            {"jwks_file": "/nonexistent/jwks.json"},
            "sso.issuers[0].jwks_file",
            "/nonexistent/jwks.json",
        ),
        ({"jwks_url": "http://idp.example/jwks"}, "sso.issuers[0].jwks_url", "must be https"),
        ({"jwks_url": "https://u:p@idp.example/jwks"}, "sso.issuers[0].jwks_url", "credentials"),
        (
            {"username_template": "{sub.__class__}"},
            "sso.issuers[0].username_template",
            "plain claim names",
        ),
        ({"username_template": "plain"}, "sso.issuers[0].username_template", "at least one"),
        ({"audience": []}, "sso.issuers[0].audience", "required"),
    ],
)
def test_settings_refuse_unsafe_or_incomplete_issuers(
    fields: dict[str, Any], key: str, words: str
) -> None:
    _, problems = load(issuer_table(**fields))
    assert any(p.key == key and words in p.message for p in problems), problems


def test_settings_name_the_path_of_an_unparsable_key_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.pem"
    bad.write_text("-----BEGIN PUBLIC KEY-----\nnot base64\n-----END PUBLIC KEY-----\n")
    _, problems = load(issuer_table(public_key_files=[str(bad)]))
    assert [p.message for p in problems] == [f"{bad}: not a PEM public key or certificate"]


def test_settings_refuse_a_key_whose_type_no_listed_algorithm_uses(tmp_path: Path) -> None:
    pem = tmp_path / "rsa.pem"
    pem.write_bytes(public_pem(rsa_key()))
    _, problems = load(issuer_table(algorithms=["ES256"], public_key_files=[str(pem)]))
    assert any("a RSA key, but algorithms has none" in p.message for p in problems)


def test_settings_refuse_a_short_or_pem_hmac_secret(tmp_path: Path) -> None:
    short, pem = tmp_path / "short", tmp_path / "pem"
    short.write_text("too-short")
    pem.write_bytes(public_pem(rsa_key()))
    for path, words in ((short, "at least 32 bytes"), (pem, "is a PEM key")):
        _, problems = load(issuer_table(algorithms=["HS256"], hmac_secret_file=str(path)))
        assert any(words in p.message for p in problems), problems
        assert all(HMAC_SECRET not in p.message for p in problems)


def test_settings_refuse_enabled_sso_without_issuers_and_duplicate_issuers(tmp_path: Path) -> None:
    _, problems = load({"enabled": True})
    assert [p.key for p in problems] == ["sso.issuers"]
    secret = tmp_path / "s"
    secret.write_text(HMAC_SECRET)
    one = {
        "issuer": RSA_ISS,
        "audience": ["a"],
        "algorithms": ["HS256"],
        "hmac_secret_file": str(secret),
    }
    _, problems = load({"enabled": True, "issuers": [one, one]})
    assert any("configured twice" in p.message for p in problems)


def test_settings_refuse_root_in_allow_admin_accounts() -> None:
    _, problems = load({"allow_admin_accounts": ["Root"]})
    assert [p.key for p in problems] == ["sso.allow_admin_accounts"]


def test_default_sso_settings_are_disabled_and_valid() -> None:
    loaded, problems = load({})
    assert problems == []
    assert loaded is not None
    assert loaded.enabled is False
    assert loaded.porter_tokens.enabled is False


async def test_verifier_built_from_disabled_settings_trusts_no_issuer(tmp_path: Path) -> None:
    issuers = settings(tmp_path).issuers
    disabled = JwtVerifier.from_settings(SsoSettings(enabled=False, issuers=issuers))
    assert (await rejected(disabled, signed(HMAC_ISS))).reason == "wrong_issuer"
