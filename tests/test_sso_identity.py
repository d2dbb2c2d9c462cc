"""Claims of verified tokens become OMERO identities, or refusals with a reason and a 403."""

from __future__ import annotations

import time
from typing import Any

import jwt
import pytest

from auth.jwks import StaticKeys, VerifyKey
from auth.jwt_verify import JwtVerifier, TokenRejected, TrustedIssuer, VerifiedToken
from auth.sso_identity import IdentityRefused, SsoIdentity, SsoIdentityMapper
from auth.sso_settings import IssuerSettings, SsoSettings

ISS = "https://idp.example"
SECRET = "k" * 48


def issuer(**fields: Any) -> IssuerSettings:
    return IssuerSettings(
        issuer=ISS, audience=("omero",), algorithms=("HS256",), hmac_secret=SECRET, **fields
    )


def verified(claims: dict[str, Any], **issuer_fields: Any) -> VerifiedToken:
    base = {"sub": "sub-1", "preferred_username": "alice", **claims}
    return VerifiedToken(issuer(**issuer_fields), base, "HS256", None)


def refusal(mapper: SsoIdentityMapper, token: VerifiedToken) -> IdentityRefused:
    with pytest.raises(IdentityRefused) as info:
        mapper.map(token)
    assert info.value.status == 403
    return info.value


def test_preferred_username_becomes_the_omero_username() -> None:
    identity = SsoIdentityMapper(SsoSettings()).map(verified({}))
    assert identity == SsoIdentity("alice", (), ISS, "sub-1")


@pytest.mark.parametrize(
    ("template", "claims", "username"),
    [
        ("{email}", {"email": "a.b@lab.org", "email_verified": True}, "a.b@lab.org"),
        ("{uid}", {"uid": 1042}, "1042"),
        ("lab-{preferred_username}", {}, "lab-alice"),
    ],
)
def test_username_template_fills_in_claims(
    template: str, claims: dict[str, Any], username: str
) -> None:
    mapper = SsoIdentityMapper(SsoSettings())
    assert mapper.map(verified(claims, username_template=template)).username == username


def test_unverified_email_is_refused_as_a_username_unless_trusted() -> None:
    mapper = SsoIdentityMapper(SsoSettings())
    for extra in ({}, {"email_verified": False}, {"email_verified": "true"}):
        token = verified({"email": "boss@lab.org", **extra}, username_template="{email}")
        assert refusal(mapper, token).reason == "email_unverified"
    trusting = verified(
        {"email": "boss@lab.org"}, username_template="{email}", trust_unverified_email=True
    )
    assert mapper.map(trusting).username == "boss@lab.org"


@pytest.mark.parametrize(
    ("claims", "reason"),
    [
        ({"preferred_username": None}, "no_username"),
        ({"preferred_username": ""}, "no_username"),
        ({"preferred_username": ["alice"]}, "no_username"),
        ({"preferred_username": True}, "no_username"),
        ({"preferred_username": " alice"}, "bad_username"),
        ({"preferred_username": "ali\nce"}, "bad_username"),
        ({"preferred_username": "a" * 300}, "bad_username"),
    ],
)
def test_unusable_username_claim_is_refused(claims: dict[str, Any], reason: str) -> None:
    assert refusal(SsoIdentityMapper(SsoSettings()), verified(claims)).reason == reason


@pytest.mark.parametrize("name", ["root", "Root", "guest"])
def test_omero_system_accounts_are_never_reachable(name: str) -> None:
    mapper = SsoIdentityMapper(SsoSettings(allow_admin_accounts=("alice",)))
    token = verified({"preferred_username": name})
    assert refusal(mapper, token).reason == "admin_account"


def test_root_stays_refused_even_if_a_mapper_is_given_it_as_allowed() -> None:
    # settings loading refuses this configuration; the mapper refuses root all the same
    mapper = SsoIdentityMapper(SsoSettings(allow_admin_accounts=("root",)))
    assert refusal(mapper, verified({"preferred_username": "root"})).reason == "admin_account"


def test_configured_admin_accounts_are_refused_unless_explicitly_allowed() -> None:
    settings = SsoSettings(admin_accounts=("omeroadmin", "curator"))
    mapper = SsoIdentityMapper(settings, protected=("porter-sudo",))
    for name in ("omeroadmin", "curator", "porter-sudo"):
        assert refusal(mapper, verified({"preferred_username": name})).reason == "admin_account"
    allowing = SsoIdentityMapper(
        SsoSettings(admin_accounts=("omeroadmin", "curator"), allow_admin_accounts=("curator",))
    )
    assert allowing.map(verified({"preferred_username": "curator"})).username == "curator"


