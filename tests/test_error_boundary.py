"""One row of the error table each (proxy/middleware/errors.py), through real porter requests:
real Redis (stopped mid-request), the OMERO test server, the echo upstream as OMERO.web."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from auth.omero_backend import OmeroBackend
from auth.public_settings import PublicSessionSettings
from filters.settings import PublicRuleSettings
from proxy.keys import SESSION_STORE
from proxy.middleware.errors import ANSWERS
from proxy.settings import LoginSettings
from tests.omero_sim.fixture import OmeroSim
from tests.porter_fixtures import PorterFactory, Upstream
from tests.redis_fixture import RedisServer, redis_sessions, stopped
from tests.session_fixtures import logged_in_as_alice, omero
from tests.test_error_mail import add_boom

Client = TestClient[Any, Any]


async def _mid_request(
    client: Client, upstream: Upstream, redis: RedisServer, path: str, **get: Any
) -> Any:
    """GET `path` (a slow upstream route) and stop Redis while OMERO.web is answering."""
    upstream.state.slow_started.clear()
    request = asyncio.create_task(client.get(path, allow_redirects=False, **get))
    await asyncio.wait_for(upstream.state.slow_started.wait(), 10)
    with stopped(redis):
        resp = await request
        return resp.status, await resp.text(), resp.headers


def test_the_table_has_one_row_per_failure_in_order() -> None:
    names = [kind.__name__ for kind, _ in ANSWERS]
    assert names == [
        "SessionStoreUnavailable",
        "SessionGone",
        "HandoffFailed",
        "ServerUnavailable",
        "OmeroError",
        "SsoError",
        "Refused",
        "Overloaded",
    ]


# ~ SessionStoreUnavailable -> 503: the three places that answered 500 and mailed the admins


async def test_store_stopped_while_capturing_a_new_omero_web_cookie_is_503(
    redis_server_factory: Callable[[], RedisServer],
    echo_upstream: Upstream,
    porter: PorterFactory,
    omero_sim: OmeroSim,
    omero_backend: OmeroBackend,
) -> None:
    redis = redis_server_factory()
    client, _ = await logged_in_as_alice(
        porter, omero_sim, omero_backend, session=redis_sessions(redis)
    )
    status, body, headers = await _mid_request(client, echo_upstream, redis, "/slow-cookie/0.3")
    assert status == 503
    assert "session store" in body.lower()
    assert "rotated-by-omero-web" not in str(headers)  # the held cookie never reaches anyone
    assert (await client.get("/echo")).status == 200  # Redis back: still logged in


async def test_store_stopped_while_renewing_omero_webs_session_is_503(
    redis_server_factory: Callable[[], RedisServer],
    echo_upstream: Upstream,
    porter: PorterFactory,
    omero_sim: OmeroSim,
    omero_backend: OmeroBackend,
) -> None:
    redis = redis_server_factory()
    client, _ = await logged_in_as_alice(
        porter,
        omero_sim,
        omero_backend,
        proxy={"upstream_connections": 1},  # one pooled connection: a leak would hang below
        session=redis_sessions(redis),
    )
    status, body, _ = await _mid_request(client, echo_upstream, redis, "/slow-logged-out/0.3")
    assert status == 503
    assert "session store" in body.lower()
    # OMERO.web's first answer was released when the renewal failed: the pool is free
    resp = await asyncio.wait_for(client.get("/echo"), 10)
    assert resp.status == 200


async def test_store_stopped_before_the_public_session_exists_is_503(
    redis_server_factory: Callable[[], RedisServer],
    echo_upstream: Upstream,
    porter: PorterFactory,
    omero_sim: OmeroSim,
) -> None:
    redis = redis_server_factory()
    sections = {
        "omero": omero(omero_sim),
        "session": redis_sessions(redis),
        "public": PublicRuleSettings(enabled=True, url_filter="^/echo/.*"),
        "public_session": PublicSessionSettings(
            enabled=True, user="public", password=omero_sim.users["public"]
        ),
    }
    client = await porter(logged_in=False, sections=sections)
    with stopped(redis):
        resp = await client.get("/echo/public")
        assert resp.status == 503
        assert "session store" in (await resp.text()).lower()
    assert (await client.get("/echo/public")).status == 200  # and it recovers by itself


# ~ SessionGone, HandoffFailed, ServerUnavailable, OmeroError: while renewing OMERO.web's session


async def test_omero_session_gone_means_log_in_again_with_the_cookie_cleared(
    echo_upstream: Upstream, porter: PorterFactory, omero_sim: OmeroSim, omero_backend: OmeroBackend
) -> None:
    client, key = await logged_in_as_alice(porter, omero_sim, omero_backend)
    assert omero_sim.kill_session(key)
    resp = await client.get("/slow-logged-out/0", allow_redirects=False)
    assert resp.status == 302
    assert resp.headers["Location"].startswith("/porter/login?url=")
    assert resp.cookies["porter_session"].value == ""  # cleared
    ajax = await client.get("/echo", headers={"X-Requested-With": "XMLHttpRequest"})
    assert ajax.status == 403  # the porter session ended with it


async def test_omero_web_refusing_the_renewal_handoff_is_502(
    echo_upstream: Upstream, porter: PorterFactory, omero_sim: OmeroSim, omero_backend: OmeroBackend
) -> None:
    client, _ = await logged_in_as_alice(
        porter, omero_sim, omero_backend, login=LoginSettings(handoff_path="/status/404")
    )
    resp = await client.get("/slow-logged-out/0", allow_redirects=False)
    assert resp.status == 502


async def test_omero_server_down_while_renewing_is_503(
    echo_upstream: Upstream, porter: PorterFactory, omero_sim: OmeroSim, omero_backend: OmeroBackend
) -> None:
    client, _ = await logged_in_as_alice(porter, omero_sim, omero_backend)
    omero_sim.down()
    try:
        resp = await client.get("/slow-logged-out/0", allow_redirects=False)
        assert resp.status == 503
        assert "OMERO server" in await resp.text()
    finally:
        omero_sim.up()


async def test_any_other_omero_failure_while_renewing_is_502(
    echo_upstream: Upstream, porter: PorterFactory, omero_sim: OmeroSim
) -> None:
    client = await porter(logged_in=False, sections={"omero": omero(omero_sim)})
    record = await client.app[SESSION_STORE].create(
        server_id=7,  # no such server_list entry any more: UnknownServer, an OmeroError
        omero_session_key="k" * 36,
        user_id=2,
        user_name="alice",
        cookies={"sessionid": "held"},
    )
    client.session.cookie_jar.update_cookies({"porter_session": record.id})
    resp = await client.get("/slow-logged-out/0", allow_redirects=False)
    assert resp.status == 502


# ~ SsoError, Refused, HTTPException, anything else


async def test_a_bad_bearer_token_is_its_own_401(
    echo_upstream: Upstream, porter: PorterFactory, omero_sim: OmeroSim, tmp_path: Any
) -> None:
    from tests.test_sso import Idp, sso_sections

    client = await porter(logged_in=False, sections=sso_sections(omero_sim, Idp(tmp_path)))
    resp = await client.get("/echo", headers={"Authorization": "Bearer not.a.jwt"})
    assert resp.status == 401
    assert resp.headers["WWW-Authenticate"].startswith('Bearer error="invalid_token"')


async def test_public_access_that_cannot_log_in_is_refused_with_503(
    echo_upstream: Upstream, porter: PorterFactory, omero_sim: OmeroSim
) -> None:
    sections = {
        "omero": omero(omero_sim),
        "public": PublicRuleSettings(enabled=True, url_filter="^/echo/.*"),
        "public_session": PublicSessionSettings(enabled=True, user="public", password="wrong"),
    }
    client = await porter(logged_in=False, sections=sections)
    resp = await client.get("/echo/public")
    assert resp.status == 503
    assert "Public access is unavailable" in await resp.text()


async def test_unknown_porter_page_is_porters_404(
    echo_upstream: Upstream, porter: PorterFactory
) -> None:
    client = await porter()
    resp = await client.get("/porter/no-such-page", headers={"Accept": "application/json"})
    assert resp.status == 404
    assert (await resp.json())["status"] == 404


async def test_anything_unexpected_is_a_500_page(
    echo_upstream: Upstream, porter: PorterFactory, caplog: pytest.LogCaptureFixture
) -> None:
    client = await porter(configure=add_boom)
    resp = await client.get("/test-only/boom", headers={"Accept": "application/json"})
    assert resp.status == 500
    assert "Boom" not in await resp.text()  # never the traceback to a JSON client
    assert "porter broke while handling the request" in caplog.text  # but in the log
