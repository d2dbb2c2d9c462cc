"""[limits]: a storm of anonymous clients must not take OMERO.web away from logged-in users.

The upstream is the echo server's /busy view, a small OMERO.web modelled (a few threads,
a fixed service time, a FIFO queue behind them, as gunicorn's); the public principal is the
OMERO test server's public user; clients come from several networks through a trusted
proxy's X-Forwarded-For."""

from __future__ import annotations

import asyncio
import logging
import re
import signal
from dataclasses import replace
from pathlib import Path
from typing import Any, cast

import aiohttp
import pytest
from aiohttp.test_utils import TestClient

from filters.limits import LimitsSettings, MemoryRates, Rate, network
from proxy.admission import Admission, Overloaded
from proxy.config import ConfigError
from proxy.limits import LIMITS
from proxy.log import AccessLine
from proxy.settings import load_settings
from tests.gateway_fixtures import GatewayFactory, cookieless_get, log_in
from tests.omero_sim.fixture import OmeroSim
from tests.porter_fixtures import OPERATOR, PorterFactory, Upstream
from tests.session_fixtures import public_sections
from tests.test_sso import Idp, bearer, sso_sections

Client = TestClient[Any, Any]
TRUSTED = ("127.0.0.1/32",)


def storm_sections(sim: OmeroSim, **limits: Any) -> dict[str, Any]:
    sections = public_sections(sim, url_filter="^/busy/.*")
    sections["limits"] = LimitsSettings(**{"allow_from": (), **limits})
    return sections


async def get(
    client: Client,
    path: str,
    *,
    net: str | None = None,
    user: bool = False,
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, str], str]:
    """GET `path` as a visitor of network `net` (through the trusted proxy), or as the
    client's logged-in user."""
    headers = dict(headers or {})
    if net is not None:
        headers["X-Forwarded-For"] = net
    if user:
        async with client.get(path, headers=headers, allow_redirects=False) as resp:
            return resp.status, dict(resp.headers), await resp.text()
    url = client.make_url(path)
    async with (
        aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as anonymous,
        anonymous.get(url, headers=headers, allow_redirects=False) as resp,
    ):
        return resp.status, dict(resp.headers), await resp.text()


# -- admission ---------------------------------------------------------------------------------


async def test_a_freed_slot_goes_to_a_waiting_user_before_any_public_request() -> None:
    admission = Admission(4, user_share=0.25, public_share=0.75, timeout=5)
    assert (admission.headroom, admission.public_max) == (1, 3)
    order: list[str] = []
    release = asyncio.Event()

    async def hold(kind: Any, name: str) -> None:
        async with admission.slot(kind):
            order.append(name)
            await release.wait()

    holders = [asyncio.create_task(hold("public", f"p{n}")) for n in range(3)]
    await asyncio.sleep(0)
    assert admission.busy == {"user": 0, "public": 3}  # the public principal's most
    public_waiters = [asyncio.create_task(hold("public", f"w{n}")) for n in range(3)]
    await asyncio.sleep(0)
    assert admission.waiting("public") == 3  # one of OMERO.web's threads kept for users
    users = [asyncio.create_task(hold("user", f"u{n}")) for n in (1, 2, 3)]
    await asyncio.sleep(0)
    assert order[-2:] == ["u1", "u2"]  # the kept thread, then the headroom: no wait
    assert admission.busy == {"user": 2, "public": 3}
    assert admission.waiting("user") == 1  # u3: every slot is taken
    release.set()  # every holder leaves: the waiting user is admitted before the public
    await asyncio.gather(*holders, *users, *public_waiters)
    assert order.index("u3") < order.index("w0")
    assert order[-3:] == ["w0", "w1", "w2"]
    assert admission.busy == {"user": 0, "public": 0}


async def test_a_request_that_waits_past_the_bound_is_refused_and_frees_nothing() -> None:
    admission = Admission(1, user_share=0.0, public_share=1.0, timeout=0.05)
    async with admission.slot("public"):
        with pytest.raises(Overloaded) as refused:
            async with admission.slot("public"):
                pass
        assert refused.value.retry_after == 1
        assert admission.busy == {"user": 0, "public": 1}
    assert admission.busy == {"user": 0, "public": 0}
    assert admission.waiting("public") == 0


