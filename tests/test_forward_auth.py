"""Forward-auth through real nginx (Debian's nginx-light, auth_request), configured with the
configuration docs/forward-auth.md ships, in front of real OMERO.web and the OMERO test
server, with porter answering the decisions."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient
from yarl import URL

from auth.omero_settings import OmeroSettings
from auth.public_settings import PublicSessionSettings
from filters.settings import PublicRuleSettings
from proxy.pages.forward_auth import DECISIONS
from proxy.settings import ForwardAuthSettings
from tests.bypass_corpus import CASES, CORPUS_RULES
from tests.gateway_fixtures import GatewayFactory
from tests.nginx_fixture import Nginx, free_port
from tests.omero_sim.fixture import OmeroSim
from tests.web_fixture import OmeroWeb

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "forward-auth.md"
PING = "/webclient/keepalive_ping/"


def shipped_config() -> str:
    """The nginx block of docs/forward-auth.md, as an admin would copy it."""
    blocks = re.findall(r"```nginx\n(.*?)```", DOC.read_text(), re.S)
    assert len(blocks) == 1, "docs/forward-auth.md must hold exactly one nginx block"
    return str(blocks[0])


def site_config(porter_port: int, web_port: int, port: int, directory: Path) -> str:
    """docs/forward-auth.md's configuration for these ports, its cache under `directory`."""
    config = shipped_config()
    config = config.replace("server 127.0.0.1:8080;", f"server 127.0.0.1:{porter_port};")
    config = config.replace("server 127.0.0.1:4080;", f"server 127.0.0.1:{web_port};")
    config = config.replace("listen 80;", f"listen 127.0.0.1:{port};")
    return config.replace("/var/cache/nginx/omero-public", str(directory / "cache"))


@pytest.fixture
def nginx_factory(tmp_path: Path) -> Iterator[Callable[[int, int], Nginx]]:
    started: list[Nginx] = []

    def start(porter_port: int, web_port: int) -> Nginx:
        directory = tmp_path / f"nginx{len(started)}"
        directory.mkdir()
        port = free_port()
        server = Nginx(directory, site_config(porter_port, web_port, port, directory), port)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


def forward_auth_sections(sim: OmeroSim, **forward: Any) -> dict[str, Any]:
    entry = sim.server_list_entry()
    return {
        "omero": OmeroSettings(server_list=((entry[0], entry[1], entry[2]),)),
        "public": PublicRuleSettings(enabled=True, url_filter=r"^/webgateway/.*|^" + PING),
        "public_session": PublicSessionSettings(
            enabled=True, user="public", password=sim.users["public"]
        ),
        "forward_auth": ForwardAuthSettings(enabled=True, **forward),
    }


async def setup(
    gateway: GatewayFactory,
    sim: OmeroSim,
    web: OmeroWeb,
    nginx_factory: Callable[[int, int], Nginx],
    **forward: Any,
) -> tuple[TestClient[Any, Any], Nginx]:
    porter = await gateway(
        sections=forward_auth_sections(sim, **forward), trusted_proxies=("127.0.0.1/32",)
    )
    assert porter.server.port is not None
    web_port = int(web.base_url.rsplit(":", 1)[1])
    return porter, nginx_factory(porter.server.port, web_port)


