"""Logging in through porter to the real OMERO.web and the OMERO test server, and out again."""

from __future__ import annotations

from http.cookies import SimpleCookie

from auth.sessions import new_session_id
from proxy.keys import SESSION_STORE
from tests.gateway_fixtures import GatewayFactory, form_token, log_in
from tests.omero_sim.fixture import OmeroSim

COOKIE = "porter_session"


def omero_keys_of(sim: OmeroSim, user: str) -> list[str]:
    return [s["key"] for s in sim.sessions() if s["user"] == user]


async def test_login_use_logout_end_to_end(gateway: GatewayFactory, omero_sim: OmeroSim) -> None:
    client = await gateway()
    # Not logged in: a browser is sent to porter's login page, keeping where it wanted to go.
    resp = await client.get("/webclient/", allow_redirects=False)
    assert resp.status == 302
    assert resp.headers["Location"] == "/porter/login?url=%2Fwebclient%2F"

    resp = await log_in(client, "alice", omero_sim.users["alice"], url="/webclient/keepalive_ping/")
    assert resp.status == 303
    assert resp.headers["Location"] == "/webclient/keepalive_ping/"
    cookie = SimpleCookie(resp.headers["Set-Cookie"])[COOKIE]
    assert cookie["httponly"] is True
    assert cookie["samesite"] == "Lax"
    assert cookie["path"] == "/"
    assert cookie["max-age"] == ""  # a browser-session cookie (OMERO.web's default)
    [omero_key] = omero_keys_of(omero_sim, "alice")

    # OMERO.web serves alice through porter: the handoff joined her OMERO session.
    joins_before = omero_sim.session(omero_key)["joins"]  # type: ignore[index]
    resp = await client.get("/webclient/keepalive_ping/")
    assert resp.status == 200
    assert await resp.text() == "OK"
    assert omero_sim.session(omero_key)["joins"] >= joins_before  # type: ignore[index]
    assert omero_sim.stats()["sessions_created"] == 1
    # The browser holds porter's cookie only: no OMERO.web session cookie, no OMERO key.
    jar = {c.key: c.value for c in client.session.cookie_jar}
    assert "sessionid" not in jar
    assert omero_key not in repr(jar)
    assert omero_key not in resp.headers.get("Set-Cookie", "")

    # Log out: GET asks first, POST with the token closes the OMERO session on the server.
    page = await (await client.get("/porter/logout")).text()
    assert "alice" in page
    old_cookie = jar[COOKIE]
    resp = await client.post(
        "/porter/logout", data={"csrf_token": form_token(page)}, allow_redirects=False
    )
    assert resp.status == 303
    assert resp.headers["Location"] == "/porter/login?logged_out=1"
    assert omero_sim.session(omero_key) is None
    assert omero_sim.stats()["sessions_closed"] >= 1

    # The old cookie no longer works.
    client.session.cookie_jar.update_cookies({COOKIE: old_cookie})
    resp = await client.get("/webclient/keepalive_ping/", allow_redirects=False)
    assert resp.status == 302
    assert resp.headers["Location"].startswith("/porter/login")


async def test_wrong_password_keeps_the_username_never_the_password(
    gateway: GatewayFactory, omero_sim: OmeroSim
) -> None:
    client = await gateway()
    resp = await log_in(client, "alice", "not-her-password-42")
    assert resp.status == 401
    page = await resp.text()
    assert "Wrong user name or password." in page
    assert 'value="alice"' in page
    assert "not-her-password-42" not in page
    assert COOKIE not in resp.cookies


async def test_unknown_user_answers_like_a_wrong_password(
    gateway: GatewayFactory, omero_sim: OmeroSim
) -> None:
    client = await gateway()
    unknown = await log_in(client, "nobody-such", "whatever-pass")
    wrong = await log_in(client, "alice", "whatever-pass")
    assert unknown.status == wrong.status == 401
    assert "Wrong user name or password." in await unknown.text()


async def test_login_without_csrf_token_is_refused(
    gateway: GatewayFactory, omero_sim: OmeroSim
) -> None:
    client = await gateway()
    resp = await client.post(
        "/porter/login", data={"username": "alice", "password": omero_sim.users["alice"]}
    )
    assert resp.status == 403
    assert omero_sim.stats()["logins"] == 0


