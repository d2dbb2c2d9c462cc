"""proxy/middleware/cors.py: what every answer gets before its headers go out."""

from __future__ import annotations

from typing import Any

from filters.settings import CorsSettings
from tests.omero_sim.fixture import OmeroSim
from tests.porter_fixtures import PorterFactory, Upstream
from tests.session_fixtures import public_sections


def public(sim: OmeroSim) -> dict[str, Any]:
    origins = ("https://viewer.example.org",)
    return {**public_sections(sim), "cors": CorsSettings(cors_origin_whitelist=origins)}


async def test_a_users_answers_are_private_the_publics_are_left_to_omero_web(
    echo_upstream: Upstream, porter: PorterFactory, omero_sim: OmeroSim
) -> None:
    user = await porter(sections=public(omero_sim))
    assert (await user.get("/public/x")).headers["Cache-Control"] == "private"
    anonymous = await porter(logged_in=False, sections=public(omero_sim))
    resp = await anonymous.get("/public/x")
    assert resp.status == 200
    assert "Cache-Control" not in resp.headers  # OMERO.web sent none


async def test_a_stale_porter_cookie_is_cleared_on_whatever_answer_follows(
    echo_upstream: Upstream, porter: PorterFactory, omero_sim: OmeroSim
) -> None:
    client = await porter(logged_in=False, sections=public(omero_sim))
    stale = {"Cookie": "porter_session=" + "x" * 43}
    for path, status in (("/public/x", 200), ("/private/x", 302)):
        resp = await client.get(path, headers=stale, allow_redirects=False)
        assert resp.status == status
        assert resp.cookies["porter_session"].value == ""
        assert resp.headers.getall("Set-Cookie")[0].count("porter_session=") == 1


async def test_allowed_origins_get_cors_headers_on_errors_too_and_every_answer_names_porter(
    echo_upstream: Upstream, porter: PorterFactory, omero_sim: OmeroSim
) -> None:
    client = await porter(logged_in=False, sections=public(omero_sim))
    origin = {"Origin": "https://viewer.example.org"}
    for path in ("/public/x", "/porter/no-such-page"):
        resp = await client.get(path, headers=origin)
        assert resp.headers["Access-Control-Allow-Origin"] == "https://viewer.example.org"
        assert "Origin" in resp.headers["Vary"]
        assert resp.headers["Server"] == "omero-porter"
    other = await client.get("/public/x", headers={"Origin": "https://evil.example"})
    assert "Access-Control-Allow-Origin" not in other.headers
