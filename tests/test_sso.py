"""SSO through the running gateway: tokens from an identity provider and porter's own,
against the OMERO test server (and real OMERO.web where a page must work)."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import json
import logging
import time
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from prometheus_client import REGISTRY

from auth.omero_settings import OmeroSettings
from auth.sso_settings import IssuerSettings, PorterTokenSettings, SsoSettings
from tests.gateway_fixtures import GatewayFactory
from tests.omero_sim.fixture import OmeroSim
from tests.porter_fixtures import PorterFactory, Upstream

ISSUER = "https://idp.example.org/realms/lab"


class Idp:
    """A test identity provider: an EC P-256 key; its public half is in a PEM file."""

    def __init__(self, directory: Path) -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.public_file = directory / "idp-public.pem"
        self.public_file.write_bytes(
            self.key.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )

    def token(self, user: str, **claims: Any) -> str:
        now = int(time.time())
        payload = {
            "iss": ISSUER,
            "aud": "omero",
            "sub": f"sub-{user}",
            "preferred_username": user,
            "iat": now,
            "nbf": now,
            "exp": now + 300,
            **claims,
        }
        return jwt.encode(payload, self.key, algorithm="ES256")


def sso_sessions_created() -> float:
    """porter_omero_sessions_created_total{reason="sso"} in this process."""
    return REGISTRY.get_sample_value("porter_omero_sessions_created_total", {"reason": "sso"}) or 0


@pytest.fixture
def idp(tmp_path: Path) -> Idp:
    return Idp(tmp_path)


def sso_sections(sim: OmeroSim, idp: Idp, **sso: Any) -> dict[str, Any]:
    entry = sim.server_list_entry()
    issuer = IssuerSettings(
        issuer=ISSUER,
        audience=("omero",),
        algorithms=("ES256",),
        public_key_files=(str(idp.public_file),),
    )
    return {
        "omero": OmeroSettings(
            server_list=((entry[0], entry[1], entry[2]),),
            admin_user="root",
            admin_password=sim.users["root"],
        ),
        "sso": SsoSettings(enabled=True, issuers=(issuer,), **sso),
    }


def unsigned(claims: dict[str, Any]) -> str:
    """A token with `alg: none` and no signature, as an attacker would make one."""

    def part(value: dict[str, Any]) -> str:
        raw = json.dumps(value, separators=(",", ":")).encode()
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    return f"{part({'alg': 'none', 'typ': 'JWT'})}.{part(claims)}."


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_bearer_requests_of_one_user_share_one_omero_session(
    gateway: GatewayFactory, omero_sim: OmeroSim, idp: Idp
) -> None:
    client = await gateway(sections=sso_sections(omero_sim, idp))
    token = idp.token("bob")

    async def one() -> tuple[int, str, bool]:
        async with client.get(
            "/webclient/active_group/", headers=bearer(token), allow_redirects=False
        ) as resp:
            return resp.status, resp.headers.get("Location", ""), "Set-Cookie" in resp.headers

    before = sso_sessions_created()
    results = await asyncio.gather(*(one() for _ in range(100)))
    # OMERO.web redirects a logged-in user to its index: every request was bob's.
    assert set(results) == {(302, "/webclient/", False)}  # and no cookie was set
    assert sso_sessions_created() - before == 1
    assert [s["user"] for s in omero_sim.sessions()].count("bob") == 1


async def test_token_and_authorization_never_reach_omero_web(
    omero_sim: OmeroSim, idp: Idp, echo_upstream: Upstream, porter: PorterFactory
) -> None:
    client = await porter(logged_in=False, sections=sso_sections(omero_sim, idp))
    token = idp.token("bob")
    resp = await client.get("/webclient/x/", headers=bearer(token))
    assert resp.status == 200
    for received in echo_upstream.state.received:
        assert "Authorization" not in received.headers
        assert token not in str(received.headers.items()) + received.raw_path
    forwarded = echo_upstream.state.received[-1]
    assert forwarded.headers["Cookie"].startswith("sessionid=echo-session-")


@pytest.mark.parametrize(
    ("case", "status"),
    [
        ("expired", 401),
        ("alg_none", 401),
        ("tampered", 401),
        ("wrong_issuer", 401),
        ("root", 403),
        ("unknown_user", 403),
        ("exp_string", 401),
        ("unlisted_admin", 403),
    ],
)
async def test_bad_tokens_get_their_defined_answer(
    case: str,
    status: int,
    omero_sim: OmeroSim,
    idp: Idp,
    echo_upstream: Upstream,
    porter: PorterFactory,
    caplog: pytest.LogCaptureFixture,
) -> None:
    client = await porter(logged_in=False, sections=sso_sections(omero_sim, idp))
    tokens = {
        "expired": idp.token(
            "bob",
            exp=int(time.time()) - 3600,
            iat=int(time.time()) - 7200,
            nbf=int(time.time()) - 7200,
        ),
        "alg_none": unsigned(
            {
                "iss": ISSUER,
                "aud": "omero",
                "sub": "x",
                "preferred_username": "bob",
                "exp": int(time.time()) + 300,
            }
        ),
        "tampered": idp.token("bob")[:-4] + "AAAA",
        "wrong_issuer": idp.token("bob", iss="https://evil.example"),
        "root": idp.token("root"),
        "unknown_user": idp.token("nobody-in-omero"),
        "exp_string": idp.token("bob", exp=str(int(time.time()) + 300)),
        "unlisted_admin": idp.token("sysop"),  # an OMERO admin that no list names
    }
    token = tokens[case]
    with caplog.at_level(logging.DEBUG):
        resp = await client.get(
            "/webclient/x/", headers={**bearer(token), "Accept": "application/json"}
        )
    assert resp.status == status
    body = await resp.json()
    assert token not in await resp.text()
    assert set(body) == {"error", "status", "request_id"}
    if status == 401:
        assert resp.headers["WWW-Authenticate"].startswith("Bearer error=")
    if case == "unknown_user":
        assert "not known to OMERO" in body["error"]
    assert echo_upstream.state.received == [] or all(
        "bsession" in r.raw_path for r in echo_upstream.state.received
    )
    assert token not in caplog.text


async def test_link_login_starts_a_session_and_drops_the_token_from_the_url(
    omero_sim: OmeroSim, idp: Idp, echo_upstream: Upstream, porter: PorterFactory
) -> None:
    client = await porter(logged_in=False, sections=sso_sections(omero_sim, idp, link_login=True))
    token = idp.token("carol", jti="link-1")
    resp = await client.get(f"/porter/sso?token={token}&url=/webclient/", allow_redirects=False)
    assert resp.status == 303
    assert resp.headers["Location"] == "/webclient/"
    assert resp.headers["Referrer-Policy"] == "no-referrer"
    assert "porter_session=" in resp.headers["Set-Cookie"]
    follow = await client.get("/webclient/")
    assert follow.status == 200  # carol's porter session, no token
    assert "Authorization" not in echo_upstream.state.received[-1].headers


async def test_porter_issues_tokens_that_work_as_bearer_and_publishes_its_public_key(
    omero_sim: OmeroSim, idp: Idp, echo_upstream: Upstream, porter: PorterFactory, tmp_path: Path
) -> None:
    key = tmp_path / "porter-key.pem"
    key.write_bytes(
        ec.generate_private_key(ec.SECP256R1()).private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    tokens = PorterTokenSettings(enabled=True, signing_key_file=str(key))
    client = await porter(
        logged_in=False, sections=sso_sections(omero_sim, idp, porter_tokens=tokens)
    )
    wrong = await client.post("/porter/token", data={"username": "alice", "password": "nope-x"})
    assert wrong.status == 401
    resp = await client.post(
        "/porter/token", data={"username": "alice", "password": omero_sim.users["alice"]}
    )
    assert resp.status == 200
    body = await resp.json()
    assert body["token_type"] == "Bearer"
    assert (await client.get("/webclient/x/", headers=bearer(body["access_token"]))).status == 200
    jwks = await (await client.get("/porter/jwks.json")).json()
    assert [k["kty"] for k in jwks["keys"]] == ["EC"]
    assert all("d" not in k for k in jwks["keys"])


def test_verified_token_cache_keeps_identities_only_until_the_token_expires() -> None:
    from auth.sso_identity import SsoIdentity
    from auth.verified_tokens import VerifiedTokens

    cache = VerifiedTokens()
    identity = SsoIdentity("bob", (), ISSUER, "sub-bob")
    cache.put("token-live", identity, time.time() + 60)
    cache.put("token-expired", identity, time.time() - 1)
    assert cache.get("token-live") == identity
    assert cache.get("token-expired") is None
    assert cache.get("token-never-seen") is None


async def test_omero_web_refusing_the_sso_handoff_is_502_not_a_crash(
    omero_sim: OmeroSim, idp: Idp, porter: PorterFactory
) -> None:
    from tests.porter_fixtures import free_port

    client = await porter(
        logged_in=False,
        upstream=f"http://127.0.0.1:{free_port()}",
        sections=sso_sections(omero_sim, idp),
    )
    resp = await client.get(
        "/webclient/x/", headers={**bearer(idp.token("bob")), "Accept": "application/json"}
    )
    assert resp.status == 502
    assert (await resp.json())["error"] == "OMERO.web could not be reached."
    assert [s for s in omero_sim.sessions() if s["user"] == "bob"] == []  # closed again


async def test_a_link_token_logs_in_once_and_never_again(
    omero_sim: OmeroSim, idp: Idp, echo_upstream: Upstream, porter: PorterFactory
) -> None:
    client = await porter(logged_in=False, sections=sso_sections(omero_sim, idp, link_login=True))
    token = idp.token("carol", jti="once-only")
    first = await client.get(f"/porter/sso?token={token}", allow_redirects=False)
    assert first.status == 303
    for _ in range(3):
        again = await client.get(
            f"/porter/sso?token={token}", allow_redirects=False, headers={"Cookie": ""}
        )
        assert again.status == 401
        assert "Set-Cookie" not in again.headers
        assert "replayed" in again.headers["WWW-Authenticate"]
    assert [s["user"] for s in omero_sim.sessions()].count("carol") == 1


async def test_a_link_token_without_jti_is_refused(
    omero_sim: OmeroSim, idp: Idp, echo_upstream: Upstream, porter: PorterFactory
) -> None:
    client = await porter(logged_in=False, sections=sso_sections(omero_sim, idp, link_login=True))
    before = omero_sim.stats()["sessions_created"]
    resp = await client.get(f"/porter/sso?token={idp.token('carol')}", allow_redirects=False)
    assert resp.status == 401
    assert "no_jti" in resp.headers["WWW-Authenticate"]
    assert omero_sim.stats()["sessions_created"] == before


async def test_omero_admins_are_refused_by_sso_unless_allowed_by_name(
    omero_sim: OmeroSim, idp: Idp, echo_upstream: Upstream, porter: PorterFactory
) -> None:
    refused = await porter(logged_in=False, sections=sso_sections(omero_sim, idp, link_login=True))
    before = omero_sim.stats()
    resp = await refused.get("/webclient/x/", headers=bearer(idp.token("sysop")))
    assert resp.status == 403
    link = f"/porter/sso?token={idp.token('sysop', jti='admin-link')}"
    resp = await refused.get(link, allow_redirects=False)
    assert resp.status == 403
    assert "Set-Cookie" not in resp.headers
    after = omero_sim.stats()
    assert after["sessions_closed"] - before["sessions_closed"] == 2  # made, then closed
    assert "sysop" not in [s["user"] for s in omero_sim.sessions()]  # none left open
    allowed = await porter(
        logged_in=False,
        sections=sso_sections(omero_sim, idp, allow_admin_accounts=("sysop",)),
    )
    resp = await allowed.get("/webclient/x/", headers=bearer(idp.token("sysop")))
    assert resp.status == 200


async def test_a_bearer_token_with_undecodable_bytes_is_401_not_a_crash(
    omero_sim: OmeroSim, idp: Idp, echo_upstream: Upstream, porter: PorterFactory
) -> None:
    client = await porter(logged_in=False, sections=sso_sections(omero_sim, idp))
    assert client.server.port is not None
    reader, writer = await asyncio.open_connection("127.0.0.1", client.server.port)
    writer.write(
        b"GET /webclient/x/ HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
        b"Authorization: Bearer ey\xff\xfe.\xc3(.abc\r\n\r\n"
    )
    await writer.drain()
    status_line = await reader.readline()
    writer.close()
    assert status_line.split()[1] == b"401"
    assert echo_upstream.state.received == []


async def test_bearer_tokens_get_sessions_in_the_group_their_claims_map_to(
    gateway: GatewayFactory, omero_sim: OmeroSim, idp: Idp
) -> None:
    sections = sso_sections(omero_sim, idp)
    [issuer] = sections["sso"].issuers
    mapped = dataclasses.replace(
        issuer,
        group_claim="groups",
        group_map=(("lab-staff", "lab"), ("other-lab-members", "other-lab"), ("x", "system")),
    )
    sections["sso"] = dataclasses.replace(sections["sso"], issuers=(mapped,))
    client = await gateway(sections=sections)
    before = {s["key"] for s in omero_sim.sessions()}

    async def status(token: str) -> int:
        async with client.get(
            "/webclient/active_group/", headers=bearer(token), allow_redirects=False
        ) as resp:
            return resp.status

    # carol is in lab (her default) and other-lab: each claim gets its own session and group
    assert await status(idp.token("carol", groups=["other-lab-members"])) == 302
    assert await status(idp.token("carol", groups=["lab-staff"])) == 302
    assert await status(idp.token("carol", groups=["other-lab-members"])) == 302  # reused
    made = [s for s in omero_sim.sessions() if s["key"] not in before and s["user"] == "carol"]
    assert sorted(s["group"] for s in made) == ["lab", "other-lab"]
    # bob is not in the group his claim maps to: refused, and no session of his left open
    assert await status(idp.token("bob", groups=["x"])) == 403
    assert not [s for s in omero_sim.sessions() if s["key"] not in before and s["user"] == "bob"]
