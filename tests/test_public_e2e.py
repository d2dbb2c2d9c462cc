"""200 anonymous requests: through porter, one OMERO session; OMERO.web's own public user
makes one per request (the figure DESIGN.md quotes). Real OMERO.web, the OMERO test server."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import aiohttp

from auth.public_settings import PublicSessionSettings
from filters.settings import PublicRuleSettings
from tests.gateway_fixtures import GatewayFactory
from tests.omero_sim.fixture import OmeroSim
from tests.web_fixture import OmeroWeb

REQUESTS = 200
PATH = "/webclient/keepalive_ping/"


async def anonymous_gets(url: str, count: int) -> list[str]:
    """`count` GETs, each without any cookie, as crawlers and first-time visitors send them."""
    bodies = []
    async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as session:
        for _ in range(count):
            async with session.get(url) as resp:
                assert resp.status == 200
                bodies.append(await resp.text())
    return bodies


async def test_anonymous_requests_make_one_omero_session_through_porter_and_one_each_without(
    gateway: GatewayFactory,
    omero_web_factory: Callable[..., OmeroWeb],
    omero_sim: OmeroSim,
) -> None:
    sections: dict[str, Any] = {
        "public": PublicRuleSettings(enabled=True, url_filter=f"^{PATH}"),
        "public_session": PublicSessionSettings(
            enabled=True, user="public", password=omero_sim.users["public"]
        ),
    }
    client = await gateway(sections=sections)
    before = omero_sim.stats()["sessions_created"]
    bodies = await anonymous_gets(str(client.make_url(PATH)), REQUESTS)
    through_porter = omero_sim.stats()["sessions_created"] - before
    assert set(bodies) == {"OK"}  # served as the public user, not "Connection Failed"

    builtin = omero_web_factory(public_user=True)
    before = omero_sim.stats()["sessions_created"]
    bodies = await anonymous_gets(builtin.url(PATH), REQUESTS)
    straight = omero_sim.stats()["sessions_created"] - before
    assert set(bodies) == {"OK"}

    print(
        f"\n{REQUESTS} cookieless anonymous requests: {through_porter} OMERO session(s) through "
        f"porter, {straight} straight to OMERO.web's built-in public user"
    )
    assert through_porter == 1
    assert straight == REQUESTS
