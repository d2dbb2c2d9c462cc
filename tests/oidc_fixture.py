"""A real OpenID provider for the tests: panva's oidc-provider on Node (tests/oidc_provider/).

One provider per test session, on a free port, with test accounts and three clients of
porter's. Porter's callback URL must be registered before porter runs, so the fixture picks
two ports for porter (`ports`): tests start porter on them. Its signing key is made here, so
tests can also sign logout tokens with the provider's own key.

`log_in_at_provider` walks the provider's own login and consent pages over HTTP, as a browser
would (for the tests that tamper with the redirects in between).
"""

from __future__ import annotations

import html
import json
import os
import re
import subprocess
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import jwt
import pytest
from jwt.algorithms import RSAAlgorithm
from yarl import URL

from auth.oidc_settings import OidcProviderSettings, OidcSettings
from tests.keys import new_rsa_key, pem
from tests.omero_sim.process import stop_process
from tests.porter_fixtures import free_port

PROVIDER_DIR = Path(__file__).parent / "oidc_provider"
KID = "test-key-1"
SECRET = "porter-client-secret-for-tests-only-0123456789"

# The provider's accounts (login = account id = sub). mallory is unknown to OMERO.
ACCOUNTS: dict[str, dict[str, Any]] = {
    "alice": {"preferred_username": "alice", "name": "Alice Liddell", "groups": ["lab-staff"]},
    "bob": {"preferred_username": "bob", "groups": ["lab-staff"]},
    "carol": {"preferred_username": "carol", "groups": ["other-lab-members"]},
    "mallory": {"preferred_username": "mallory", "groups": ["lab-staff"]},
    "sysop": {"preferred_username": "sysop", "groups": []},
    "root": {"preferred_username": "root", "groups": []},
    "nogroup": {"preferred_username": "bob", "groups": ["unmapped"]},
    # carol, whose groups only the userinfo endpoint tells
    "carol-ui": {
        "preferred_username": "carol",
        "groups": ["other-lab-members"],
        "_userinfo_only": ["groups"],
    },
    # alice again, in three groups at the provider (as Keycloak users often are)
    "alice-many": {
        "preferred_username": "alice",
        "groups": ["imaging-core", "public-readers", "lab-staff"],
    },
}


@dataclass
class TestProvider:
    issuer: str
    ports: tuple[int, int]  # porter's: A (in-process tests), B (the second process)
    private_jwk: dict[str, Any] = field(repr=False)
    log_path: Path
    client_key_file: Path  # porter-jwt's private key (PEM); the provider has its public key
    process: subprocess.Popen[bytes] | None = None

    __test__ = False  # not a test class

    def sign(self, claims: Mapping[str, Any], **header: Any) -> str:
        """A JWT signed with the provider's own key."""
        key = RSAAlgorithm.from_jwk(json.dumps(self.private_jwk))
        return jwt.encode(dict(claims), key, algorithm="RS256", headers={"kid": KID, **header})  # type: ignore[arg-type]

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def settings(self, client: str = "porter", **overrides: Any) -> OidcProviderSettings:
        return provider_settings(self.issuer, "Test Institution", client, **overrides)

    def oidc(self, *providers: OidcProviderSettings, **overrides: Any) -> OidcSettings:
        return OidcSettings(providers=providers or (self.settings(),), **overrides)


def provider_settings(
    issuer: str, display_name: str, client: str = "porter", /, **overrides: Any
) -> OidcProviderSettings:
    """Porter's [[oidc.providers]] entry for a test provider: Keycloak's mapping from
    docs/sso.md (preferred_username, groups lab-staff and other-lab-members)."""
    values: dict[str, Any] = {
        "id": "idp",
        "display_name": display_name,
        "issuer": issuer,
        "client_id": client,
        "client_secret": SECRET,
        "scopes": ("openid", "profile", "email", "groups"),
        "group_claim": "groups",
        "group_map": (("lab-staff", "lab"), ("other-lab-members", "other-lab")),
    }
    values.update(overrides)
    return OidcProviderSettings(**values)


CLIENT_KID = "porter-client-key"
REQUIRED_ACR = "urn:porter:mfa"