def test_deny_lists_win_over_allow_lists() -> None:
    settings = SsoSettings(
        allow_users_regex=(r"[a-z]+",), deny_users=("mallory",), deny_users_regex=(r"test.*",)
    )
    mapper = SsoIdentityMapper(settings)
    assert mapper.map(verified({})).username == "alice"
    for name in ("mallory", "tester"):
        assert refusal(mapper, verified({"preferred_username": name})).reason == "denied"


def test_user_outside_the_allow_lists_is_refused() -> None:
    mapper = SsoIdentityMapper(SsoSettings(allow_users=("alice",), allow_users_regex=(r"lab-.*",)))
    assert mapper.map(verified({"preferred_username": "lab-bob"})).username == "lab-bob"
    token = verified({"preferred_username": "bob"})
    assert refusal(mapper, token).reason == "not_allowed"
    partial = verified({"preferred_username": "xlab-bob"})  # regexes match the whole name
    assert refusal(mapper, partial).reason == "not_allowed"


def test_group_claim_maps_to_the_first_configured_omero_group_present() -> None:
    mapping = (("staff", "Staff Lab"), ("students", "Teaching"))
    token = verified({"groups": ["students", "staff"]}, group_claim="groups", group_map=mapping)
    assert SsoIdentityMapper(SsoSettings()).map(token).group == "Staff Lab"


def test_group_claim_may_be_a_nested_path() -> None:
    token = verified(
        {"realm_access": {"roles": ["imaging"]}},
        group_claim="realm_access.roles",
        group_map=(("imaging", "Imaging Core"),),
    )
    assert SsoIdentityMapper(SsoSettings()).map(token).group == "Imaging Core"


def test_unmapped_group_gives_no_group_or_a_refusal_when_required() -> None:
    mapper = SsoIdentityMapper(SsoSettings())
    fields: dict[str, Any] = {"group_claim": "groups", "group_map": (("staff", "Staff"),)}
    assert mapper.map(verified({"groups": ["other"]}, **fields)).group is None
    required = verified({"groups": ["other"]}, group_required=True, **fields)
    assert refusal(mapper, required).reason == "no_group"


def test_group_as_is_uses_the_claim_value_as_the_omero_group() -> None:
    token = verified({"group": "Lab A"}, group_claim="group", group_as_is=True)
    assert SsoIdentityMapper(SsoSettings()).map(token).group == "Lab A"


def test_server_claim_names_the_server_and_must_be_a_valid_id() -> None:
    mapper = SsoIdentityMapper(SsoSettings())
    assert mapper.map(verified({"srv": 2}, server_claim="srv")).server_id == 2
    for bad in (0, "2", True, None):
        assert refusal(mapper, verified({"srv": bad}, server_claim="srv")).reason == "bad_server"


async def test_signed_token_for_root_verifies_but_is_refused_by_the_mapper() -> None:
    trusted = TrustedIssuer(issuer(), (StaticKeys([VerifyKey("oct", SECRET.encode())]),))
    verifier = JwtVerifier([trusted])
    now = int(time.time())
    claims = {"iss": ISS, "aud": "omero", "sub": "0", "exp": now + 60, "iat": now}
    mapper = SsoIdentityMapper(SsoSettings())
    root = await verifier.verify(jwt.encode({**claims, "preferred_username": "root"}, SECRET))
    assert refusal(mapper, root).reason == "admin_account"
    alice = await verifier.verify(jwt.encode({**claims, "preferred_username": "alice"}, SECRET))
    assert mapper.map(alice) == SsoIdentity("alice", (), ISS, "0")
    with pytest.raises(TokenRejected):
        await verifier.verify(jwt.encode({**claims, "preferred_username": "root"}, "x" * 48))


def test_every_mapped_group_is_a_candidate_in_group_map_order() -> None:
    # a Keycloak user in several groups: each pair present is a candidate, in the map's order
    # (not the token's); a login takes the first one the user is a member of in OMERO
    mapping = (("staff", "Staff Lab"), ("imaging", "Imaging Core"), ("x", "Unused"))
    token = verified(
        {"groups": ["imaging", "students", "staff"]}, group_claim="groups", group_map=mapping
    )
    identity = SsoIdentityMapper(SsoSettings()).map(token)
    assert identity.groups == ("Staff Lab", "Imaging Core")
    assert identity.group == "Staff Lab"
    twice = verified(
        {"groups": ["a", "b"]}, group_claim="groups", group_map=(("a", "G"), ("b", "G"))
    )
    assert SsoIdentityMapper(SsoSettings()).map(twice).groups == ("G",)
