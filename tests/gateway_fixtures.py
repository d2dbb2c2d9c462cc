"""Porter in front of the real OMERO.web, both pointed at the OMERO test server."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from auth.omero_settings import OmeroSettings
from auth.session_settings import SessionSettings
from proxy.app import create_app
from proxy.settings import LoginSettings, ProxySettings, Settings
from tests.omero_sim.fixture import OmeroSim
from tests.web_fixture import OmeroWeb

Gateway = TestClient[web.Request, web.Application]
GatewayFactory = Callable[..., Awaitable[Gateway]]


def gateway_settings(
    sim: OmeroSim, web_: OmeroWeb, *, sections: dict[str, Any] | None = None, **proxy: Any
) -> Settings:
    entry = sim.server_list_entry()
    values: dict[str, Any] = {
        "proxy": ProxySettings(upstream=web_.base_url, **proxy),
        "omero": OmeroSettings(server_list=((entry[0], entry[1], entry[2]),), call_timeout=5.0),
        "session": SessionSettings(),
        "login": LoginSettings(),
    }
    values.update(sections or {})
    return Settings(**values)


@pytest.fixture
def gateway(
    omero_web: OmeroWeb,
    omero_sim: OmeroSim,
    aiohttp_client: Callable[..., Awaitable[TestClient[Any, Any]]],
) -> GatewayFactory:
    """gateway(**proxy_settings, sections={...}) -> a client of porter in front of OMERO.web."""

    async def make(*, sections: dict[str, Any] | None = None, **proxy: Any) -> Gateway:
        settings = gateway_settings(omero_sim, omero_web, sections=sections, **proxy)
        client: Gateway = await aiohttp_client(create_app(settings))
        return client

    return make


async def cookieless_get(client: Gateway, path: str) -> tuple[int, str]:
    """GET `path` as a new visitor or a crawler would: no cookie, redirects not followed."""
    async with (
        aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as session,
        session.get(client.make_url(path), allow_redirects=False) as resp,
    ):
        return resp.status, await resp.text()


def form_token(page: str) -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert found is not None, "the page has no CSRF token"
    return found.group(1)


async def log_in(client: Gateway, user: str, password: str, url: str | None = None) -> Any:
    """Log in through porter's form as a browser would; the POST's response."""
    page = await (await client.get("/porter/login")).text()
    data = {"csrf_token": form_token(page), "username": user, "password": password}
    if url is not None:
        data["url"] = url
    return await client.post("/porter/login", data=data, allow_redirects=False)