async def test_login_with_missing_fields_is_refused_without_contacting_omero(
    gateway: GatewayFactory, omero_sim: OmeroSim
) -> None:
    client = await gateway()
    page = await (await client.get("/porter/login")).text()
    resp = await client.post(
        "/porter/login", data={"csrf_token": form_token(page), "username": "alice"}
    )
    assert resp.status == 400
    assert omero_sim.stats()["logins"] == 0


async def test_repeated_failures_are_throttled_and_success_resets(
    gateway: GatewayFactory, omero_sim: OmeroSim
) -> None:
    from proxy.settings import LoginSettings

    client = await gateway(sections={"login": LoginSettings(max_failures_per_user=3)})
    for _ in range(3):
        assert (await log_in(client, "bob", "wrong-password")).status == 401
    throttled = await log_in(client, "bob", omero_sim.users["bob"])
    assert throttled.status == 429
    assert int(throttled.headers["Retry-After"]) > 0
    logins = omero_sim.stats()["logins"] + omero_sim.stats()["login_failures"]
    assert logins == 3  # the throttled attempt never reached OMERO
    # Another user from the same address is not affected, and a success resets its count.
    assert (await log_in(client, "carol", "wrong")).status == 401
    assert (await log_in(client, "carol", omero_sim.users["carol"])).status == 303


async def test_omero_down_is_said_on_the_login_page(
    gateway: GatewayFactory, omero_sim: OmeroSim
) -> None:
    client = await gateway()
    page = await (await client.get("/porter/login")).text()
    omero_sim.down()
    try:
        resp = await client.post(
            "/porter/login",
            data={"csrf_token": form_token(page), "username": "alice", "password": "x-pass"},
        )
    finally:
        omero_sim.up()
    assert resp.status == 503
    assert "not responding" in await resp.text()


async def test_hostile_redirect_target_goes_to_the_landing_page(
    gateway: GatewayFactory, omero_sim: OmeroSim
) -> None:
    client = await gateway()
    resp = await log_in(client, "alice", omero_sim.users["alice"], url="//evil.example/x")
    assert resp.status == 303
    assert resp.headers["Location"] == "/webclient/"


async def test_forged_and_malformed_cookies_are_no_session_and_cleared(
    gateway: GatewayFactory, omero_sim: OmeroSim
) -> None:
    client = await gateway()
    for forged in (new_session_id(), "x" * 5000, "'; DROP TABLE", "../../etc"):
        client.session.cookie_jar.clear()
        resp = await client.get(
            "/webclient/", headers={"Cookie": f"{COOKIE}={forged}"}, allow_redirects=False
        )
        assert resp.status == 302
        assert resp.headers["Location"].startswith("/porter/login")
        cleared = SimpleCookie(resp.headers["Set-Cookie"])[COOKIE]
        assert cleared.value == ""


async def test_login_never_reuses_a_presented_session_id(
    gateway: GatewayFactory, omero_sim: OmeroSim
) -> None:
    client = await gateway()
    await log_in(client, "alice", omero_sim.users["alice"])
    first = {c.key: c.value for c in client.session.cookie_jar}[COOKIE]
    # The form, fetched without the session; then posted with it, as a second tab would.
    client.session.cookie_jar.clear()
    page = await (await client.get("/porter/login")).text()
    client.session.cookie_jar.update_cookies({COOKIE: first})
    resp = await client.post(
        "/porter/login",
        data={"csrf_token": form_token(page), "username": "bob", "password": "bob-pass"},
        allow_redirects=False,
    )
    assert resp.status == 303
    second = SimpleCookie(resp.headers["Set-Cookie"])[COOKIE].value
    assert second != first
    # Logging in again ended the first session, on porter and on OMERO.
    assert await client.app[SESSION_STORE].get(first) is None
    assert omero_keys_of(omero_sim, "alice") == []