class Browser:
    """A browser's cookie jar and everything nginx answered it (for the leak checks)."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.session = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))
        self.seen: list[str] = []

    async def get(self, path: str, **kwargs: Any) -> tuple[int, str, Any]:
        async with self.session.get(self.base + path, **kwargs) as resp:
            body = await resp.text()
            self.seen += [*resp.headers.getall("Set-Cookie", []), body]
            for hop in resp.history:
                self.seen += hop.headers.getall("Set-Cookie", [])
            return resp.status, body, resp.headers

    async def post(self, path: str, data: dict[str, str]) -> tuple[int, Any]:
        async with self.session.post(self.base + path, data=data, allow_redirects=False) as resp:
            self.seen += [*resp.headers.getall("Set-Cookie", []), await resp.text()]
            return resp.status, resp.headers

    async def log_in(self, user: str, password: str) -> None:
        _, page, _ = await self.get("/porter/login")
        token = re.search(r'name="csrf_token" value="([^"]+)"', page)
        assert token is not None
        status, _ = await self.post(
            "/porter/login",
            {"csrf_token": token.group(1), "username": user, "password": password},
        )
        assert status == 303

    async def close(self) -> None:
        await self.session.close()


async def test_a_user_logs_in_browses_omero_web_through_nginx_and_logs_out(
    gateway: GatewayFactory,
    omero_sim: OmeroSim,
    omero_web: OmeroWeb,
    nginx_factory: Callable[[int, int], Nginx],
) -> None:
    _, nginx = await setup(gateway, omero_sim, omero_web, nginx_factory)
    browser = Browser(nginx.url)
    try:
        status, _, headers = await browser.get("/webclient/", allow_redirects=False)
        assert status == 302
        assert headers["Location"].startswith("/porter/login?url=")
        await browser.log_in("alice", omero_sim.users["alice"])
        assert (await browser.get(PING))[:2] == (200, "OK")
        [key] = [s["key"] for s in omero_sim.sessions() if s["user"] == "alice"]
        _, page, _ = await browser.get("/porter/logout")
        token = re.search(r'name="csrf_token" value="([^"]+)"', page)
        assert token is not None
        assert (await browser.post("/porter/logout", {"csrf_token": token.group(1)}))[0] == 303
        assert omero_sim.session(key) is None  # the OMERO session closed
        assert (await browser.get(PING, allow_redirects=False))[0] == 200  # public again
        # nothing nginx gave the browser holds an OMERO session key or OMERO.web's cookie
        everything = "\n".join(browser.seen)
        assert key not in everything
        assert "sessionid=" not in everything
        assert not [c for c in browser.session.cookie_jar if c.key == "sessionid"]
    finally:
        await browser.close()


async def test_public_paths_are_served_on_one_omero_session(
    gateway: GatewayFactory,
    omero_sim: OmeroSim,
    omero_web: OmeroWeb,
    nginx_factory: Callable[[int, int], Nginx],
) -> None:
    _, nginx = await setup(gateway, omero_sim, omero_web, nginx_factory)
    before = omero_sim.stats()["sessions_created"]
    async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as anonymous:
        for _ in range(200):
            async with anonymous.get(nginx.url + PING) as resp:
                assert (resp.status, await resp.text()) == (200, "OK")
                assert "sessionid" not in resp.headers.get("Set-Cookie", "")
    assert omero_sim.stats()["sessions_created"] - before == 1


# porter's 400 (no canonical form, credentials in the URL) is an error to auth_request:
# nginx answers 500 for it; nothing reaches OMERO.web either way.
@pytest.mark.parametrize(
    ("path", "statuses"),
    [
        ("/webadmin/", {403}),  # built-in deny
        ("/webgateway/copyImgRDef/?c=1", {403}),  # a session-writing view: denied
        ("/webgateway/%2e%2e/webadmin/", {400, 403, 500}),  # no canonical form
        ("/webgateway/x/..%2fwebadmin/", {400, 500}),
        ("/webclient/keepalive_ping/?bsession=stolen", {500}),  # OMERO credentials in the URL
        ("/webclient/userdata/", {302}),  # not public: to porter's login page
    ],
)
async def test_paths_that_are_not_public_never_reach_omero_web_as_the_public_user(
    gateway: GatewayFactory,
    omero_sim: OmeroSim,
    omero_web: OmeroWeb,
    nginx_factory: Callable[[int, int], Nginx],
    path: str,
    statuses: set[int],
) -> None:
    _, nginx = await setup(gateway, omero_sim, omero_web, nginx_factory)
    url = URL(nginx.url + path, encoded=True)
    async with (
        aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as anonymous,
        anonymous.get(url, allow_redirects=False) as resp,
    ):
        assert resp.status in statuses
        if resp.status == 302:
            assert resp.headers["Location"].startswith("/porter/login")
    assert "public" not in [s["user"] for s in omero_sim.sessions()]  # never made, never used


async def test_x_original_uri_from_an_untrusted_peer_is_refused(
    gateway: GatewayFactory, omero_sim: OmeroSim
) -> None:
    porter = await gateway(
        sections=forward_auth_sections(omero_sim), trusted_proxies=("192.0.2.0/24",)
    )
    resp = await porter.get(
        "/porter/auth", headers={"X-Original-URI": PING, "X-Original-Method": "GET"}
    )
    assert resp.status == 403
    assert "X-Porter-Cookie" not in resp.headers


async def test_porter_down_means_nginx_lets_nothing_through(
    gateway: GatewayFactory,
    omero_sim: OmeroSim,
    omero_web: OmeroWeb,
    nginx_factory: Callable[[int, int], Nginx],
) -> None:
    web_port = int(omero_web.base_url.rsplit(":", 1)[1])
    nginx = nginx_factory(free_port(), web_port)  # nobody listens where porter should
    async with aiohttp.ClientSession() as client, client.get(nginx.url + PING) as resp:
        assert resp.status == 500
        assert await resp.text() != "OK"


async def test_omero_web_forgetting_the_session_is_renewed_through_nginx(
    gateway: GatewayFactory,
    omero_sim: OmeroSim,
    omero_web: OmeroWeb,
    nginx_factory: Callable[[int, int], Nginx],
) -> None:
    _, nginx = await setup(gateway, omero_sim, omero_web, nginx_factory)
    browser = Browser(nginx.url)
    try:
        await browser.log_in("bob", omero_sim.users["bob"])
        assert (await browser.get(PING))[:2] == (200, "OK")
        for path in omero_web.session_dir.rglob("sessionid*"):  # OMERO.web forgets
            path.unlink()
        # a view that redirects browsers to OMERO.web's login page when not logged in
        status, _, headers = await browser.get("/webclient/active_group/", allow_redirects=False)
        assert status == 307  # porter renewed; the browser goes back to its URL
        status, _, headers = await browser.get("/webclient/active_group/", allow_redirects=False)
        assert status == 302
        assert headers["Location"] == "/webclient/"  # OMERO.web knows bob again
        assert "sessionid=" not in "\n".join(browser.seen)
    finally:
        await browser.close()


async def test_posts_that_must_log_in_or_be_renewed_keep_their_method_through_nginx(
    gateway: GatewayFactory,
    omero_sim: OmeroSim,
    omero_web: OmeroWeb,
    nginx_factory: Callable[[int, int], Nginx],
) -> None:
    """nginx's error_page sends a POST on as a POST: porter answers it as it answers a GET."""
    _, nginx = await setup(gateway, omero_sim, omero_web, nginx_factory)
    private = nginx.url + "/webclient/userdata/"  # login required, not public
    async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as anonymous:
        ajax = {"X-Requested-With": "XMLHttpRequest"}
        async with anonymous.post(private, headers=ajax, data={"a": "1"}) as resp:
            assert resp.status == 403  # as in proxy mode: OMERO.web's JavaScript reloads
            assert "Login required" in await resp.text()  # porter's answer, not nginx's
        async with anonymous.post(private, data={"a": "1"}, allow_redirects=False) as resp:
            assert resp.status == 302
            assert resp.headers["Location"] == "/porter/login"  # a POST is not returned to
    path = "/webclient/active_group/"  # OMERO.web: login required; POST switches the group
    browser = Browser(nginx.url)
    try:
        await browser.log_in("bob", omero_sim.users["bob"])
        csrf = "c" * 32  # Django's CSRF: the cookie and the header agree
        browser.session.cookie_jar.update_cookies({"csrftoken": csrf})
        headers, form = {"X-CSRFToken": csrf}, {"active_group": "1"}
        for stored in omero_web.session_dir.rglob("sessionid*"):  # OMERO.web forgets
            stored.unlink()
        async with browser.session.post(
            nginx.url + path, headers=headers, data=form, allow_redirects=False
        ) as resp:
            assert resp.status == 307  # renewed; the browser sends the same POST again
            assert resp.headers["Location"] == path
        async with browser.session.post(
            nginx.url + path, headers=headers, data=form, allow_redirects=False
        ) as resp:
            assert resp.status == 302  # OMERO.web knows bob again and ran the view
            assert resp.headers["Location"] == "/webclient/"
    finally:
        await browser.close()


