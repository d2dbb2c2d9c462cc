"""The second OpenID provider of the tests: django-oauth-toolkit (tests/dot_provider/), from
the Python registry, beside panva's oidc-provider on Node (tests/oidc_fixture.py).

It runs as its own process (Django, sqlite, a threaded WSGI server) on a free port, with the
test accounts and one client of porter's, registered for the same two porter ports as the
Node provider's clients. Each login's password is the login followed by "-pass".
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from auth.oidc_settings import OidcProviderSettings, OidcSettings
from tests.keys import new_rsa_key, pem
from tests.oidc_fixture import ACCOUNTS, SECRET, TestProvider, provider_settings
from tests.omero_sim.process import stop_process
from tests.porter_fixtures import ROOT, free_port


@dataclass
class DotProvider:
    issuer: str
    ports: tuple[int, int]
    control: str
    log_path: Path
    process: subprocess.Popen[bytes]

    __test__ = False

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def settings(self, **overrides: Any) -> OidcProviderSettings:
        """The same mapping as the Node provider's (Keycloak's, from docs/sso.md)."""
        return provider_settings(self.issuer, "Django Institution", **overrides)

    def oidc(self, *providers: OidcProviderSettings, **overrides: Any) -> OidcSettings:
        return OidcSettings(providers=providers or (self.settings(),), **overrides)

    def rotate(self) -> None:
        """A new signing key at once (the old one stays published, inactive)."""
        request = urllib.request.Request(
            self.issuer.removesuffix("/o") + "/control/rotate",
            method="POST",
            headers={"X-Control": self.control},
        )
        with urllib.request.urlopen(request, timeout=10) as resp:
            assert resp.status == 200


@pytest.fixture(scope="session")
def dot_provider(
    oidc_provider: TestProvider, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[DotProvider]:
    port = free_port()
    ports = oidc_provider.ports  # porter's ports of the tests: its callbacks are registered
    a, b = (f"http://127.0.0.1:{p}" for p in ports)
    issuer = f"http://127.0.0.1:{port}/o"
    directory = tmp_path_factory.mktemp("dot")
    client = {
        "name": "OMERO porter",
        "client_id": "porter",
        "client_secret": SECRET,
        "client_type": "confidential",
        "authorization_grant_type": "authorization-code",
        "redirect_uris": " ".join(f"{o}/porter/oidc/idp/callback" for o in (a, b)),
        "post_logout_redirect_uris": " ".join(
            url
            for o in (a, b)
            for url in (f"{o}/porter/login?logged_out=1", f"{o}/porter/oidc/idp/relogin")
        ),
        "algorithm": "RS256",
        "skip_authorization": True,
    }
    control = secrets.token_urlsafe(16)
    config = {
        "issuer": issuer,
        "port": port,
        "directory": str(directory),
        "key": pem(new_rsa_key()).decode(),
        "accounts": {k: v for k, v in ACCOUNTS.items()},
        "clients": [client],
        "control": control,
    }
    log_path = directory / "provider.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "tests.dot_provider.server"],
            cwd=ROOT,
            env={**os.environ, "DOT_CONFIG": json.dumps(config)},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    provider = DotProvider(issuer, ports, control, log_path, process)
    try:
        deadline = time.monotonic() + 60
        while "listening" not in provider.log():
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"django-oauth-toolkit did not start:\n{provider.log()}")
            time.sleep(0.1)
        yield provider
    finally:
        stop_process(process)
