"""Hostile requests get porter's defined answers, never a 500, a stall or an echo: malformed
Origin/Referer, slow regexes, forged Host, oversized or broken headers, identity headers,
and what porter's own pages and probes tell strangers."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

from auth.public_settings import PublicSessionSettings
from filters.hosts import AllowedHosts
from filters.regex_guard import backtracking_hazard
from filters.settings import PublicRuleSettings
from proxy.settings import ConfigError, load_settings
from tests.porter_fixtures import OPERATOR, OPERATOR_TOKEN, PorterFactory, PorterProcess, Upstream


async def raw_request(port: int, request: bytes) -> bytes:
    """Send `request` as bytes (what no well-behaved client library would send); the answer."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request)
    await writer.drain()
    answer = await reader.read()
    writer.close()
    return answer


def status_of(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1])


# ~ item 7: a malformed Origin or Referer on OMERO.web's logout URL


@pytest.mark.parametrize(
    "origin",
    [
        "http://127.0.0.1:99999",
        "http://[::1/",
        "http://[zz::1]:80",
        "http://a b.example",
        "::::",
        "http://%zz",
    ],
)
async def test_a_malformed_origin_on_logout_is_simply_not_same_origin(
    echo_upstream: Upstream, porter: PorterFactory, origin: str
) -> None:
    client = await porter()
    for header in ("Origin", "Referer"):
        resp = await client.post("/webclient/logout/", headers={header: origin})
        assert resp.status == 200  # the confirmation page, as for any other site
        assert "log out" in (await resp.text()).lower()
    assert (await client.get("/echo")).status == 200  # still logged in


async def test_an_undecodable_origin_on_logout_is_not_a_crash(
    echo_upstream: Upstream, porter: PorterFactory
) -> None:
    client = await porter()
    assert client.server.port is not None
    cookie = client.session.cookie_jar.filter_cookies(client.make_url("/"))["porter_session"]
    answer = await raw_request(
        client.server.port,
        b"POST /webclient/logout/ HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\n"
        b"Origin: http://\xff\xfe.example\r\nConnection: close\r\n"
        b"Cookie: porter_session=" + cookie.value.encode() + b"\r\n\r\n",
    )
    assert status_of(answer) == 200  # the confirmation page


# ~ item 8: regex matching never blocks the event loop


def slow_public(pattern: str, timeout: float) -> dict[str, Any]:
    # Built directly, as an older configuration could hold it: `check` refuses this pattern.
    return {
        "public": PublicRuleSettings(enabled=True, url_filter=pattern, match_timeout=timeout),
        "public_session": PublicSessionSettings(enabled=True, user="public", password="x"),
    }


async def test_healthz_answers_while_hostile_paths_are_matched_against_a_slow_pattern(
    echo_upstream: Upstream, porter: PorterFactory
) -> None:
    client = await porter(logged_in=False, sections=slow_public(r"^/(a|a)*b$", 1.0))
    hostile = [
        asyncio.create_task(client.get("/" + "a" * (30 + n) + "c", allow_redirects=False))
        for n in range(4)
    ]
    await asyncio.sleep(0.1)  # they are being matched now
    health = await client.get("/porter/healthz")
    assert health.status == 200
    # Answered while every hostile match still runs: nothing waited for them.
    assert not any(task.done() for task in hostile)
    answers = await asyncio.gather(*hostile)
    # Each ran out of time: not public, fail closed (an anonymous visitor is sent to log in).
    assert {resp.status for resp in answers} == {302}


@pytest.mark.parametrize(
    ("pattern", "hazard"),
    [
        (r"^/(a|a)+$", True),
        (r"^/(a+)+$", True),
        (r"^/(\w+/)*x$", True),
        (r"^/(?:webgateway|webclient)(/[a-z]+)*/$", True),
        (r"^/(?!webadmin)", False),
        (r"^/webgateway/(?!(archived_files|download_as))", False),
        (
            r"^/(webadmin/myphoto/|webclient/(?!(action|logout|annotate_(file|tags|comment|"
            r"rating|map)|script_ui|ome_tiff|figure_script))|webgateway/(?!(archived_files|"
            r"download_as)))",
            False,
        ),
        (r"^/webgateway/render_image/[0-9]+/[0-9]+/[0-9]+/.*", False),
        (r"^/(ab)?c*$", False),
    ],
)
def test_check_finds_repeats_of_alternations_and_repeats(pattern: str, hazard: bool) -> None:
    assert backtracking_hazard(pattern) is hazard


def test_check_refuses_a_backtracking_url_filter_naming_its_key(tmp_path: Path) -> None:
    config = tmp_path / "porter.toml"
    config.write_text('[public]\nenabled = true\nurl_filter = "^/(a|a)+$"\n')
    with pytest.raises(ConfigError) as raised:
        load_settings(config, environ={})
    text = str(raised.value)
    assert "public.url_filter" in text
    assert "repeats an alternation or a repeat" in text