async def test_users_are_served_while_a_public_storm_fills_omero_web(
    echo_upstream: Upstream, porter: PorterFactory, omero_sim: OmeroSim, tmp_path: Path
) -> None:
    echo_upstream.state.threads, echo_upstream.state.service_time = 4, 0.05
    idp = Idp(tmp_path)
    sections = {
        **storm_sections(omero_sim, upstream_slots=4, queue_timeout=0.25, public_rate=0),
        "sso": sso_sections(omero_sim, idp)["sso"],
        "omero": sso_sections(omero_sim, idp)["omero"],
    }
    client = await porter(sections=sections, trusted_proxies=TRUSTED)
    token = bearer(idp.token("bob"))
    stop = asyncio.Event()
    public: list[tuple[int, dict[str, str]]] = []

    async def crawler(n: int) -> None:
        page = 0
        while not stop.is_set():
            page += 1
            status, headers, _ = await get(client, f"/busy/c{n}/{page}", net=f"10.{n}.0.9")
            public.append((status, headers))

    crawlers = [asyncio.create_task(crawler(n)) for n in range(24)]
    await asyncio.sleep(0.3)  # the storm is on: OMERO.web's threads and porter's slots full
    users = []
    for n in range(15):  # alice, logged in, and bob with a token, throughout
        users.append(await get(client, f"/busy/u/alice/{n}", user=True))
        users.append(await get(client, f"/busy/u/bob/{n}", headers=token))
    stop.set()
    await asyncio.gather(*crawlers)
    assert [status for status, _, _ in users] == [200] * 30  # no user request refused
    refused = [headers for status, headers in public if status == 503]
    assert refused, "24 crawlers on 4 slots of 50 ms must wait past 0.25 s"
    assert {h["Retry-After"] for h in refused} == {"1"}
    assert all(h["Content-Type"].startswith("text/html") for h in refused)  # porter's page
    assert {status for status, _ in public} <= {200, 503}
    state = echo_upstream.state
    assert state.peak["public"] <= 4  # the slots: never more in OMERO.web's hands
    assert state.peak["user"] == 1  # one at a time, each let through
    ready = await (await client.get("/porter/readyz", headers=OPERATOR)).json()
    detail = ready["checks"]["limits"]["detail"]
    assert "slots user 0 public 0 of 4" in detail  # the storm is over: nothing held
    busiest = re.findall(r"10\.(\d+)\.0\.0/24 (\d+)", detail.split("top networks")[1])
    assert len(busiest) == 10  # the ten busiest of the crawlers' 24 networks, with counts
    assert all(int(n) < 24 and int(count) > 0 for n, count in busiest)


async def test_the_wait_refusal_is_json_for_ajax(
    echo_upstream: Upstream, porter: PorterFactory, omero_sim: OmeroSim
) -> None:
    echo_upstream.state.threads, echo_upstream.state.service_time = 1, 0.3
    sections = storm_sections(omero_sim, upstream_slots=1, queue_timeout=0.05, public_rate=0)
    client = await porter(logged_in=False, sections=sections)
    ajax = {"X-Requested-With": "XMLHttpRequest"}
    first = asyncio.create_task(get(client, "/busy/one"))
    await asyncio.sleep(0.1)
    status, headers, body = await get(client, "/busy/two", headers=ajax)
    assert (status, headers["Retry-After"]) == (503, "1")
    assert headers["Content-Type"].startswith("application/json")
    assert "busy" in body
    assert (await first)[0] == 200


# -- fair shares -------------------------------------------------------------------------------


def test_client_networks_are_slash_24_and_slash_64_by_default() -> None:
    assert network("192.0.2.77", 24, 64) == "192.0.2.0/24"
    assert network("2001:db8:1:2:3:4:5:6", 24, 64) == "2001:db8:1:2::/64"
    assert network("::ffff:192.0.2.77", 24, 64) == "192.0.2.0/24"  # the IPv4 client it is
    assert network("198.51.100.3", 32, 64) == "198.51.100.3/32"
    assert network("not-an-address", 24, 64) == "not-an-address"  # counts alone