def _clients(ports: tuple[int, int], client_jwk: dict[str, Any]) -> list[dict[str, Any]]:
    a, b = (f"http://127.0.0.1:{p}" for p in ports)
    base = {
        "client_secret": SECRET,
        "grant_types": ["authorization_code"],
        "response_types": ["code"],
        # one callback URL per provider of porter's: idp (and mixup, a second provider id on
        # the same client, for the mix-up tests), and the shared URL of before
        "redirect_uris": [
            f"{origin}/porter/oidc/{path}"
            for origin in (a, b)
            for path in ("idp/callback", "mixup/callback", "callback")
        ],
        "post_logout_redirect_uris": [
            url
            for origin in (a, b)
            for url in (f"{origin}/porter/login?logged_out=1", f"{origin}/porter/oidc/idp/relogin")
        ],
    }
    return [
        {
            **base,
            "client_id": "porter",
            # the provider tells porter B: a session made through A must end all the same
            "backchannel_logout_uri": f"{b}/porter/oidc/backchannel",
            "backchannel_logout_session_required": True,
        },
        {**base, "client_id": "porter-hs", "id_token_signed_response_alg": "HS256"},
        {**base, "client_id": "porter-short"},  # its ID tokens live one second
        # the token endpoint takes only the secret in the form
        {**base, "client_id": "porter-post", "token_endpoint_auth_method": "client_secret_post"},
        # no secret: porter signs an assertion with its own key (RFC 7523)
        {
            **{k: v for k, v in base.items() if k != "client_secret"},
            "client_id": "porter-jwt",
            "token_endpoint_auth_method": "private_key_jwt",
            "jwks": {"keys": [client_jwk]},
        },
        {**base, "client_id": "porter-acr"},  # its logins must ask for REQUIRED_ACR
    ]


@pytest.fixture(scope="session")
def oidc_provider(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestProvider]:
    if not (PROVIDER_DIR / "node_modules" / "oidc-provider").is_dir():
        raise RuntimeError("the test OpenID provider is not installed: run scripts/setup.sh test")
    port = free_port()
    ports = (free_port(), free_port())
    key = new_rsa_key()
    private_jwk = json.loads(RSAAlgorithm.to_jwk(key))
    private_jwk.pop("key_ops", None)  # PyJWT writes ["sign"]: published, it would forbid verify
    private_jwk.update({"kid": KID, "alg": "RS256", "use": "sig"})
    issuer = f"http://127.0.0.1:{port}"
    client_key = new_rsa_key()
    client_jwk = json.loads(RSAAlgorithm.to_jwk(client_key.public_key()))
    client_jwk.update({"kid": CLIENT_KID, "alg": "RS256", "use": "sig"})
    config = {
        "issuer": issuer,
        "port": port,
        "jwks": {"keys": [private_jwk]},
        "clients": _clients(ports, client_jwk),
        "accounts": ACCOUNTS,
        "required_params": {"porter-acr": {"acr_values": REQUIRED_ACR}},
        "post_only": ["porter-post"],
    }
    directory = tmp_path_factory.mktemp("oidc")
    log_path = directory / "provider.log"
    key_file = directory / "porter-client-key.pem"
    key_file.write_bytes(pem(client_key))
    provider = TestProvider(issuer, ports, private_jwk, log_path, key_file)
    with log_path.open("wb") as log:
        provider.process = subprocess.Popen(
            ["node", str(PROVIDER_DIR / "provider.mjs")],
            env={**os.environ, "OIDC_CONFIG": json.dumps(config)},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 30
        while "listening" not in provider.log():
            if provider.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the OpenID provider did not start:\n{provider.log()}")
            time.sleep(0.05)
        yield provider
    finally:
        stop_process(provider.process)


_HIDDEN = re.compile(r'<input type="hidden" name="([^"]+)" value="([^"]*)"')
_FORM = re.compile(r'<form[^>]*action="([^"]+)"[^>]*>(.*?)</form>', re.DOTALL)


async def log_in_at_provider(
    browser: aiohttp.ClientSession, authorization_url: str, login: str
) -> URL:
    """Follow the provider's pages from porter's redirect to the redirect back to porter
    (returned, not followed): the login form, then the consent form."""
    url = URL(authorization_url)
    for _ in range(12):
        async with browser.get(url, allow_redirects=False) as resp:
            if resp.status in (302, 303):
                location = url.join(URL(resp.headers["Location"]))
                if "/porter/" in location.path:
                    return location
                url = location
                continue
            page = await resp.text()
        forms = _FORM.findall(page)
        assert forms, page
        # the login form when there is one (a provider with a live session also offers a
        # logout form on it, as oidc-provider does for prompt=login); oidc-provider's asks
        # for a "login", django-oauth-toolkit's (Django's) for a "username"
        logins = [f for f in forms if 'name="login"' in f[1] or 'name="username"' in f[1]]
        chosen = (logins or forms)[0]
        action = url.join(URL(chosen[0].replace("&amp;", "&")))
        form = {k: html.unescape(v) for k, v in _HIDDEN.findall(chosen[1])}
        if logins and 'name="username"' in chosen[1]:
            form.update({"username": login, "password": f"{login}-pass"})
        elif logins:
            form.update({"prompt": "login", "login": login, "password": "any"})
        elif "session/end" in str(action):  # the provider's "sign out the other account?"
            form["logout"] = "yes"
        else:
            form["prompt"] = "consent"
        async with browser.post(action, data=form, allow_redirects=False) as resp:
            assert resp.status in (302, 303), await resp.text()
            url = action.join(URL(resp.headers["Location"]))
            if "/porter/" in url.path:
                return url
    raise AssertionError("the provider never sent the browser back to porter")
