"""Anonymous access through the running gateway: the bypass corpus on the wire, one shared
public session, CORS."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import Any

import pytest
from yarl import URL

from auth.omero_settings import OmeroSettings
from auth.public_settings import PublicSessionSettings
from filters.settings import CorsSettings
from tests.bypass_corpus import CASES, CORPUS_RULES, Case
from tests.omero_sim.fixture import OmeroSim
from tests.porter_fixtures import PorterFactory, Upstream


def public_sections(sim: OmeroSim, **rules: Any) -> dict[str, Any]:
    entry = sim.server_list_entry()
    return {
        "omero": OmeroSettings(server_list=((entry[0], entry[1], entry[2]),)),
        "public": CORPUS_RULES if not rules else CORPUS_RULES.__class__(**rules),
        "public_session": PublicSessionSettings(
            enabled=True, user="public", password=sim.users["public"]
        ),
    }


async def raw_request(host: str, port: int, method: str, target: str) -> tuple[int, str]:
    """Send the request line exactly as written (an HTTP client would normalise it)."""
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(
        f"{method} {target} HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: close\r\n\r\n".encode()
    )
    await writer.drain()
    data = await reader.read()
    writer.close()
    await writer.wait_closed()
    head = data.split(b"\r\n\r\n", 1)[0].decode("latin-1")
    status = int(head.split(" ", 2)[1])
    return status, head


@pytest.mark.parametrize("case", CASES, ids=[c.note + " " + c.target[:50] for c in CASES])
async def test_bypass_corpus_on_the_wire(
    case: Case, omero_sim: OmeroSim, echo_upstream: Upstream, porter: PorterFactory
) -> None:
    client = await porter(logged_in=False, sections=public_sections(omero_sim))
    seen = len(echo_upstream.state.received)
    port = client.server.port
    assert port is not None
    status, head = await raw_request(client.server.host, port, case.method, case.target)
    forwarded = [
        r.raw_path for r in echo_upstream.state.received[seen:] if "bsession" not in r.raw_path
    ]
    if case.kind == "public":
        # A fragment is no part of the query: aiohttp drops it, so it is never forwarded.
        query = case.target.partition("?")[2].partition("#")[0]
        expected = case.forwarded + (f"?{query}" if query else "") if case.forwarded else None
        assert forwarded == [expected], head
        assert status == 200, head
    elif case.kind == "bad_request":
        assert (status, forwarded) == (400, []), head
    else:  # login or deny: an anonymous caller is asked to log in, nothing is forwarded
        assert forwarded == []
        if status == 400:  # aiohttp's own parser refused the request line (e.g. "get")
            assert "text/plain" in head
        elif case.target.startswith(("/porter/", "/api/v0/login/")):
            assert status in (200, 405), head  # porter's own page answers it
        else:
            assert status in (302, 303), head
            assert "Location: /porter/login" in head


async def test_anonymous_traffic_shares_one_omero_session_and_leaves_no_state(
    omero_sim: OmeroSim, echo_upstream: Upstream, porter: PorterFactory
) -> None:
    sections = public_sections(omero_sim)
    # 300 decisions at once on a loaded machine: give the deny rules' matching room, so a
    # timeout (fail closed: log in) is not what this test sees
    sections["public"] = replace(sections["public"], match_timeout=2.0)
    client = await porter(logged_in=False, sections=sections)

    async def one(i: int) -> tuple[int, dict[str, str]]:
        async with client.get(f"/webgateway/render_image/{i}/0/0/", allow_redirects=False) as resp:
            await resp.read()
            return resp.status, dict(resp.headers)

    results = await asyncio.gather(*(one(i) for i in range(300)))
    assert {status for status, _ in results} == {200}
    assert all("Set-Cookie" not in headers for _, headers in results), [
        headers["Set-Cookie"] for _, headers in results if "Set-Cookie" in headers
    ][:3]
    assert omero_sim.stats()["logins"] == 1  # single-flight: 300 first requests, one login
    handoffs = [r for r in echo_upstream.state.received if "bsession" in r.raw_path]
    assert len(handoffs) == 1
    cookies = {r.headers.get("Cookie") for r in echo_upstream.state.received if r not in handoffs}
    assert len(cookies) == 1  # every forwarded request carried the one public OMERO.web session
    assert len(client.session.cookie_jar) == 0


async def test_public_session_is_recreated_after_omero_drops_it(
    omero_sim: OmeroSim, echo_upstream: Upstream, porter: PorterFactory
) -> None:
    from proxy.keys import PUBLIC

    client = await porter(logged_in=False, sections=public_sections(omero_sim))
    assert (await client.get("/webgateway/render_image/1/0/0/")).status == 200
    login = await client.app[PUBLIC].get()
    assert omero_sim.kill_session(login.session_key)
    await client.app[PUBLIC].keep_alive()  # the keepalive job notices, as every ping_interval
    assert (await client.get("/webgateway/render_image/1/0/0/")).status == 200
    assert omero_sim.stats()["logins"] == 2
    assert (await client.app[PUBLIC].get()).session_key != login.session_key


async def test_logged_in_user_on_a_public_path_stays_themselves(
    omero_sim: OmeroSim, echo_upstream: Upstream, porter: PorterFactory
) -> None:
    client = await porter(sections=public_sections(omero_sim))  # logged in as alice
    resp = await client.get("/webgateway/render_image/1/0/0/")
    assert resp.status == 200
    assert (
        "sessionid=upstream-session-of-alice" in echo_upstream.state.received[-1].headers["Cookie"]
    )
    assert resp.headers["Cache-Control"] == "private"
    assert omero_sim.stats()["logins"] == 0  # no public session was needed


async def test_stale_cookie_on_a_public_path_is_cleared_and_served_as_public(
    omero_sim: OmeroSim, echo_upstream: Upstream, porter: PorterFactory
) -> None:
    client = await porter(logged_in=False, sections=public_sections(omero_sim))
    resp = await client.get(
        "/webgateway/render_image/1/0/0/",
        headers={"Cookie": "porter_session=" + "A" * 43},
    )
    assert resp.status == 200
    assert 'porter_session=""' in resp.headers["Set-Cookie"]
    assert "Cache-Control" not in resp.headers  # a public answer may be cached


async def test_anonymous_post_on_a_public_path_is_refused(
    omero_sim: OmeroSim, echo_upstream: Upstream, porter: PorterFactory
) -> None:
    client = await porter(logged_in=False, sections=public_sections(omero_sim))
    ajax = await client.post(
        "/webgateway/render_image/1/0/0/", headers={"X-Requested-With": "XMLHttpRequest"}
    )
    assert ajax.status == 403
    browser = await client.post("/webgateway/render_image/1/0/0/", allow_redirects=False)
    assert browser.status == 302
    assert browser.headers["Location"] == "/porter/login"
    assert echo_upstream.state.received == []


async def test_cors_preflight_is_answered_by_porter_and_headers_follow_every_answer(
    omero_sim: OmeroSim, echo_upstream: Upstream, porter: PorterFactory
) -> None:
    sections = public_sections(omero_sim)
    sections["cors"] = CorsSettings(cors_origin_whitelist=("https://viewer.example",))
    client = await porter(logged_in=False, sections=sections)
    good = "https://viewer.example"
    preflight = await client.options(
        "/webclient/anything/",
        headers={"Origin": good, "Access-Control-Request-Method": "POST"},
    )
    assert preflight.status == 204
    assert preflight.headers["Access-Control-Allow-Origin"] == good
    assert preflight.headers["Access-Control-Allow-Credentials"] == "true"
    assert "Origin" in preflight.headers["Vary"]
    assert echo_upstream.state.received == []  # no upstream, no login
    refused = await client.options(
        "/webclient/anything/",
        headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"},
    )
    assert refused.status == 403
    assert "Access-Control-Allow-Origin" not in refused.headers
    for path, status in (
        ("/webgateway/render_image/1/0/0/", 200),
        ("/webclient/private/", 302),
        ("/webclient/%2e%2e/x", 400),
    ):
        url = URL(path, encoded=True)
        resp = await client.get(url, headers={"Origin": good}, allow_redirects=False)
        assert resp.status == status
        assert resp.headers["Access-Control-Allow-Origin"] == good
        assert resp.headers["Access-Control-Allow-Origin"] != "*"
        other = await client.get(
            url, headers={"Origin": "https://evil.example"}, allow_redirects=False
        )
        assert "Access-Control-Allow-Origin" not in other.headers


async def test_public_access_off_means_nothing_is_public(
    omero_sim: OmeroSim, echo_upstream: Upstream, porter: PorterFactory
) -> None:
    client = await porter(logged_in=False)
    resp = await client.get("/webgateway/render_image/1/0/0/", allow_redirects=False)
    assert resp.status == 302
    assert echo_upstream.state.received == []


async def test_public_post_is_never_sent_twice_when_the_session_is_renewed(
    omero_sim: OmeroSim, echo_upstream: Upstream, porter: PorterFactory
) -> None:
    # /status/403 answers 403 and the echo's keepalive_ping never says "OK": to porter,
    # OMERO.web no longer knows the public session, so porter renews it. The POST's body was
    # streamed already: it must not be sent again (only idempotent requests are retried).
    sections = public_sections(omero_sim, enabled=True, url_filter="^/status/.*", get_only=False)
    client = await porter(logged_in=False, sections=sections)
    resp = await client.post("/status/403", data=b"payload-once")
    assert resp.status == 403
    posts = [r for r in echo_upstream.state.received if r.method == "POST"]
    assert [(p.raw_path, p.body_size) for p in posts] == [("/status/403", len(b"payload-once"))]
    assert omero_sim.stats()["logins"] == 2  # the public session was renewed once
    get = await client.get("/status/403")
    assert get.status == 403
    gets = [r for r in echo_upstream.state.received if r.raw_path == "/status/403"]
    assert [r.method for r in gets] == ["POST", "GET", "GET"]  # a GET is retried once