async def test_the_gcra_allows_the_burst_then_the_rate() -> None:
    now = [1000.0]
    rates = MemoryRates(clock=lambda: now[0])
    rate = Rate(per_second=2.0, burst=3)
    assert [await rates.hit("k", rate) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert await rates.hit("k", rate) == pytest.approx(0.5)
    now[0] += 0.5
    assert await rates.hit("k", rate) == 0.0
    assert await rates.hit("other", rate) == 0.0  # every key its own


async def test_one_network_is_limited_and_the_others_and_users_are_not(
    echo_upstream: Upstream,
    porter: PorterFactory,
    omero_sim: OmeroSim,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="porter.access")
    sections = storm_sections(omero_sim, public_rate=1.0, public_burst=3)
    client = await porter(sections=sections, trusted_proxies=TRUSTED)
    statuses = [(await get(client, f"/busy/p{n}", net=f"10.1.1.{n}"))[0] for n in range(5)]
    assert statuses == [200, 200, 200, 429, 429]  # five addresses, one /24
    status, headers, body = await get(client, "/busy/x", net="10.1.1.200")
    assert status == 429
    assert int(headers["Retry-After"]) >= 1
    assert "Too many requests" in body
    assert (await get(client, "/busy/y", net="10.1.2.1"))[0] == 200  # the next /24
    assert (await get(client, "/busy/v6", net="2001:db8::1"))[0] == 200
    # a logged-in user from the limited network is not the public principal
    assert (await get(client, "/busy/alice", net="10.1.1.7", user=True))[0] == 200
    # a forged porter cookie does not take a crawler past the limit
    forged = {"Cookie": "porter_session=" + "A" * 43}
    assert (await get(client, "/busy/z", net="10.1.1.8", headers=forged))[0] == 429
    assert echo_upstream.state.count("/busy/x") == 0  # refused before any upstream work
    # the access log says which rule refused
    lines = [
        cast(AccessLine, cast(tuple[Any, ...], r.args)[0]).fields()
        for r in caplog.records
        if r.name == "porter.access"
    ]
    refused = [line for line in lines if line["status"] == 429]
    assert len(refused) == 4
    assert {(line["kind"], line["rule"]) for line in refused} == {("refused", "limit:rate")}


async def test_user_limits_are_their_own_and_off_by_default(
    echo_upstream: Upstream, porter: PorterFactory, omero_sim: OmeroSim
) -> None:
    sections = storm_sections(omero_sim, public_rate=1.0, public_burst=1)
    client = await porter(sections=sections)
    assert {(await get(client, f"/busy/u{n}", user=True))[0] for n in range(20)} == {200}
    sections = storm_sections(omero_sim, user_rate=1.0, user_burst=2)
    limited = await porter(sections=sections)
    statuses = [(await get(limited, f"/busy/u{n}", user=True))[0] for n in range(3)]
    assert statuses == [200, 200, 429]


async def test_allowed_networks_skip_the_limits(
    echo_upstream: Upstream, porter: PorterFactory, omero_sim: OmeroSim
) -> None:
    sections = storm_sections(
        omero_sim, public_rate=1.0, public_burst=1, allow_from=("192.0.2.0/24",)
    )
    client = await porter(sections=sections, trusted_proxies=TRUSTED)
    assert {(await get(client, f"/busy/{n}", net="192.0.2.9"))[0] for n in range(5)} == {200}
    # by default loopback is allowed: a front proxy missing from trusted_proxies would
    # otherwise make every visitor one client
    default = await porter(
        logged_in=False, sections={**sections, "limits": LimitsSettings(public_burst=1)}
    )
    assert {(await get(default, f"/busy/d{n}"))[0] for n in range(5)} == {200}


async def test_an_unparseable_forwarded_address_gets_a_defined_answer(
    echo_upstream: Upstream, porter: PorterFactory, omero_sim: OmeroSim
) -> None:
    sections = storm_sections(omero_sim, public_rate=1.0, public_burst=1)
    client = await porter(sections=sections, trusted_proxies=TRUSTED)
    for forwarded in ("not-an-ip", "10.0.0.1, ???", "[::1", "1.2.3.4:80", ""):
        status, _, _ = await get(client, "/busy/odd", headers={"X-Forwarded-For": forwarded})
        assert status in (200, 400, 429), forwarded


# -- bots --------------------------------------------------------------------------------------


async def test_denied_agents_get_403_before_anything_else_and_robots_txt_is_served(
    echo_upstream: Upstream, porter: PorterFactory, omero_sim: OmeroSim, tmp_path: Path
) -> None:
    robots = tmp_path / "robots.txt"
    robots.write_text("User-agent: *\nDisallow: /webclient/\n")
    sections = storm_sections(
        omero_sim, deny_agents=("GPTBot|CCBot", "Bytespider"), robots_txt=str(robots)
    )
    client = await porter(sections=sections, trusted_proxies=TRUSTED)
    bot = {"User-Agent": "Mozilla/5.0 AppleWebKit/537.36 (compatible; GPTBot/1.2)"}
    seen = len(echo_upstream.state.received)
    status, headers, body = await get(client, "/busy/a", net="10.9.0.1", headers=bot)
    assert (status, body.strip()) == (403, "This client is not served here.")
    assert headers["Cache-Control"] == "no-store"
    assert len(echo_upstream.state.received) == seen
    assert (await get(client, "/busy/b", net="10.9.0.1", headers={"User-Agent": "Firefox"}))[
        0
    ] == 200
    async with client.get("/robots.txt") as resp:
        assert resp.status == 200
        assert await resp.text() == robots.read_text()


# -- bad settings ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("upstream_slots", "-1"),
        ("queue_timeout", "0"),
        ("public_rate", "-5"),
        ("public_burst", "0"),
        ("public_share", "0"),
        ("user_share", "-0.1"),
        ("ipv4_prefix", "0"),
        ("deny_agents", '["(a|aa)+"]'),
        ("allow_from", '["not-a-network"]'),
        ("robots_txt", '"/nonexistent/robots.txt"'),
    ],
)
def test_a_wrong_limit_names_its_key(tmp_path: Path, key: str, value: str) -> None:
    config = tmp_path / "c.toml"
    config.write_text(f"[limits]\n{key} = {value}\n")
    with pytest.raises(ConfigError) as found:
        load_settings(config, environ={})
    assert [p.key for p in found.value.problems] == [f"limits.{key}"]


