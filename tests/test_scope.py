"""proxy/middleware/scope.py: every request named, its client resolved, logged once."""

from __future__ import annotations

import logging

import pytest

from tests.porter_fixtures import PorterFactory, Upstream


async def test_every_answer_has_its_own_request_id_also_sent_upstream(
    echo_upstream: Upstream, porter: PorterFactory
) -> None:
    client = await porter()
    first = await client.get("/echo")
    second = await client.get("/porter/healthz")
    ids = {first.headers["X-Request-Id"], second.headers["X-Request-Id"]}
    assert len(ids) == 2
    assert echo_upstream.state.received[-1].headers["X-Request-Id"] == first.headers["X-Request-Id"]


async def test_a_trusted_proxys_request_id_is_kept_an_untrusted_ones_is_not(
    echo_upstream: Upstream, porter: PorterFactory
) -> None:
    mine = {"X-Request-Id": "front-proxy-id-1234"}
    trusted = await porter(trusted_proxies=("127.0.0.0/8",))
    resp = await trusted.get("/echo", headers={**mine, "X-Forwarded-For": "203.0.113.9"})
    assert resp.headers["X-Request-Id"] == "front-proxy-id-1234"
    untrusted = await porter()
    resp = await untrusted.get("/echo", headers={**mine, "X-Forwarded-For": "203.0.113.9"})
    assert resp.headers["X-Request-Id"] != "front-proxy-id-1234"
    bad = await trusted.get(
        "/echo", headers={"X-Request-Id": "x y", "X-Forwarded-For": "203.0.113.9"}
    )
    assert bad.headers["X-Request-Id"] != "x y"  # not an id porter would log


async def test_the_access_log_has_one_line_per_request_and_never_the_query(
    echo_upstream: Upstream, porter: PorterFactory, caplog: pytest.LogCaptureFixture
) -> None:
    client = await porter(prefix="/omero")
    with caplog.at_level(logging.INFO, logger="porter.access"):
        resp = await client.get("/omero/echo/x?token=secret-in-query")
    lines = [r.getMessage() for r in caplog.records if r.name == "porter.access"]
    assert len(lines) == 1
    assert '"GET /omero/echo/x" 200' in lines[0]
    assert "secret-in-query" not in lines[0]
    assert resp.headers["X-Request-Id"] in lines[0]


async def test_the_scope_path_is_below_the_prefix(
    echo_upstream: Upstream, porter: PorterFactory
) -> None:
    client = await porter(prefix="/omero")
    assert (await client.get("/omero/porter/healthz")).status == 200
    assert (await client.get("/porter/healthz")).status == 404  # outside the mount
    assert echo_upstream.state.received == []
