"""Porter in front of the echo upstream with a real OMERO login behind its session: the OMERO
test server holds the session that renewals join and hand over again."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from auth.omero_backend import OmeroBackend
from auth.omero_settings import OmeroSettings
from auth.public_settings import PublicSessionSettings
from filters.settings import PublicRuleSettings
from proxy.keys import SESSION_STORE
from tests.omero_sim.fixture import OmeroSim
from tests.porter_fixtures import PorterFactory

Client = TestClient[Any, Any]


def public_sections(sim: OmeroSim, url_filter: str = "^/public/.*") -> dict[str, Any]:
    """[omero] on the test server and [public] on, with the public user: anonymous requests
    to `url_filter` paths run on the one shared public session."""
    return {
        "omero": omero(sim),
        "public": PublicRuleSettings(enabled=True, url_filter=url_filter),
        "public_session": PublicSessionSettings(
            enabled=True, user="public", password=sim.users["public"]
        ),
    }


def omero(sim: OmeroSim) -> OmeroSettings:
    entry = sim.server_list_entry()
    return OmeroSettings(server_list=((entry[0], entry[1], entry[2]),), call_timeout=3.0)


@pytest.fixture
async def omero_backend(omero_sim: OmeroSim) -> AsyncIterator[OmeroBackend]:
    async with OmeroBackend(omero(omero_sim)) as made:
        yield made


async def logged_in_as_alice(
    porter: PorterFactory,
    sim: OmeroSim,
    backend: OmeroBackend,
    proxy: dict[str, Any] | None = None,
    **sections: Any,
) -> tuple[Client, str]:
    """A porter client holding the session of a real OMERO login of alice (its key)."""
    client = await porter(
        logged_in=False, sections={"omero": omero(sim), **sections}, **(proxy or {})
    )
    login = await backend.login(1, "alice", sim.users["alice"])
    record = await client.app[SESSION_STORE].create(
        server_id=1,
        omero_session_key=login.session_key,
        user_id=login.user_id,
        user_name="alice",
        cookies={"sessionid": "held-by-porter"},
    )
    client.session.cookie_jar.update_cookies({"porter_session": record.id})
    return client, login.session_key
