"""The cache in front of the real OMERO.web on the OMERO test server: OMERO.web's answers to
the public user are storable as they come (no Set-Cookie, no Cache-Control), one OMERO.web
request serves every later visitor, and restarts of OMERO.web and of the OMERO server are
served through."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from aiohttp import web

from auth.public_settings import PublicSessionSettings
from cache.settings import CacheRule, CacheSettings
from filters.settings import PublicRuleSettings
from proxy.app import create_app
from tests.gateway_fixtures import cookieless_get, gateway_settings
from tests.omero_sim.fixture import OmeroSim
from tests.web_fixture import restart_web, start_web, stop_web, web_config

PATH = "/webclient/keepalive_ping/"


async def test_omero_web_public_answers_are_cached_and_served_through_its_restart(
    omero_sim: OmeroSim, aiohttp_client: Any, tmp_path: Path
) -> None:
    sections: dict[str, Any] = {
        "public": PublicRuleSettings(enabled=True, url_filter=f"^{PATH}"),
        "public_session": PublicSessionSettings(
            enabled=True, user="public", password=omero_sim.users["public"]
        ),
        "cache": CacheSettings(
            enabled=True, rules=(CacheRule(path=PATH, ttl=1.0),), stale_while_revalidate=0.0
        ),
    }
    omero_web = start_web(web_config(omero_sim), tmp_path)
    try:
        app: web.Application = create_app(gateway_settings(omero_sim, omero_web, sections=sections))
        client = await aiohttp_client(app)
        first = await client.get(PATH)
        assert (first.status, await first.text()) == (200, "OK")  # OMERO.web as the public user
        assert first.headers["X-Cache"] == "MISS"  # and its answer was storable as it came
        joins = omero_sim.stats()["joins"]
        for _ in range(20):
            assert await cookieless_get(client, PATH) == (200, "OK")
        assert omero_sim.stats()["joins"] == joins  # 20 visitors: OMERO.web was not asked
        await asyncio.sleep(1.1)  # stale now
        fresh = await client.get(PATH)
        assert fresh.headers["X-Cache"] == "MISS"
        assert omero_sim.stats()["joins"] > joins  # OMERO.web asked again, and joined anew

        await asyncio.sleep(1.1)
        stop_web(omero_web)  # OMERO.web restarts: porter serves what it holds
        for _ in range(5):
            during = await client.get(PATH)
            assert (during.status, await during.text()) == (200, "OK")
            assert during.headers["X-Cache"] == "STALE"
            assert "fwd-status=502" in during.headers["Cache-Status"]
        await asyncio.to_thread(restart_web, omero_web)
        after = await client.get(PATH)
        assert (after.status, after.headers["X-Cache"]) == (200, "MISS")

        await asyncio.sleep(1.1)
        omero_sim.down()  # the OMERO server restarts: OMERO.web cannot join, porter cannot log in
        try:
            for _ in range(5):
                during = await client.get(PATH)
                assert (during.status, await during.text()) == (200, "OK")
                assert during.headers["X-Cache"] == "STALE"
        finally:
            omero_sim.up()
    finally:
        stop_web(omero_web)