async def test_renew_never_sends_a_browser_off_the_site(
    gateway: GatewayFactory, omero_sim: OmeroSim
) -> None:
    porter = await gateway(
        sections=forward_auth_sections(omero_sim), trusted_proxies=("127.0.0.1/32",)
    )
    for uri in ("//evil.example/x", "/\\evil.example/x", "https://evil.example/x"):
        resp = await porter.get(
            "/porter/auth/renew",
            headers={
                "X-Original-URI": uri,
                "X-Original-Method": "GET",
                "X-Upstream-Location": "/webclient/login/?url=%2Fx",
            },
            allow_redirects=False,
        )
        assert resp.status == 400, uri
        assert "Location" not in resp.headers


async def test_decisions_are_cached_per_credentials_and_never_shared(
    gateway: GatewayFactory,
    omero_sim: OmeroSim,
    omero_web: OmeroWeb,
    nginx_factory: Callable[[int, int], Nginx],
) -> None:
    porter, nginx = await setup(
        gateway, omero_sim, omero_web, nginx_factory, decision_cache_ttl=5.0
    )
    alice, anonymous = Browser(nginx.url), Browser(nginx.url)
    try:
        await alice.log_in("alice", omero_sim.users["alice"])
        assert (await alice.get(PING))[:2] == (200, "OK")
        assert (await alice.get(PING))[:2] == (200, "OK")
        status, _, _ = await anonymous.get("/webclient/userdata/", allow_redirects=False)
        assert status == 302  # to log in: alice's cached decision is for her cookie only
        decisions = porter.app[DECISIONS]
        kinds = {answer[1].get("X-Porter-Kind") for answer in decisions.values()}
        assert kinds == {"user", None}  # alice's grant and the anonymous refusal, apart
        assert len(decisions) == 2  # alice's repeated request was answered from the cache
    finally:
        await alice.close()
        await anonymous.close()