def test_slots_follow_omero_webs_workers_and_porters_processes() -> None:
    limits = LimitsSettings(omero_web_workers=8, omero_web_threads=2)
    assert (limits.slots(1), limits.slots(4), limits.slots(32)) == (17, 5, 2)
    assert replace(limits, upstream_slots=6).slots(4) == 6


# -- Redis: shared across processes, and when it is gone ------------------------------------


async def test_the_rate_is_shared_through_redis_and_a_redis_outage_lets_requests_through(
    echo_upstream: Upstream,
    porter: PorterFactory,
    omero_sim: OmeroSim,
    redis_server_factory: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    from tests.keys import TEST_SECRET_KEY
    from tests.redis_fixture import redis_sessions

    server = redis_server_factory()
    sections = storm_sections(omero_sim, public_rate=0.5, public_burst=2)
    sections["session"] = redis_sessions(server)
    one = await porter(
        sections=sections, trusted_proxies=TRUSTED, secret_key=TEST_SECRET_KEY, logged_in=False
    )
    two = await porter(
        sections=sections, trusted_proxies=TRUSTED, secret_key=TEST_SECRET_KEY, logged_in=False
    )
    net = "172.16.5.1"
    answers = [(await get(c, "/busy/r", net=net))[0] for c in (one, two, one, two)]
    assert answers == [200, 200, 429, 429]  # one burst for both processes
    caplog.set_level(logging.WARNING, logger="porter.limits")
    assert server._process is not None
    server._process.send_signal(signal.SIGSTOP)  # Redis stops answering mid-storm
    try:
        during = [(await get(one, "/busy/r", net=f"172.17.{n}.1"))[0] for n in range(4)]
    finally:
        server._process.send_signal(signal.SIGCONT)
    assert 500 not in during
    warnings = [r for r in caplog.records if r.name == "porter.limits"]
    assert len(warnings) == 1
    assert "rate limits are off" in warnings[0].getMessage()


async def test_real_omero_web_serves_users_and_the_public_in_turn_and_no_slot_leaks(
    gateway: GatewayFactory, omero_sim: OmeroSim
) -> None:
    ping = "/webclient/keepalive_ping/"
    sections = {
        **public_sections(omero_sim, url_filter=f"^{ping}$"),
        "limits": LimitsSettings(upstream_slots=1, allow_from=()),
    }
    client = await gateway(sections=sections)
    assert (await log_in(client, "alice", omero_sim.users["alice"])).status == 303

    async def alice() -> tuple[int, str]:
        async with client.get(ping) as resp:
            return resp.status, await resp.text()

    answers = await asyncio.gather(
        *(cookieless_get(client, ping) for _ in range(30)), *(alice() for _ in range(10))
    )
    assert answers == [(200, "OK")] * 40  # one at a time through one slot, nobody refused
    admission = client.app[LIMITS].admission
    assert admission.busy == {"user": 0, "public": 0}
    assert (admission.waiting("user"), admission.waiting("public")) == (0, 0)


async def test_refusals_and_slots_are_in_the_metrics(
    echo_upstream: Upstream, porter: PorterFactory, omero_sim: OmeroSim
) -> None:
    from proxy.settings import MetricsSettings
    from tests.test_metrics import sample

    sections = {
        **storm_sections(omero_sim, public_rate=1.0, public_burst=1),
        "metrics": MetricsSettings(allow_from=("127.0.0.0/8",)),
    }
    client = await porter(sections=sections, trusted_proxies=TRUSTED)

    async def exposition() -> str:
        async with client.get("/porter/metrics", headers=OPERATOR) as resp:
            return await resp.text()

    before = await exposition()
    statuses = [(await get(client, f"/busy/m{n}", net="10.7.7.7"))[0] for n in range(4)]
    assert statuses == [200, 429, 429, 429]
    after = await exposition()
    rate = 'porter_limit_refusals_total{reason="rate"}'
    assert sample(after, rate) - sample(before, rate) == 3
    for name in ("porter_upstream_slots_busy", "porter_upstream_slots_waiting"):
        assert f'{name}{{class="public"}}' in after
    assert 'porter_upstream_slot_wait_seconds_count{class="public"}' in after
    assert "10.7.7" not in after  # networks are never labels
