"""proxy/forwarding/renewal.py: when OMERO.web forgot a held session, renew it once.

The echo upstream stands in for OMERO.web's answers; the OMERO test server holds the real
OMERO session that the renewal joins and hands over again."""

from __future__ import annotations

from auth.omero_backend import OmeroBackend
from tests.omero_sim.fixture import OmeroSim
from tests.porter_fixtures import PorterFactory, Upstream
from tests.session_fixtures import logged_in_as_alice


def paths(upstream: Upstream) -> list[str]:
    return [f"{r.method} {r.raw_path.split('?')[0]}" for r in upstream.state.received]


async def test_a_get_is_renewed_and_sent_again_once(
    echo_upstream: Upstream, porter: PorterFactory, omero_sim: OmeroSim, omero_backend: OmeroBackend
) -> None:
    client, key = await logged_in_as_alice(porter, omero_sim, omero_backend)
    resp = await client.get("/slow-logged-out/0", allow_redirects=False)
    # this OMERO.web keeps answering "logged out": its second answer is passed on, no loop
    assert resp.status == 302
    assert paths(echo_upstream) == [
        "GET /slow-logged-out/0",
        "GET /webclient/keepalive_ping/",  # the handoff of the renewal
        "GET /slow-logged-out/0",
    ]
    assert "bsession=" in echo_upstream.state.received[1].raw_path
    assert omero_sim.session(key) is not None  # the OMERO session was joined, not ended


async def test_a_post_is_never_sent_twice(
    echo_upstream: Upstream, porter: PorterFactory, omero_sim: OmeroSim, omero_backend: OmeroBackend
) -> None:
    client, _ = await logged_in_as_alice(porter, omero_sim, omero_backend)
    resp = await client.post("/slow-logged-out/0", data=b"x" * 100, allow_redirects=False)
    assert resp.status == 302  # OMERO.web's first answer: the body was streamed already
    assert paths(echo_upstream) == ["POST /slow-logged-out/0", "GET /webclient/keepalive_ping/"]


async def test_a_403_makes_porter_ask_omero_web_whether_it_still_knows_the_session(
    echo_upstream: Upstream, porter: PorterFactory, omero_sim: OmeroSim, omero_backend: OmeroBackend
) -> None:
    client, _ = await logged_in_as_alice(porter, omero_sim, omero_backend)
    resp = await client.get("/status/403")
    assert resp.status == 403
    # A 403 may be meant: porter asks keepalive_ping with the held cookies. The echo does not
    # answer "OK" as a logged-in OMERO.web would, so the session is renewed and the GET sent
    # again once; its 403 is then passed on.
    checks = echo_upstream.state.received[1:3]
    assert paths(echo_upstream) == [
        "GET /status/403",
        "GET /webclient/keepalive_ping/",
        "GET /webclient/keepalive_ping/",
        "GET /status/403",
    ]
    assert "bsession=" not in checks[0].raw_path  # the question, with the held cookie
    assert "held-by-porter" in checks[0].headers["Cookie"]
    assert "bsession=" in checks[1].raw_path  # the renewal's handoff
