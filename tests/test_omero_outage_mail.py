"""An OMERO server outage mails the admins twice: once when porter first finds the server
unreachable, once when it answers again, with the outage's length and the number of
requests porter answered 503 meanwhile. Porter in front of the echo upstream, the OMERO test
server taken down and up, a real SMTP server."""

from __future__ import annotations

import asyncio
import re
from typing import Any

from aiohttp import ClientSession, DummyCookieJar

from auth.public_settings import PublicSessionSettings
from tests.omero_sim.fixture import OmeroSim
from tests.porter_fixtures import PorterFactory
from tests.session_fixtures import public_sections
from tests.smtp_fixture import SmtpServer, settings_for


async def anonymous(client: Any, path: str) -> int:
    async with (
        ClientSession(cookie_jar=DummyCookieJar()) as session,
        session.get(client.make_url(path), allow_redirects=False) as resp,
    ):
        return resp.status


async def test_an_omero_outage_mails_once_down_and_once_back_with_its_503s(
    porter: PorterFactory, omero_sim: OmeroSim, smtp_server: SmtpServer
) -> None:
    sections = public_sections(omero_sim)
    sections["public_session"] = PublicSessionSettings(
        enabled=True, user="public", password=omero_sim.users["public"], failure_backoff=0.0
    )
    sections["mail"] = settings_for(smtp_server, unavailable_window=300.0)
    client = await porter(sections=sections, logged_in=False)
    omero_sim.down()
    try:
        statuses = [await anonymous(client, f"/public/{n}") for n in range(12)]
    finally:
        omero_sim.up()
    assert statuses == [503] * 12
    [down] = await smtp_server.inbox.wait_for(1)
    assert "OMERO server unreachable: server 1" in down.message["Subject"]
    assert "cannot reach OMERO server 1" in down.text
    assert await anonymous(client, "/public/after") == 200  # reached again
    received = await smtp_server.inbox.wait_for(2)
    back = received[1]
    assert "OMERO server back: server 1" in back.message["Subject"]
    found = re.search(r"Requests answered 503 meanwhile: (\d+)", back.text)
    assert found is not None
    assert int(found.group(1)) == 12
    assert re.search(r"answers again after \d+ s", back.text)
    await asyncio.sleep(0.3)
    assert len(smtp_server.inbox.messages) == 2  # not one mail per 503


async def log_in(client: Any, sim: OmeroSim) -> int:
    client.session.cookie_jar.clear()  # a new browser each time
    page = await (await client.get("/porter/login")).text()
    token = page.split('name="csrf_token" value="', 1)[1].split('"', 1)[0]
    form = {"csrf_token": token, "username": "alice", "password": sim.users["alice"]}
    return int((await client.post("/porter/login", data=form, allow_redirects=False)).status)


async def test_a_flapping_server_gets_one_mail_each_way_then_a_digest(
    porter: PorterFactory, omero_sim: OmeroSim, smtp_server: SmtpServer
) -> None:
    sections = public_sections(omero_sim)
    sections["mail"] = settings_for(smtp_server, unavailable_window=300.0)
    client = await porter(sections=sections, logged_in=False)
    for _ in range(3):  # logins find the server gone, then back, three times
        omero_sim.down()
        try:
            assert await log_in(client, omero_sim) == 503
        finally:
            omero_sim.up()
        assert await log_in(client, omero_sim) == 303
    received = await smtp_server.inbox.wait_for(2)
    await asyncio.sleep(0.3)
    assert len(smtp_server.inbox.messages) == 2  # the repeats wait for the window's digest
    assert "Requests answered 503 meanwhile: 1" in received[1].text  # the login's 503
