"""What provider admins configure beyond the defaults, each against the test provider set up
to require it: client_secret_post, private_key_jwt, authorization parameters, login_hint and
ui_locales from porter's login URL, and claims only the userinfo endpoint tells."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from yarl import URL

from auth.oidc_settings import OidcProviderSettings
from proxy.app import create_app
from proxy.settings import ProxySettings
from tests.gateway_fixtures import Gateway
from tests.keys import new_rsa_key, write_key
from tests.oidc_fixture import CLIENT_KID, REQUIRED_ACR, TestProvider, log_in_at_provider
from tests.omero_sim.fixture import OmeroSim
from tests.porter_fixtures import OPERATOR, OPERATOR_TOKEN
from tests.test_oidc import (
    PING,
    ClientMaker,
    Rogue,
    callback,
    full_login,
    oidc_porter,
    porter_settings,
    refused,
    rogue,
    rogue_callback,
    start_login,
    user_sessions,
)
from tests.web_fixture import OmeroWeb

__all__ = ["oidc_porter", "rogue"]  # fixtures used here


async def test_client_secret_post_is_sent_in_the_form_where_the_provider_requires_it(
    oidc_porter: Callable[..., Awaitable[Gateway]], oidc_provider: TestProvider
) -> None:
    # the provider registered porter-post for client_secret_post: Basic is refused there
    basic = oidc_provider.settings(client="porter-post")
    client = await oidc_porter(oidc_provider.oidc(basic))
    back = await log_in_at_provider(client.session, str(await start_login(client)), "alice")
    assert await refused(client, back, 401, "could not be completed") == "exchange_failed"
    await client.close()  # one porter at a time on the registered port
    post = oidc_provider.settings(client="porter-post", client_auth="client_secret_post")
    client = await oidc_porter(oidc_provider.oidc(post))
    status, location, cookie, _ = await full_login(client, "alice")
    assert (status, location, bool(cookie)) == (303, PING, True)


async def test_private_key_jwt_signs_an_assertion_the_provider_checks(
    oidc_porter: Callable[..., Awaitable[Gateway]],
    oidc_provider: TestProvider,
    omero_sim: OmeroSim,
    tmp_path: Path,
) -> None:
    def jwt_client(key_file: str) -> OidcProviderSettings:
        return oidc_provider.settings(
            client="porter-jwt",
            client_secret=None,
            client_auth="private_key_jwt",
            client_key_file=key_file,
            client_key_id=CLIENT_KID,
        )

    # porter's key, registered at the provider: alice is in, also after the file went away
    # (porter read it at start)
    key_copy = tmp_path / "porter-key.pem"
    key_copy.write_bytes(oidc_provider.client_key_file.read_bytes())
    client = await oidc_porter(oidc_provider.oidc(jwt_client(str(key_copy))))
    key_copy.unlink()
    before = user_sessions(omero_sim, "alice")
    status, location, cookie, _ = await full_login(client, "alice")
    assert (status, location, bool(cookie)) == (303, PING, True)
    assert len(user_sessions(omero_sim, "alice")) == len(before) + 1
    # another key under the same kid: the provider refuses the assertion, nobody logs in
    await client.close()
    other = write_key(tmp_path / "other-key.pem", new_rsa_key())
    client = await oidc_porter(oidc_provider.oidc(jwt_client(other)))
    back = await log_in_at_provider(client.session, str(await start_login(client)), "bob")
    assert await refused(client, back, 401, "could not be completed") == "exchange_failed"


async def test_authorize_params_reach_the_provider_that_requires_them(
    oidc_porter: Callable[..., Awaitable[Gateway]], oidc_provider: TestProvider
) -> None:
    plain = oidc_provider.settings(client="porter-acr")
    client = await oidc_porter(oidc_provider.oidc(plain))
    async with client.session.get(await start_login(client)) as resp:
        assert resp.status == 400  # the provider's own refusal: acr_values missing
        assert "missing acr_values" in await resp.text()
    await client.close()
    asked = oidc_provider.settings(
        client="porter-acr", authorize_params=(("acr_values", REQUIRED_ACR),)
    )
    client = await oidc_porter(oidc_provider.oidc(asked))
    authorization = await start_login(client)
    assert authorization.query["acr_values"] == REQUIRED_ACR
    back = await log_in_at_provider(client.session, str(authorization), "alice")
    status, location, cookie, _ = await callback(client, back)
    assert (status, location, bool(cookie)) == (303, PING, True)


def test_a_configured_parameter_never_overrides_porters_own() -> None:
    from auth.oidc_settings import RESERVED_PARAMS, _check_authorize_params

    for name in RESERVED_PARAMS:
        with pytest.raises(ValueError, match="set by porter itself"):
            _check_authorize_params(((name, "https://evil.example/cb"),))


async def test_login_hint_and_ui_locales_go_on_to_the_provider(
    oidc_porter: Callable[..., Awaitable[Gateway]], oidc_provider: TestProvider
) -> None:
    client = await oidc_porter()
    params = {"url": PING, "login_hint": "alice", "ui_locales": "fr-CH fr"}
    async with client.get("/porter/oidc/idp/login", params=params, allow_redirects=False) as resp:
        authorization = URL(resp.headers["Location"])
    assert authorization.query["login_hint"] == "alice"
    assert authorization.query["ui_locales"] == "fr-CH fr"
    async with client.session.get(authorization) as resp:
        assert 'value="alice"' in await resp.text()  # the provider's form, filled in
    # anything else in porter's login URL stays behind; unprintable or long hints are dropped
    params = {"login_hint": "a\x01b", "ui_locales": "x" * 300, "prompt": "none", "scope": "x"}
    async with client.get("/porter/oidc/idp/login", params=params, allow_redirects=False) as resp:
        query = URL(resp.headers["Location"]).query
    assert "login_hint" not in query
    assert "ui_locales" not in query
    assert "prompt" not in query
    assert query["scope"] == "openid profile email groups"


async def test_groups_only_the_userinfo_endpoint_tells_are_used_when_asked_for(
    oidc_porter: Callable[..., Awaitable[Gateway]],
    oidc_provider: TestProvider,
    omero_sim: OmeroSim,
) -> None:
    # carol's ID token has no groups: without userinfo she lands in her default group (lab)
    for userinfo, group in ((False, "lab"), (True, "other-lab")):
        settings = oidc_provider.settings(userinfo=userinfo)
        client = await oidc_porter(oidc_provider.oidc(settings))
        before = user_sessions(omero_sim, "carol")
        status, _, cookie, _ = await full_login(client, "carol-ui")
        assert (status, bool(cookie)) == (303, True)
        made = [g for k, g in user_sessions(omero_sim, "carol").items() if k not in before]
        assert made == [group], userinfo
        await client.close()


@pytest.mark.parametrize(
    ("answer", "status", "words"),
    [
        ("another sub", 502, "answer was incomplete"),  # OIDC Core 5.3.2: must be the same
        ("not json", 502, "answer was incomplete"),
        ("401", 502, "answer was incomplete"),
        ("500", 503, "not available at the moment"),
        ("no access token", 502, "answer was incomplete"),
    ],
)
async def test_a_userinfo_endpoint_that_fails_or_lies_logs_nobody_in(
    aiohttp_client: ClientMaker,
    rogue: Rogue,
    omero_sim: OmeroSim,
    omero_web: OmeroWeb,
    answer: str,
    status: int,
    words: str,
) -> None:
    async def userinfo(request: web.Request) -> web.StreamResponse:
        assert request.headers["Authorization"] == "Bearer rogue-access-token"
        if answer == "another sub":
            return web.json_response({"sub": "mallory", "groups": ["lab-staff"]})
        if answer in ("401", "500"):
            return web.json_response({"error": "invalid_token"}, status=int(answer))
        return web.Response(text="<html>")

    rogue.userinfo = userinfo
    rogue.access_token = None if answer == "no access token" else "rogue-access-token"
    app = create_app(porter_settings(omero_sim, omero_web, rogue.oidc(userinfo=True)))
    client: Gateway = await aiohttp_client(app)
    before = user_sessions(omero_sim, "alice")
    await refused(client, await rogue_callback(client, rogue), status, words)
    assert user_sessions(omero_sim, "alice") == before


def test_client_authentication_settings_name_what_is_missing(tmp_path: Path) -> None:
    from cryptography.hazmat.primitives.asymmetric import ec

    base: dict[str, Any] = {"id": "idp", "issuer": "https://idp.example", "client_id": "porter"}
    ec_file = write_key(tmp_path / "ec.pem", ec.generate_private_key(ec.SECP256R1()))
    cases: list[tuple[dict[str, Any], str, str]] = [
        ({"client_auth": "private_key_jwt"}, "client_key_file", "is required"),
        (
            {"client_auth": "private_key_jwt", "client_key_file": str(tmp_path / "none.pem")},
            "client_key_file",
            "none.pem",
        ),
        (
            {"client_auth": "private_key_jwt", "client_key_file": ec_file},
            "client_key_alg",
            "RS256 cannot sign with a EC key",
        ),
        ({"client_auth": "client_secret_post"}, "client_secret", "client_secret_post"),
    ]
    for extra, key_name, words in cases:
        problems = OidcProviderSettings(**base, **extra).problems()
        assert [k for k, _ in problems] == [key_name], extra
        assert words in problems[0][1]
    fine: dict[str, Any] = {"client_auth": "private_key_jwt", "client_key_file": ec_file}
    assert OidcProviderSettings(**base, **fine, client_key_alg="ES256").problems() == []


def test_authorize_params_may_be_a_toml_table(tmp_path: Path) -> None:
    from proxy.settings import load_settings

    config = tmp_path / "porter.toml"
    config.write_text(
        """
