"""proxy/pages/csrf.py: signed double-submit tokens for porter's own forms."""

from __future__ import annotations

import aiohttp
from aiohttp import web
from multidict import CIMultiDict

from proxy.forwarding.cookies import take_set_cookies
from proxy.keys import CSRF
from tests.porter_fixtures import PorterFactory, Upstream

SECRET = "a-shared-secret-key-of-at-least-32-characters"


async def issue(request: web.Request) -> web.Response:
    response = web.Response()
    response.text = request.app[CSRF].token(request, response, request.query["purpose"])
    return response


async def check(request: web.Request) -> web.Response:
    form = await request.post()
    token = form.get("token")
    ok = request.app[CSRF].valid(request, str(token) if token else None, request.query["purpose"])
    return web.json_response(ok)


def add_routes(app: web.Application) -> None:
    app.router.add_get("/porter/test-only-csrf", issue)
    app.router.add_post("/porter/test-only-csrf", check)


async def test_a_token_holds_only_for_its_nonce_purpose_and_secret(
    echo_upstream: Upstream, porter: PorterFactory
) -> None:
    client = await porter(secret_key=SECRET, configure=add_routes)
    resp = await client.get("/porter/test-only-csrf?purpose=login")
    token = await resp.text()
    nonce = resp.cookies["porter_csrf"]
    assert nonce["httponly"]
    assert nonce["samesite"] == "Strict"

    async def valid(purpose: str, value: str) -> bool:
        answer = await client.post(
            f"/porter/test-only-csrf?purpose={purpose}", data={"token": value}
        )
        return bool(await answer.json())

    assert await valid("login", token)
    assert not await valid("logout", token)  # another form's token
    assert not await valid("login", token[:-1] + ("0" if token[-1] != "0" else "1"))
    assert not await valid("login", "")
    # the same nonce gives the same token: a second page view keeps working
    assert await (await client.get("/porter/test-only-csrf?purpose=login")).text() == token

    # another porter process with the same secret_key accepts it; a stranger's cookie jar not
    other = await porter(secret_key=SECRET, configure=add_routes)
    other.session.cookie_jar.update_cookies({"porter_csrf": nonce.value})
    answer = await other.post("/porter/test-only-csrf?purpose=login", data={"token": token})
    assert await answer.json() is True
    async with aiohttp.ClientSession() as stranger:
        answer = await stranger.post(
            other.make_url("/porter/test-only-csrf?purpose=login"), data={"token": token}
        )
        assert await answer.json() is False  # no nonce cookie


async def test_cookies_relayed_over_https_are_secure(
    echo_upstream: Upstream, porter: PorterFactory
) -> None:
    """Behind a TLS front proxy, OMERO.web speaks plain HTTP to porter and sets its csrftoken
    (or a plug-in's cookie) without Secure; porter knows the browser's scheme and adds it.
    (The echo upstream sets them as Django does: the OMERO test server cannot render an
    OMERO.web page that sets csrftoken, and /api/v0/token/ is porter's own.)"""
    relay = await porter(trusted_proxies=("127.0.0.1/32",))
    for name in ("csrftoken", "plugin_pref"):
        for proto, secure in (("https", True), ("http", False)):
            resp = await relay.get(
                f"/echo?tile=1&set_cookie={name}", headers={"X-Forwarded-Proto": proto}
            )
            [cookie] = resp.headers.getall("Set-Cookie")
            assert cookie.startswith(f"{name}=from-omero-web")
            assert cookie.endswith("; Secure") is secure, cookie
    # porter's own /api/v0/token/ sets csrftoken Secure over https too
    client = await porter(logged_in=False, trusted_proxies=("127.0.0.1/32",))
    resp = await client.get("/api/v0/token/", headers={"X-Forwarded-Proto": "https"})
    [csrf] = resp.headers.getall("Set-Cookie")
    assert "; Secure" in csrf


def test_a_cookie_that_says_secure_already_is_relayed_as_it_is() -> None:
    headers = CIMultiDict(
        [
            ("Set-Cookie", "a=1; Path=/; secure; SameSite=None"),
            ("Set-Cookie", "b=2; Path=/"),
            ("Set-Cookie", "sessionid=held; Path=/"),
        ]
    )
    taken = take_set_cookies(headers, frozenset({"sessionid"}), https=True)
    assert taken == {"sessionid": "held"}
    assert headers.getall("Set-Cookie") == [
        "a=1; Path=/; secure; SameSite=None",
        "b=2; Path=/; Secure",
    ]