async def test_omero_session_killed_on_the_server_sends_the_user_to_login(
    gateway: GatewayFactory, omero_sim: OmeroSim
) -> None:
    client = await gateway()
    await log_in(client, "alice", omero_sim.users["alice"])
    assert (await client.get("/webclient/keepalive_ping/")).status == 200
    [omero_key] = omero_keys_of(omero_sim, "alice")
    assert omero_sim.kill_session(omero_key)
    # A login_required view of OMERO.web, as AJAX: OMERO.web answers 403, porter finds the
    # OMERO session gone and ends its own.
    resp = await client.get(
        "/webclient/active_group/", headers={"X-Requested-With": "XMLHttpRequest"}
    )
    assert resp.status == 403
    assert (await resp.json())["error"] == "Login required."
    assert SimpleCookie(resp.headers["Set-Cookie"])[COOKIE].value == ""


async def test_omero_web_losing_its_session_is_healed_by_a_new_handoff(
    gateway: GatewayFactory, omero_sim: OmeroSim
) -> None:
    client = await gateway()
    await log_in(client, "alice", omero_sim.users["alice"])
    store = client.app[SESSION_STORE]
    session_id = {c.key: c.value for c in client.session.cookie_jar}[COOKIE]
    record = await store.get(session_id)
    assert record is not None
    # OMERO.web forgets its session (as after a restart with non-persistent sessions).
    await store.update_cookies(session_id, {"sessionid": "forgotten-by-omero-web"})
    # change_active_group is login_required and touches no data: logged in, it redirects to
    # OMERO.web's index; not logged in, to OMERO.web's login page.
    resp = await client.get("/webclient/active_group/", allow_redirects=False)
    assert resp.status == 302
    assert resp.headers["Location"] == "/webclient/"
    renewed = await store.get(session_id)
    assert renewed is not None
    assert renewed.cookies["sessionid"] != "forgotten-by-omero-web"
    assert renewed.omero_session_key == record.omero_session_key


async def test_omero_web_login_and_logout_urls_are_porters(
    gateway: GatewayFactory, omero_sim: OmeroSim
) -> None:
    client = await gateway()
    resp = await client.get("/webclient/login/?url=/webclient/", allow_redirects=False)
    assert resp.status == 303
    assert resp.headers["Location"] == "/porter/login?url=/webclient/"
    await log_in(client, "alice", omero_sim.users["alice"])
    # A same-origin POST to OMERO.web's logout URL logs out; a cross-site one only asks.
    host = f"{client.server.host}:{client.server.port}"
    resp = await client.post(
        "/webclient/logout/", headers={"Origin": "https://evil.example"}, allow_redirects=False
    )
    assert resp.status == 200
    assert "Log out" in await resp.text()
    assert omero_keys_of(omero_sim, "alice") != []
    resp = await client.post(
        "/webclient/logout/", headers={"Origin": f"http://{host}"}, allow_redirects=False
    )
    assert resp.status == 303
    assert omero_keys_of(omero_sim, "alice") == []


async def test_json_api_login_has_omero_webs_shape_without_the_session_key(
    gateway: GatewayFactory, omero_sim: OmeroSim
) -> None:
    client = await gateway()
    token = (await (await client.get("/api/v0/token/")).json())["data"]
    refused = await client.post("/api/v0/login/", data={"username": "alice", "password": "x"})
    assert refused.status == 403
    resp = await client.post(
        "/api/v0/login/",
        data={"username": "alice", "password": omero_sim.users["alice"], "server": "1"},
        headers={"X-CSRFToken": token},
    )
    assert resp.status == 200
    body = await resp.json()
    assert body["success"] is True
    context = body["eventContext"]
    assert context["userName"] == "alice"
    assert "sessionUuid" not in context
    assert "sessionId" not in context
    [omero_key] = omero_keys_of(omero_sim, "alice")
    assert omero_key not in await resp.text()
    wrong = await client.post(
        "/api/v0/login/",
        data={"username": "alice", "password": "nope-nope", "server": "1"},
        headers={"X-CSRFToken": token},
    )
    assert wrong.status == 401
    assert "message" in await wrong.json()
    assert (await client.get("/api/v0/login/")).status == 405


async def test_logged_in_user_visiting_login_goes_on(
    gateway: GatewayFactory, omero_sim: OmeroSim
) -> None:
    client = await gateway()
    await log_in(client, "alice", omero_sim.users["alice"])
    resp = await client.get("/porter/login?url=/webclient/keepalive_ping/", allow_redirects=False)
    assert resp.status == 302
    assert resp.headers["Location"] == "/webclient/keepalive_ping/"