# ~ item 9: the CSRF cookie is Secure behind a trusted https proxy


async def test_csrf_cookie_is_secure_when_the_trusted_proxy_says_https(
    echo_upstream: Upstream, porter: PorterFactory
) -> None:
    behind = await porter(logged_in=False, trusted_proxies=("127.0.0.0/8",))
    resp = await behind.get("/porter/login", headers={"X-Forwarded-Proto": "https"})
    assert "porter_csrf" in resp.cookies
    assert resp.cookies["porter_csrf"]["secure"]
    direct = await porter(logged_in=False)
    resp = await direct.get("/porter/login", headers={"X-Forwarded-Proto": "https"})
    assert not resp.cookies["porter_csrf"]["secure"]  # an untrusted peer's claim


# ~ item 10: aiohttp's parser errors quote nothing


SECRET_SESSION = "porterSessionValueThatMustNeverBeEchoed0123456789abcdef"


@pytest.mark.parametrize(
    "request_bytes",
    [
        # a Cookie header past aiohttp's 8190-byte limit, porter's session cookie first
        b"GET /webclient/ HTTP/1.1\r\nHost: 127.0.0.1\r\nCookie: porter_session="
        + SECRET_SESSION.encode()
        + b"; pad="
        + b"x" * 9000
        + b"\r\nConnection: close\r\n\r\n",
        # a malformed header line holding it
        b"GET /webclient/ HTTP/1.1\r\nHost: 127.0.0.1\r\nCookie porter_session="
        + SECRET_SESSION.encode()
        + b"\r\nConnection: close\r\n\r\n",
    ],
)
def test_unparseable_requests_get_a_400_that_quotes_nothing(
    porter_process: Any, echo_upstream: Upstream, request_bytes: bytes
) -> None:
    porter: PorterProcess = porter_process(upstream=echo_upstream.url)
    port = int(porter.url.rsplit(":", 1)[1])
    answer = asyncio.run(raw_request(port, request_bytes))
    assert status_of(answer) == 400
    assert SECRET_SESSION.encode() not in answer
    assert b"omero-porter" in answer  # porter's answer, not aiohttp's page
    for _ in range(100):  # log lines are written by porter's logging thread, soon after
        if "unparseable HTTP request" in porter.log():
            break
        time.sleep(0.05)
    assert "unparseable HTTP request" in porter.log()
    assert SECRET_SESSION not in porter.log()


# ~ item 12: Host is checked


@pytest.mark.parametrize(
    "host",
    [b"evil.example/../webadmin", b"a b", b"", b"ex\xffample.org", b"host:port", b"-x.org"],
)
async def test_a_malformed_host_is_refused(
    echo_upstream: Upstream, porter: PorterFactory, host: bytes
) -> None:
    client = await porter()
    assert client.server.port is not None
    answer = await raw_request(
        client.server.port,
        b"GET /echo HTTP/1.1\r\nHost: " + host + b"\r\nConnection: close\r\n\r\n",
    )
    assert status_of(answer) == 400
    assert echo_upstream.state.received == []


async def test_only_allowed_hosts_are_served(
    echo_upstream: Upstream, porter: PorterFactory
) -> None:
    client = await porter(allowed_hosts=("omero.example.org", ".images.example.org"))
    for host, status in [
        ("omero.example.org", 200),
        ("OMERO.example.org:8443", 200),
        ("images.example.org", 200),
        ("tiles.images.example.org", 200),
        ("example.org", 400),
        ("evil-omero.example.org", 400),
        ("127.0.0.1", 400),
    ]:
        resp = await client.get("/echo", headers={"Host": host})
        assert resp.status == status, host
    assert len(echo_upstream.state.received) == 4


def test_allowed_hosts_rules() -> None:
    anyone = AllowedHosts(["*"])
    assert anyone.allows("example.org:8080")
    assert anyone.allows("[::1]:8080")
    assert not anyone.allows("example.org/x")
    listed = AllowedHosts(["omero.example.org"])
    assert listed.allows("omero.example.org.")
    assert not listed.allows("omero.example.org.evil")


# ~ info items


