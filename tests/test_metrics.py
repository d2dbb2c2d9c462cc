"""Prometheus metrics of one porter process: /porter/metrics for the configured clients only,
and the separate listener. (Several workers summed: tests/test_workers.py.)"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from proxy.config import ConfigError
from proxy.settings import MetricsSettings, load_settings
from tests.porter_fixtures import (
    OPERATOR,
    OPERATOR_TOKEN,
    PorterFactory,
    PorterProcess,
    Upstream,
    free_port,
)
from tests.smtp_fixture import SmtpServer
from tests.smtp_fixture import settings_for as mail_settings


def sample(exposition: str, name: str) -> float:
    """The sum of every sample of `name` (all label sets)."""
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in exposition.splitlines()
        if line.startswith(name + "{") or line.startswith(name + " ")
    )


async def test_porter_metrics_counts_requests_for_operators_only(
    echo_upstream: Upstream, porter: PorterFactory
) -> None:
    metrics = {"metrics": MetricsSettings(allow_from=("127.0.0.0/8",))}
    client = await porter(sections=metrics, operator_token=OPERATOR_TOKEN)
    before = await (await client.get("/porter/metrics", headers=OPERATOR)).text()
    for _ in range(5):
        assert (await client.get("/echo/x")).status == 200
    assert (await client.get("/echo/x?bsession=stolen")).status == 400
    resp = await client.get("/porter/metrics", headers=OPERATOR)
    assert resp.headers["Content-Type"].startswith("text/plain")
    after = await resp.text()
    name = 'porter_requests_total{kind="user",status_class="2xx"}'
    assert sample(after, name) - sample(before, name) == 5
    assert sample(after, "porter_upstream_duration_seconds_count") >= 5
    assert sample(after, "porter_requests_in_flight") == 1  # the scrape itself
    assert "porter_build_info{" in after
    # from loopback without the token: a visitor behind a plain proxy_pass looks just so
    assert (await client.get("/porter/metrics")).status == 404
    relayed = await client.get(
        "/porter/metrics", headers={**OPERATOR, "X-Forwarded-For": "203.0.113.9"}
    )
    assert relayed.status == 404
    others = await porter(
        sections={"metrics": MetricsSettings(allow_from=("10.0.0.0/8",))},
        operator_token=OPERATOR_TOKEN,
    )
    assert (await others.get("/porter/metrics", headers=OPERATOR)).status == 404
    off = await porter(operator_token=OPERATOR_TOKEN)
    assert (await off.get("/porter/metrics", headers=OPERATOR)).status == 404


def test_metrics_on_porters_port_without_an_operator_token_is_refused(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text('[metrics]\nallow_from = ["127.0.0.0/8"]\n')
    with pytest.raises(ConfigError) as found:
        load_settings(config, environ={})
    assert [p.key for p in found.value.problems] == ["metrics.allow_from"]
    assert "proxy.operator_token" in str(found.value)
    config.write_text(
        f'[proxy]\noperator_token = "{OPERATOR_TOKEN}"\n[metrics]\nallow_from = ["127.0.0.0/8"]\n'
    )
    assert load_settings(config, environ={}).metrics.allow_from == ("127.0.0.0/8",)


async def test_a_single_porter_serves_its_metrics_listener(
    echo_upstream: Upstream, porter_process: Callable[..., PorterProcess]
) -> None:
    port = free_port()
    handle = porter_process(
        {"metrics": {"listen": f"127.0.0.1:{port}"}}, upstream=echo_upstream.url
    )
    async with aiohttp.ClientSession() as session:
        for _ in range(3):
            async with session.get(handle.url + "/porter/healthz") as resp:
                assert resp.status == 200
        async with session.get(f"http://127.0.0.1:{port}/metrics") as resp:
            exposition: Any = await resp.text()
    assert sample(exposition, 'porter_requests_total{kind="porter",status_class="2xx"}') == 3
    assert handle.stop() == 0


def test_the_grafana_dashboard_asks_only_for_metrics_porter_exports() -> None:
    import json
    import re
    from pathlib import Path

    from prometheus_client import REGISTRY

    import metrics

    dashboard = json.loads(
        (Path(__file__).resolve().parent.parent / "docs" / "grafana-dashboard.json").read_text()
    )
    asked = {
        re.sub(r"_(bucket|count|sum)$", "", name)
        for panel in dashboard["panels"]
        for target in panel["targets"]
        for name in re.findall(r"porter_[a-z_]+", target["expr"])
    }
    assert metrics.REQUESTS is not None
    exported = {family.name for family in REGISTRY.collect()}
    # counters are exported without their _total in the family name
    exported |= {name + "_total" for name in exported}
    assert len(asked) >= 12
    assert asked <= exported, asked - exported


async def test_omero_sessions_made_and_closed_are_counted_by_reason(
    echo_upstream: Upstream, porter: PorterFactory, omero_sim: Any
) -> None:
    from tests.gateway_fixtures import form_token
    from tests.session_fixtures import omero

    sections = {"metrics": MetricsSettings(allow_from=("127.0.0.0/8",)), "omero": omero(omero_sim)}
    client = await porter(logged_in=False, sections=sections)
    before = await (await client.get("/porter/metrics", headers=OPERATOR)).text()
    page = await (await client.get("/porter/login")).text()
    form = {
        "csrf_token": form_token(page),
        "username": "alice",
        "password": omero_sim.users["alice"],
    }
    assert (await client.post("/porter/login", data=form, allow_redirects=False)).status == 303
    page = await (await client.get("/porter/logout")).text()
    out = await client.post(
        "/porter/logout", data={"csrf_token": form_token(page)}, allow_redirects=False
    )
    assert out.status in (302, 303)
    after = await (await client.get("/porter/metrics", headers=OPERATOR)).text()
    for name in (
        'porter_omero_sessions_created_total{reason="login"}',
        'porter_omero_sessions_closed_total{reason="logout"}',
        'porter_logins_total{result="success"}',
    ):
        assert sample(after, name) - sample(before, name) == 1, name


async def test_server_errors_upstream_errors_and_admin_mail_are_counted_by_cause(
    smtp_server: SmtpServer, echo_upstream: Upstream, porter: PorterFactory
) -> None:
    scrape = {"metrics": MetricsSettings(allow_from=("127.0.0.0/8",))}
    mail = {"mail": mail_settings(smtp_server)}
    client = await porter(sections={**scrape, **mail}, operator_token=OPERATOR_TOKEN)
    dead = await porter(
        upstream=f"http://127.0.0.1:{free_port()}",
        sections={**scrape, **mail},
        operator_token=OPERATOR_TOKEN,
    )  # the same process: its counts are in the same registry
    before = await (await client.get("/porter/metrics", headers=OPERATOR)).text()
    assert (await client.get("/status/503")).status == 503  # OMERO.web says it is unavailable
    assert (await client.get("/status/500")).status == 500  # OMERO.web broke
    assert (await dead.get("/webclient/")).status == 502  # OMERO.web cannot be reached
    await smtp_server.inbox.wait_for(3)
    sent = 'porter_admin_mail_events_total{event="sent"}'
    for _ in range(100):  # the server has a mail before the sender hears it was taken
        after = await (await client.get("/porter/metrics", headers=OPERATOR)).text()
        if sample(after, sent) - sample(before, sent) >= 3:
            break
        await asyncio.sleep(0.05)

    def grew(name: str) -> float:
        return sample(after, name) - sample(before, name)

    assert grew('porter_server_errors_total{status="503"}') == 1
    assert grew('porter_server_errors_total{status="500"}') == 1
    assert grew('porter_server_errors_total{status="502"}') == 1
    assert grew('porter_upstream_errors_total{error="answered",status="503"}') == 1
    assert grew('porter_upstream_errors_total{error="answered",status="500"}') == 1
    assert grew('porter_upstream_errors_total{error="unreachable",status="502"}') == 1
    assert grew('porter_admin_mail_events_total{event="submitted"}') == 3
    assert grew(sent) == 3
    assert 'porter_admin_mail_events_total{event="lost_queue_full"} ' in after  # at 0 from start
