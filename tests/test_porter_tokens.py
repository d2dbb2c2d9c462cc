"""Porter's own tokens: signed with its key, published as a public JWKS, verified like any other."""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from auth.jwks import KeyLoadError, parse_jwks
from auth.jwt_verify import JwtVerifier, TokenRejected
from auth.porter_tokens import PorterTokenIssuer
from auth.sso_identity import IdentityRefused, SsoIdentity, SsoIdentityMapper
from auth.sso_settings import PorterTokenSettings, SsoSettings
from proxy.config import Problem, build
from tests.keys import write_key

PRIVATE_MEMBERS = {"d", "p", "q", "dp", "dq", "qi", "oth", "k"}


@pytest.fixture
def ec_key_file(tmp_path: Path) -> str:
    return write_key(tmp_path / "porter-ec.pem", ec.generate_private_key(ec.SECP256R1()))


@pytest.fixture
def rsa_key_file(tmp_path: Path) -> str:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return write_key(tmp_path / "porter-rsa.pem", key)


def unverified(token: str) -> dict[str, Any]:
    return jwt.decode(token, options={"verify_signature": False})


def token_settings(key_file: str, **fields: Any) -> PorterTokenSettings:
    return PorterTokenSettings(enabled=True, signing_key_file=key_file, **fields)


async def test_porter_token_verifies_through_the_sso_verifier_and_maps_to_the_user(
    ec_key_file: str,
) -> None:
    issuer = PorterTokenIssuer(token_settings(ec_key_file))
    verifier = JwtVerifier.from_settings(SsoSettings(), extra=[issuer.trusted_issuer()])
    verified = await verifier.verify(issuer.issue("alice", 2, group="Lab A"))
    identity = SsoIdentityMapper(SsoSettings()).map(verified)
    assert identity == SsoIdentity("alice", ("Lab A",), "omero-porter", "alice", server_id=2)


def test_token_header_and_claims(ec_key_file: str) -> None:
    issuer = PorterTokenIssuer(token_settings(ec_key_file, lifetime=300), clock=lambda: 1_000_000)
    token = issuer.issue("alice", 1)
    header = jwt.get_unverified_header(token)
    assert header == {"alg": "ES256", "kid": issuer.key_id, "typ": "JWT"}
    claims = unverified(token)
    assert claims["iss"] == "omero-porter"
    assert claims["aud"] == "omero-porter"
    assert claims["sub"] == "alice"
    assert (claims["iat"], claims["nbf"], claims["exp"]) == (1_000_000, 1_000_000, 1_000_300)
    assert claims["omero_server"] == 1
    assert "omero_group" not in claims
    assert claims["jti"] != unverified(issuer.issue("alice", 1))["jti"]


def test_requested_lifetime_is_capped_by_the_configured_one(ec_key_file: str) -> None:
    issuer = PorterTokenIssuer(token_settings(ec_key_file, lifetime=300), clock=lambda: 0)
    for asked, granted in ((60, 60), (10_000, 300)):
        claims = unverified(issuer.issue("a", 1, lifetime=asked))
        assert claims["exp"] - claims["iat"] == granted


@pytest.mark.parametrize("fixture", ["ec_key_file", "rsa_key_file"])
def test_jwks_publishes_the_public_key_only(fixture: str, request: pytest.FixtureRequest) -> None:
    key_file: str = request.getfixturevalue(fixture)
    alg = "ES256" if fixture == "ec_key_file" else "RS256"
    issuer = PorterTokenIssuer(token_settings(key_file, algorithm=alg))
    published = issuer.jwks()
    (jwk,) = published["keys"]
    assert not PRIVATE_MEMBERS & set(jwk)
    assert (jwk["kid"], jwk["alg"], jwk["use"]) == (issuer.key_id, alg, "sig")
    # another service verifies porter's token with nothing but the published JWKS
    (key,) = parse_jwks(json.dumps(published).encode(), "porter")
    assert key.fits(alg)
    claims = jwt.decode(issuer.issue("bob", 1), key.key, [alg], audience="omero-porter")
    assert claims["sub"] == "bob"


