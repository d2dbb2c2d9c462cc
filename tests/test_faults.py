"""The fault suite: each fault, short, with real parts (the OMERO test server over Ice, real
OMERO.web, real Redis and SMTP, porter as a real process where signals matter). Each test
asserts the exact answers during the fault and normal answers after it, with nobody
restarting porter."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp

from auth.public_settings import PublicSessionSettings
from filters.settings import PublicRuleSettings
from tests.gateway_fixtures import Gateway, GatewayFactory, log_in
from tests.omero_sim.fixture import OmeroSim

PING = "/webclient/keepalive_ping/"


def public(sim: OmeroSim) -> dict[str, Any]:
    return {
        "public": PublicRuleSettings(
            enabled=True, url_filter=r"^/(webgateway/.*|webclient/keepalive_ping/)"
        ),
        "public_session": PublicSessionSettings(
            enabled=True, user="public", password=sim.users["public"], failure_backoff=0.0
        ),
    }


async def anonymous(client: Gateway, path: str = PING) -> tuple[int, str]:
    async with (
        aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as session,
        session.get(client.make_url(path), allow_redirects=False) as resp,
    ):
        return resp.status, await resp.text()


async def user_ping(client: Gateway) -> tuple[int, str]:
    resp = await client.get(PING, allow_redirects=False)
    return resp.status, await resp.text()


async def test_omero_down_then_up_the_next_request_of_a_user_and_of_the_public_works(
    gateway: GatewayFactory, omero_sim: OmeroSim
) -> None:
    client = await gateway(sections=public(omero_sim))
    assert (await log_in(client, "alice", omero_sim.users["alice"])).status == 303
    assert await user_ping(client) == (200, "OK")
    assert await anonymous(client) == (200, "OK")

    omero_sim.down()
    try:
        # OMERO.web cannot join: it drops the connector and answers "Connection Failed";
        # porter renews, cannot reach OMERO either, and says so
        status, _ = await user_ping(client)
        assert status == 503
        status, _ = await anonymous(client)
        assert status == 503
    finally:
        omero_sim.up()

    # the very next request of each gets the real answer again
    assert await user_ping(client) == (200, "OK")
    assert await anonymous(client) == (200, "OK")


async def test_a_killed_public_session_is_renewed_by_the_first_request_once(
    gateway: GatewayFactory, omero_sim: OmeroSim
) -> None:
    client = await gateway(sections=public(omero_sim))
    assert await anonymous(client) == (200, "OK")
    [old] = [s["key"] for s in omero_sim.sessions() if s["user"] == "public"]
    logins = omero_sim.stats()["logins"]
    assert omero_sim.kill_session(old)

    answers = await asyncio.gather(*(anonymous(client) for _ in range(20)))
    assert set(answers) == {(200, "OK")}  # no visitor sees OMERO.web's failure
    assert omero_sim.stats()["logins"] - logins == 1  # one new public session, single-flight
    assert [s["user"] for s in omero_sim.sessions()].count("public") == 1