async def _raw_get(port: int, method: str, target: str) -> int:
    """Send the request line exactly as written (no client library would send most)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        f"{method} {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode()
    )
    await writer.drain()
    status_line = await reader.readline()
    writer.close()
    return int(status_line.split()[1]) if status_line else 0


async def test_the_bypass_corpus_through_nginx_never_serves_a_non_public_path_as_public(
    gateway: GatewayFactory,
    omero_sim: OmeroSim,
    omero_web: OmeroWeb,
    nginx_factory: Callable[[int, int], Nginx],
) -> None:
    sections = forward_auth_sections(omero_sim)
    sections["public"] = CORPUS_RULES
    porter = await gateway(sections=sections, trusted_proxies=("127.0.0.1/32",))
    assert porter.server.port is not None
    nginx = nginx_factory(porter.server.port, int(omero_web.base_url.rsplit(":", 1)[1]))
    # the public session exists; OMERO.web joins it once per request it serves as public
    assert await _raw_get(nginx.port, "GET", "/webgateway/getImgRDef/") == 200
    [public] = [s for s in omero_sim.sessions() if s["user"] == "public"]
    joins = public["joins"]
    # Absolute-form targets (http://host/path) are left out: nginx turns them into the
    # origin-form path it then both asks about and forwards (a public path stays public).
    refused = [c for c in CASES if c.kind != "public" and c.target.startswith("/")]
    assert len(refused) > 40
    for case in refused:
        status = await _raw_get(nginx.port, case.method, case.target)
        if not case.target.startswith("/porter/"):  # porter's own pages are porter's
            assert status != 200, case
    after = omero_sim.session(public["key"])
    assert after is not None
    assert after["joins"] == joins  # not one of them reached OMERO.web as the public user


async def test_only_the_public_users_answers_are_cached_by_nginx(
    gateway: GatewayFactory,
    omero_sim: OmeroSim,
    omero_web: OmeroWeb,
    nginx_factory: Callable[[int, int], Nginx],
) -> None:
    _, nginx = await setup(gateway, omero_sim, omero_web, nginx_factory)
    path = "/webgateway/getImgRDef/"
    user, anonymous = Browser(nginx.url), Browser(nginx.url)
    try:
        await user.log_in("alice", omero_sim.users["alice"])
        for _ in range(2):  # a logged-in user: never from the cache, never into it
            status, _, headers = await user.get(path)
            assert (status, headers["X-Cache-Status"]) == (200, "BYPASS")
        status, _, headers = await anonymous.get(path)
        assert (status, headers["X-Cache-Status"]) == (200, "MISS")  # alice stored nothing
        status, _, headers = await anonymous.get(path)
        assert (status, headers["X-Cache-Status"]) == (200, "HIT")
        status, _, headers = await user.get(path)
        assert headers["X-Cache-Status"] == "BYPASS"  # even with a public hit there
    finally:
        await user.close()
        await anonymous.close()


async def test_an_ended_omero_session_means_log_in_again_back_to_the_same_url(
    gateway: GatewayFactory,
    omero_sim: OmeroSim,
    omero_web: OmeroWeb,
    nginx_factory: Callable[[int, int], Nginx],
) -> None:
    _, nginx = await setup(gateway, omero_sim, omero_web, nginx_factory)
    browser = Browser(nginx.url)
    try:
        await browser.log_in("carol", omero_sim.users["carol"])
        assert (await browser.get(PING))[:2] == (200, "OK")
        [key] = [s["key"] for s in omero_sim.sessions() if s["user"] == "carol"]
        assert omero_sim.kill_session(key)  # an admin ended it, or it timed out
        status, _, headers = await browser.get("/webclient/active_group/", allow_redirects=False)
        assert status == 302
        assert headers["Location"] == "/porter/login?url=%2Fwebclient%2Factive_group%2F"
        jar = browser.session.cookie_jar
        assert not [c for c in jar if c.key == "porter_session" and c.value]  # cleared
    finally:
        await browser.close()


@pytest.mark.parametrize("path", ["/porter/auth", "/porter/auth/renew", "/porter/auth/login"])
async def test_browsers_cannot_ask_porter_for_decisions_through_nginx(
    gateway: GatewayFactory,
    omero_sim: OmeroSim,
    omero_web: OmeroWeb,
    nginx_factory: Callable[[int, int], Nginx],
    path: str,
) -> None:
    """nginx is a trusted proxy, so the decision endpoints must be reachable only through
    its internal subrequests: a browser forging X-Original-URI would otherwise read the
    public user's OMERO.web cookie in X-Porter-Cookie."""
    _, nginx = await setup(gateway, omero_sim, omero_web, nginx_factory)
    assert (await cookieless(nginx, PING))[0] == 200  # the public session exists
    forged = {
        "X-Original-URI": PING,
        "X-Original-Method": "GET",
        "X-Upstream-Location": "https://evil.example/",
    }
    async with (
        aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as browser,
        browser.get(nginx.url + path, headers=forged, allow_redirects=False) as resp,
    ):
        body = await resp.text()
        assert resp.status == 404
        assert not [h for h in resp.headers if h.lower().startswith("x-porter")]
        assert "sessionid" not in body
        assert "evil.example" not in resp.headers.get("Location", "")


async def cookieless(nginx: Nginx, path: str) -> tuple[int, str]:
    async with (
        aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as anonymous,
        anonymous.get(nginx.url + path, allow_redirects=False) as resp,
    ):
        return resp.status, await resp.text()