[proxy]
secret_key = "0123456789abcdef0123456789abcdef"
[[oidc.providers]]
id = "idp"
issuer = "https://idp.example"
client_id = "porter"
authorize_params = { acr_values = "urn:porter:mfa", prompt = "select_account" }
"""
    )
    [provider] = load_settings(config).oidc.providers
    assert provider.authorize_params == (
        ("acr_values", "urn:porter:mfa"),
        ("prompt", "select_account"),
    )
    config.write_text(config.read_text().replace("acr_values", "state"))
    with pytest.raises(Exception, match=r"oidc.providers\[0\].authorize_params.*set by porter"):
        load_settings(config)


# -- providers that cannot send back-channel logout -------------------------------------------


async def test_a_provider_without_back_channel_logout_is_said_at_start_in_readyz_and_check(
    aiohttp_client: ClientMaker,
    rogue: Rogue,
    oidc_provider: TestProvider,
    omero_sim: OmeroSim,
    omero_web: OmeroWeb,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    import run

    caplog.set_level(logging.INFO, "porter")
    # the rogue's discovery says nothing of backchannel_logout_supported
    proxy = ProxySettings(upstream=omero_web.base_url, operator_token=OPERATOR_TOKEN)
    app = create_app(porter_settings(omero_sim, omero_web, rogue.oidc(), proxy=proxy))
    client: Gateway = await aiohttp_client(app)
    await start_login(client)  # the first discovery done
    await start_login(client)
    warned = [r for r in caplog.records if "back-channel logout" in r.getMessage()]
    assert [r.levelname for r in warned] == ["WARNING"]  # once, not per login
    assert "until porter's idle timeout" in warned[0].getMessage()
    async with client.get("/porter/readyz", headers=OPERATOR) as resp:
        ready = await resp.json()
    assert resp.status == 200
    assert ready["checks"]["oidc"] == {"ok": True, "detail": "ok; no back-channel logout from idp"}
    assert ready.get("degraded", []) == []  # a usable provider: said, not counted as down

    def config(issuer: str) -> Path:
        path = tmp_path / "porter.toml"
        path.write_text(
            f'[[oidc.providers]]\nid = "idp"\nissuer = "{issuer}"\nclient_id = "porter"\n'
        )
        return path

    for issuer, warns in ((rogue.issuer, True), (oidc_provider.issuer, False)):
        code = await asyncio.to_thread(run.main, ["check", "--config", str(config(issuer))])
        assert code == 0
        err = capsys.readouterr().err
        assert ("does not support back-channel logout" in err) is warns, err
        assert "oidc.providers[0] (idp)" in err or not warns
    # the rogue has no end_session_endpoint either: check says what that means
    await asyncio.to_thread(run.main, ["check", "--config", str(config(rogue.issuer))])
    assert "no end_session_endpoint" in capsys.readouterr().err


# -- every refusal: a 303 that leaves the provider's code and state behind --------------------

REACHABLE: list[tuple[str, dict[str, Any], int, str]] = [
    # code, how the rogue provider or porter's settings bring it about, status, words
    ("provider_denied", {"error": "access_denied"}, 403, "did not sign you in"),
    ("no_username", {"claims": {"preferred_username": None}}, 403, "did not say who you are"),
    ("bad_username", {"claims": {"preferred_username": " alice"}}, 403, "not usable here"),
    (
        "email_unverified",
        {"claims": {"email": "alice@example.org"}, "provider": {"username_template": "{email}"}},
        403,
        "is not verified",
    ),
    ("not_allowed", {"sso": {"allow_users": ("someone",)}}, 403, "not allowed to sign in"),
    ("denied", {"sso": {"deny_users": ("alice",)}}, 403, "may not sign in"),
    ("admin_account", {"claims": {"preferred_username": "root"}}, 403, "administrators"),
    ("unknown_user", {"claims": {"preferred_username": "mallory"}}, 403, "not known to OMERO"),
    ("web_unavailable", {"web_down": True}, 502, "OMERO.web is not responding"),
    ("wrong_party", {"claims": {"aud": ["porter", "x"], "azp": "x"}}, 401, "not meant for"),
    ("bad_nonce", {"claims": {"nonce": "another"}}, 401, "could not be verified"),
]


@pytest.mark.parametrize(
    ("code", "how", "status", "words"), REACHABLE, ids=[r[0] for r in REACHABLE]
)
async def test_every_refusal_is_a_303_to_the_login_page_with_its_code_alone(
    aiohttp_client: ClientMaker,
    rogue: Rogue,
    omero_sim: OmeroSim,
    omero_web: OmeroWeb,
    code: str,
    how: dict[str, Any],
    status: int,
    words: str,
) -> None:
    from auth.sso_settings import SsoSettings
    from tests.porter_fixtures import free_port

    rogue.claims = dict(how.get("claims", {}))
    rogue.error = how.get("error")
    upstream = f"http://127.0.0.1:{free_port()}" if how.get("web_down") else omero_web.base_url
    settings = porter_settings(
        omero_sim,
        omero_web,
        rogue.oidc(provider=how.get("provider")),
        sso=SsoSettings(**how.get("sso", {})),
        proxy=ProxySettings(upstream=upstream),
    )
    client: Gateway = await aiohttp_client(create_app(settings))
    before = {s["key"] for s in omero_sim.sessions()}
    assert await refused(client, await rogue_callback(client, rogue), status, words) == code
    left = {s["user"] for s in omero_sim.sessions() if s["key"] not in before}
    assert left <= {"root"}  # porter's own admin session aside, nothing left open


def test_every_code_in_the_table_renders_its_own_words_and_status() -> None:
    from proxy.pages.oidc_refusals import REFUSALS, refusal

    assert refusal("no-such-code", "X") is None
    assert refusal(None, "X") is None
    for code, expected in REFUSALS.items():
        found = refusal(code, "Example IdP")
        assert found is not None
        assert found.status == expected.status
        assert "{provider}" not in found.message
        assert found.message == expected.message.replace("{provider}", "Example IdP")