def test_key_id_defaults_to_the_rfc7638_thumbprint_or_is_the_configured_one(
    rsa_key_file: str,
) -> None:
    issuer = PorterTokenIssuer(token_settings(rsa_key_file, algorithm="RS256"))
    (jwk,) = issuer.jwks()["keys"]
    canonical = json.dumps({"e": jwk["e"], "kty": "RSA", "n": jwk["n"]}, separators=(",", ":"))
    expected = base64.urlsafe_b64encode(hashlib.sha256(canonical.encode()).digest()).rstrip(b"=")
    assert issuer.key_id == expected.decode()
    named = PorterTokenIssuer(token_settings(rsa_key_file, algorithm="RS256", key_id="2026-01"))
    assert jwt.get_unverified_header(named.issue("a", 1))["kid"] == "2026-01"


async def test_expired_porter_token_is_rejected(ec_key_file: str) -> None:
    old = PorterTokenIssuer(token_settings(ec_key_file, lifetime=60), clock=lambda: 1_000_000)
    verifier = JwtVerifier([old.trusted_issuer()])
    with pytest.raises(TokenRejected) as info:
        await verifier.verify(old.issue("alice", 1))
    assert info.value.reason == "expired"


async def test_porter_token_is_untrusted_when_porter_is_not_a_configured_issuer(
    ec_key_file: str,
) -> None:
    issuer = PorterTokenIssuer(token_settings(ec_key_file))
    with pytest.raises(TokenRejected) as info:
        await JwtVerifier.from_settings(SsoSettings()).verify(issuer.issue("alice", 1))
    assert info.value.reason == "wrong_issuer"


async def test_porter_token_of_another_porter_key_is_rejected(
    ec_key_file: str, tmp_path: Path
) -> None:
    other_file = write_key(tmp_path / "other.pem", ec.generate_private_key(ec.SECP256R1()))
    ours = PorterTokenIssuer(token_settings(ec_key_file, key_id="k"))
    theirs = PorterTokenIssuer(token_settings(other_file, key_id="k"))
    with pytest.raises(TokenRejected) as info:
        await JwtVerifier([ours.trusted_issuer()]).verify(theirs.issue("alice", 1))
    assert info.value.reason == "bad_signature"


async def test_porter_token_for_root_is_refused_by_the_mapper(ec_key_file: str) -> None:
    issuer = PorterTokenIssuer(token_settings(ec_key_file))
    verified = await JwtVerifier([issuer.trusted_issuer()]).verify(issuer.issue("root", 1))
    with pytest.raises(IdentityRefused) as info:
        SsoIdentityMapper(SsoSettings()).map(verified)
    assert info.value.reason == "admin_account"


def test_issuing_refuses_an_empty_username_or_a_bad_server_id(ec_key_file: str) -> None:
    issuer = PorterTokenIssuer(token_settings(ec_key_file))
    for username, server in (("", 1), ("a\nb", 1), ("alice", 0)):
        with pytest.raises(ValueError, match="must be"):
            issuer.issue(username, server)


def test_signing_key_that_does_not_fit_the_algorithm_is_refused(rsa_key_file: str) -> None:
    with pytest.raises(KeyLoadError, match="ES256 does not fit"):
        PorterTokenIssuer(token_settings(rsa_key_file))


def load(table: dict[str, Any]) -> list[Problem]:
    problems: list[Problem] = []
    build(SsoSettings, {"porter_tokens": table}, "sso", problems)
    return problems


def test_settings_check_the_signing_key_when_enabled(
    ec_key_file: str, rsa_key_file: str, tmp_path: Path
) -> None:
    assert load({"enabled": True, "signing_key_file": ec_key_file}) == []
    assert load({"enabled": False}) == []
    public = tmp_path / "public.pem"
    public.write_bytes(
        ec.generate_private_key(ec.SECP256R1())
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    cases: list[tuple[dict[str, Any], str, str]] = [
        ({"enabled": True}, "sso.porter_tokens.signing_key_file", "is required"),
        (
            {"enabled": True, "signing_key_file": "/nope.pem"},
            "sso.porter_tokens.signing_key_file",
            "/nope.pem: cannot read",
        ),
        (
            {"enabled": True, "signing_key_file": str(public)},
            "sso.porter_tokens.signing_key_file",
            f"{public}: not an unencrypted PEM private key",
        ),
        (
            {"enabled": True, "signing_key_file": rsa_key_file},
            "sso.porter_tokens.algorithm",
            "ES256 does not fit",
        ),
        ({"lifetime": 86400}, "sso.porter_tokens.lifetime", "too large"),
    ]
    for table, key, words in cases:
        problems = load(table)
        assert any(p.key == key and words in p.message for p in problems), (table, problems)