# Names with the shape of an identity header, from products porter knows and some it does
# not: none reaches OMERO.web. And ordinary headers that look close: all of them do.
IDENTITY_SHAPED = [
    "X-User",
    "X-Authenticated-User",
    "X-OMERO-User",
    "Remote-User",
    "X-Remote-User",
    "X-Remote-Group",
    "Remote-Groups",
    "Remote-Email",
    "X-Forwarded-User",
    "X-Forwarded-Email",
    "X-Forwarded-Groups",
    "X-Forwarded-Preferred-Username",
    "X-Auth-Request-User",
    "X-Auth-Request-Email",
    "X-Auth-Request-Groups",
    "X-Webauth-User",
    "X-Authentik-Username",
    "X-Authentik-Email",
    "X-Authentik-Groups",
    "Cf-Access-Authenticated-User-Email",
    "X-Goog-Authenticated-User-Email",
    "X-Ms-Client-Principal-Name-User",
    "X-Pomerium-Claim-Email",
    "X-Pomerium-Claim-Groups",
    "X-Vouch-User",
    "X-Shib-Remote-User",
    "X-Keycloak-Roles",
    "x-user",
    "X-USER",
    "X-Porter-User",
    "X-Porter-Kind",
]
ORDINARY = [
    "User-Agent",
    "Accept",
    "Accept-Language",
    "X-Requested-With",
    "X-CSRFToken",
    "Referer",
    "X-Usermode",
    "X-Emailer-Version",
    "X-Grouping",
]


async def test_identity_headers_never_reach_omero_web_by_name_or_by_shape(
    echo_upstream: Upstream, porter: PorterFactory
) -> None:
    client = await porter()
    sent = {name: "root" for name in IDENTITY_SHAPED + ORDINARY}
    assert (await client.get("/echo", headers=sent)).status == 200
    received = echo_upstream.state.received[-1].headers
    assert [name for name in IDENTITY_SHAPED if name in received] == []
    assert [name for name in ORDINARY if received.get(name) != "root"] == []


async def test_readyz_details_only_for_the_operator_token_from_configured_addresses(
    echo_upstream: Upstream, porter: PorterFactory
) -> None:
    loopback = await porter(operator_token=OPERATOR_TOKEN)
    body = await (await loopback.get("/porter/readyz", headers=OPERATOR)).json()
    assert "session_store" in body["checks"]
    # loopback without the token: what every visitor behind a plain proxy_pass looks like
    for visitor in ({}, {"Authorization": "Bearer guessed"}):
        resp = await loopback.get("/porter/readyz", headers=visitor)
        assert set(await resp.json()) == {"status"}  # ready or not, and nothing more
    stranger = await porter(status_detail_from=("192.0.2.0/24",), operator_token=OPERATOR_TOKEN)
    resp = await stranger.get("/porter/readyz", headers=OPERATOR)
    assert set(await resp.json()) == {"status"}
    untokened = await porter(operator_token=None)
    resp = await untokened.get("/porter/readyz", headers=OPERATOR)
    assert set(await resp.json()) == {"status"}


async def test_porters_pages_cannot_be_framed_and_do_not_advertise_aiohttp(
    echo_upstream: Upstream, porter: PorterFactory
) -> None:
    client = await porter(logged_in=False)
    for path in ("/porter/login", "/porter/no-such-page", "/echo"):
        resp = await client.get(path)
        assert resp.headers["Server"] == "omero-porter", path
        if path.startswith("/porter/"):
            assert resp.headers["X-Frame-Options"] == "DENY"
            assert "frame-ancestors 'none'" in resp.headers["Content-Security-Policy"]


MALFORMED_FORMS = [
    ("multipart/form-data", b"x"),  # no boundary at all
    ("multipart/form-data; boundary=" + "b" * 80, b"x"),  # longer than 70 characters
    ("multipart/form-data; boundary=abc", b"garbage"),  # never opens its boundary
    (  # a part without a name
        "multipart/form-data; boundary=abc",
        b"--abc\r\nContent-Disposition: form-data\r\n\r\nx\r\n--abc--\r\n",
    ),
    ("application/x-www-form-urlencoded; charset=no-such-charset", b"a=b"),
]


@pytest.mark.parametrize(("content_type", "body"), MALFORMED_FORMS)
async def test_a_form_aiohttp_cannot_parse_is_a_400_on_every_form_porter_reads(
    porter: PorterFactory, smtp_server: Any, content_type: str, body: bytes
) -> None:
    from auth.oidc_settings import OidcProviderSettings, OidcSettings
    from tests.smtp_fixture import settings_for

    oidc = OidcSettings(
        providers=(OidcProviderSettings(id="idp", issuer="http://127.0.0.1:9", client_id="p"),)
    )
    client = await porter(
        logged_in=False, sections={"mail": settings_for(smtp_server), "oidc": oidc}
    )
    paths = (
        "/porter/login",
        "/porter/logout",
        "/api/v0/login/",
        "/porter/feedback",
        "/porter/oidc/backchannel",
    )
    for path in paths:
        async with client.post(
            path, data=body, headers={"Content-Type": content_type, "Origin": "null"}
        ) as resp:
            assert resp.status == 400, (path, resp.status, await resp.text())
    assert smtp_server.inbox.messages == []  # nothing was a crash to mail about
