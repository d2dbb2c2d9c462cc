"""The OMERO.web handoff porter relies on, proved against the real OMERO.web 5.33.

An OMERO session created with plain omero-py is joined by OMERO.web through
``?server=<id>&bsession=<key>``; OMERO.web answers with its own ``sessionid`` cookie, and that
cookie alone is then served as the session's user, until the OMERO session ends.
"""

from __future__ import annotations

import http.cookiejar
import urllib.request
from collections.abc import Callable

import omero
import omero.clients
import pytest

from tests.omero_sim.fixture import OmeroSim
from tests.web_fixture import OmeroWeb

PING = "/webclient/keepalive_ping/"
LOGGED_IN, NOT_LOGGED_IN = "OK", "Connection Failed"  # keepalive_ping's two answers


def _detached_session(sim: OmeroSim, user: str) -> str:
    """Log in with plain omero-py and leave the OMERO session open, as porter does."""
    client = omero.client(host=sim.ssl_url)
    try:
        client.createSession(user, sim.users[user])
        client.getSession().detachOnDestroy()
        return str(client.getSessionId())
    finally:
        client.closeSession()


def _browser() -> tuple[urllib.request.OpenerDirector, http.cookiejar.CookieJar]:
    jar = http.cookiejar.CookieJar()
    return urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar)), jar


def _get(opener: urllib.request.OpenerDirector, url: str) -> str:
    with opener.open(url, timeout=30) as response:
        return str(response.read().decode())


def _handoff(web: OmeroWeb, key: str) -> urllib.request.OpenerDirector:
    """Hand the session to OMERO.web; returns a browser holding only OMERO.web's cookie."""
    opener, jar = _browser()
    assert _get(opener, web.url(f"{PING}?server={web.server_id}&bsession={key}")) == LOGGED_IN
    assert {cookie.name for cookie in jar} == {"sessionid"}
    return opener


def test_omero_web_joins_a_bsession_and_serves_its_own_cookie_as_that_user(
    omero_web: OmeroWeb,
    omero_sim: OmeroSim,
) -> None:
    key = _detached_session(omero_sim, "alice")
    browser = _handoff(omero_web, key)
    joins_after_handoff = omero_sim.session(key)["joins"]  # type: ignore[index]

    assert _get(browser, omero_web.url(PING)) == LOGGED_IN  # the cookie alone, no bsession
    session = omero_sim.session(key)
    assert session is not None
    assert session["user"] == "alice"
    assert session["joins"] == joins_after_handoff + 1  # OMERO.web joined alice's session
    assert omero_sim.stats()["sessions_created"] == 1  # and created none of its own
    assert _get(urllib.request.build_opener(), omero_web.url(PING)) == NOT_LOGGED_IN


def test_omero_web_stops_serving_the_cookie_once_the_omero_session_is_killed(
    omero_web: OmeroWeb,
    omero_sim: OmeroSim,
) -> None:
    key = _detached_session(omero_sim, "bob")
    browser = _handoff(omero_web, key)
    assert omero_sim.kill_session(key)
    assert _get(browser, omero_web.url(PING)) == NOT_LOGGED_IN
    assert omero_sim.stats()["join_failures"] >= 1


def test_builtin_public_user_creates_an_omero_session_per_cookieless_request(
    omero_web_factory: Callable[..., OmeroWeb],
    omero_sim: OmeroSim,
    capsys: pytest.CaptureFixture[str],
) -> None:
    web = omero_web_factory(public_user=True)
    requests = 10
    for _ in range(requests):
        assert _get(urllib.request.build_opener(), web.url(PING)) == LOGGED_IN
    stats = omero_sim.stats()
    with capsys.disabled():
        print(
            f"\nOMERO.web public user (default DummyCache): {requests} cookieless requests "
            f"-> {stats['sessions_created']} OMERO sessions, {stats['logins']} logins"
        )
    assert stats["sessions_created"] == requests
    assert {s["user"] for s in omero_sim.sessions()} == {"public"}
