"""One row of the error table each (proxy/middleware/boundary.py, found by the MRO), through
real porter requests: real Redis (stopped mid-request), the OMERO test server, the echo
upstream as OMERO.web."""

from __future__ import annotations

import asyncio
import importlib
import pkgutil
from collections.abc import Callable
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from auth.jwks import JwksUnavailable, KeyLoadError
from auth.jwt_verify import SsoError
from auth.oidc import OidcError
from auth.omero_backend import OmeroBackend
from auth.omero_errors import (
    HandoffFailed,
    OmeroError,
    OtherOmeroError,
    ServerUnavailable,
    SessionGone,
    UnknownServer,
)
from auth.public_settings import PublicSessionSettings
from auth.session_store import SessionStoreUnavailable
from auth.sso_identity import IdentityRefused
from filters.canonical import BadPath
from filters.regex_guard import MatchTimeout
from filters.settings import PublicRuleSettings
from porter_errors import Internal, PorterError, Refused, SessionEnded, Unavailable
from proxy.admission import Overloaded
from proxy.config import ConfigError
from proxy.keys import SESSION_STORE
from proxy.middleware.boundary import ANSWERS, row_for
from proxy.pages.login import LoginFailed
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


PACKAGES = ("auth", "cache", "filters", "mailer", "metrics", "proxy")


def _porter_exceptions() -> list[type[BaseException]]:
    """Every exception class defined in porter's own modules (all of them imported)."""
    names = ["porter_errors", "run"]
    for package in PACKAGES:
        root = importlib.import_module(package)
        names += [m.name for m in pkgutil.walk_packages(root.__path__, package + ".")]
    found = []
    for name in names:
        module = importlib.import_module(name)
        for value in vars(module).values():
            if (
                isinstance(value, type)
                and issubclass(value, BaseException)
                and value.__module__ == name
            ):
                found.append(value)
    return found


def test_every_exception_porter_defines_is_in_the_tree_and_has_a_row() -> None:
    found = _porter_exceptions()
    assert len(found) > 30  # the walk saw the modules (a broken walk would pass vacuously)
    outside = [c.__qualname__ for c in found if not issubclass(c, PorterError)]
    assert outside == []
    unanswered = [c.__qualname__ for c in found if c is not PorterError and row_for(c) is None]
    assert unanswered == []
    assert row_for(PorterError) is None  # the root itself has no answer: a bug, 500


@pytest.mark.parametrize(
    ("kind", "row"),
    [
        (SessionStoreUnavailable, SessionStoreUnavailable),
        (ServerUnavailable, ServerUnavailable),  # also an OmeroError: the specific row wins
        (SessionGone, SessionEnded),  # also an OmeroError: log in again, not 502
        (OtherOmeroError, OmeroError),
        (UnknownServer, OmeroError),
        (HandoffFailed, HandoffFailed),
        (JwksUnavailable, Unavailable),
        (Overloaded, Overloaded),
        (IdentityRefused, SsoError),
        (OidcError, SsoError),
        (BadPath, Refused),
        (LoginFailed, Refused),
        (KeyLoadError, Internal),
        (ConfigError, Internal),
        (ValueError, None),  # not porter's: a bug
    ],
)
def test_an_exception_is_answered_by_the_first_row_of_its_mro(
    kind: type[Exception], row: type[Exception] | None
) -> None:
    assert row_for(kind) is row
    if row is not None:
        assert row in ANSWERS


def _raise_refused_with_headers(app: web.Application) -> None:
    async def refuse(request: web.Request) -> web.StreamResponse:
        raise Refused(405, "Not here.", {"Allow": "GET"})

    app.router.add_get("/test-only/refuse", refuse)


async def test_a_refusal_is_answered_with_its_status_message_and_headers(
    echo_upstream: Upstream, porter: PorterFactory
) -> None:
    client = await porter(configure=_raise_refused_with_headers)
    resp = await client.get("/test-only/refuse", headers={"Accept": "application/json"})
    assert resp.status == 405
    assert resp.headers["Allow"] == "GET"
    assert "Not here." in await resp.text()


async def test_an_internal_signal_that_escapes_is_a_500_and_logged(
    echo_upstream: Upstream, porter: PorterFactory, caplog: pytest.LogCaptureFixture
) -> None:
    def add(app: web.Application) -> None:
        async def escape(request: web.Request) -> web.StreamResponse:
            raise MatchTimeout("a pattern ran out of time")

        app.router.add_get("/test-only/escape", escape)

    client = await porter(configure=add)
    resp = await client.get("/test-only/escape", headers={"Accept": "application/json"})
    assert resp.status == 500
    assert "MatchTimeout" in caplog.text


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
