"""The access log and porter's own lines as JSON (and text): one parsable line each, the
fields an operator needs, and never a secret, across a login, a public request, a token
request and an upstream error."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from yarl import URL

from auth.public_settings import PublicSessionSettings
from filters.settings import PublicRuleSettings
from proxy.log import ACCESS_FIELDS, formatter
from proxy.settings import LogSettings
from tests.gateway_fixtures import form_token
from tests.omero_sim.fixture import OmeroSim
from tests.porter_fixtures import PorterFactory, PorterProcess, Upstream
from tests.test_sso import Idp, bearer, sso_sections


@pytest.fixture
def json_log() -> Iterator[io.StringIO]:
    """Every log record of the test, formatted by porter's JSON formatter."""
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(formatter("json"))
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        yield out
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


def lines_of(log: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in log.getvalue().splitlines()]


async def test_the_json_log_holds_every_field_and_no_secret(
    echo_upstream: Upstream,
    porter: PorterFactory,
    omero_sim: OmeroSim,
    tmp_path: Path,
    json_log: io.StringIO,
) -> None:
    idp = Idp(tmp_path)
    sections = sso_sections(omero_sim, idp)
    sections["public"] = PublicRuleSettings(enabled=True, url_filter="^/public/.*")
    sections["public_session"] = PublicSessionSettings(
        enabled=True, user="public", password=omero_sim.users["public"]
    )
    sections["log"] = LogSettings(format="json")
    client = await porter(logged_in=False, sections=sections)
    password = omero_sim.users["alice"]

    page = await (await client.get("/porter/login")).text()
    csrf = form_token(page)
    wrong = {"csrf_token": csrf, "username": "alice", "password": "Wr0ng-pa55word"}
    assert (await client.post("/porter/login", data=wrong, allow_redirects=False)).status == 401
    page = await (await client.get("/porter/login")).text()
    right = {"csrf_token": form_token(page), "username": "alice", "password": password}
    assert (await client.post("/porter/login", data=right, allow_redirects=False)).status == 303
    cookie = next(c.value for c in client.session.cookie_jar if c.key == "porter_session")
    assert (await client.get("/echo/x")).status == 200  # alice
    assert (await client.get("/django-500/x?token=secret-in-query")).status == 500
    token = idp.token("bob")
    async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as anonymous:
        async with anonymous.get(client.make_url("/public/x")) as resp:
            assert resp.status == 200
        async with anonymous.get(client.make_url("/echo/t"), headers=bearer(token)) as resp:
            assert resp.status == 200
        async with anonymous.get(client.make_url("/private/x"), allow_redirects=False) as resp:
            assert resp.status in (302, 303)
        async with anonymous.get(client.make_url("/porter/healthz")) as resp:
            assert resp.status == 200
        bad = URL(str(client.make_url("/")) + "a%00b", encoded=True)
        async with anonymous.get(bad, allow_redirects=False) as resp:
            assert resp.status == 400

    lines = lines_of(json_log)  # every line is one JSON object
    # aiohttp.access: the test servers' own request lines (the echo upstream's is OMERO.web's
    # log; porter's runner has none); everything else is porter's
    lines = [line for line in lines if line["logger"] != "aiohttp.access"]
    text = "\n".join(json.dumps(line) for line in lines)
    access = [line for line in lines if line["logger"] == "porter.access"]
    own = [line for line in lines if line["logger"] != "porter.access"]
    assert own
    assert all({"time", "level", "logger", "message"} <= set(line) for line in own)
    assert all(set(ACCESS_FIELDS) <= set(line) for line in access)
    assert not any(line["path"] == "/porter/healthz" for line in access)  # excluded
    by_path = {line["path"]: line for line in access}
    assert by_path["/echo/x"]["kind"] == "user"
    assert by_path["/echo/x"]["user"] == "alice"
    assert by_path["/echo/x"]["upstream_ms"] > 0
    assert by_path["/echo/x"]["bytes"] > 0
    assert by_path["/public/x"]["kind"] == "public"
    assert by_path["/public/x"]["rule"].startswith("public.url_filter")
    assert by_path["/echo/t"]["kind"] == "token"
    assert by_path["/echo/t"]["user"] == "bob"
    assert by_path["/private/x"]["kind"] == "denied"
    assert by_path["/a%00b"]["kind"] == "bad_request"
    assert by_path["/porter/login"]["kind"] == "porter"
    assert by_path["/django-500/x"]["status"] == 500
    assert all(line["rid"] for line in access)

    secrets = {password, "Wr0ng-pa55word", cookie, token, "secret-in-query", csrf}
    secrets.update(s["key"] for s in omero_sim.sessions())
    for received in echo_upstream.state.received:  # OMERO.web's session cookies porter held
        for value in received.headers.getall("Cookie", ()):
            secrets.update(part.split("=", 1)[1] for part in value.split("; "))
    assert len(secrets) >= 9
    for secret in secrets:
        assert secret not in text, f"a secret of {len(secret)} characters is in the log"


async def test_porter_run_with_json_logs_writes_json_lines(
    echo_upstream: Upstream, porter_process: Any
) -> None:
    handle: PorterProcess = porter_process({"log": {"format": "json"}}, upstream=echo_upstream.url)
    async with aiohttp.ClientSession() as session:
        for path in ("/echo/one", "/porter/readyz", "/echo/two?q=secret-in-query"):
            async with session.get(handle.url + path, allow_redirects=False) as resp:
                await resp.read()
    assert handle.stop() == 0
    lines = [json.loads(line) for line in handle.log().splitlines() if line.strip()]
    paths = [line["path"] for line in lines if line["logger"] == "porter.access"]
    assert paths == ["/echo/one", "/echo/two"]
    assert any(line.get("message", "").startswith("porter listening") for line in lines)
    assert "secret-in-query" not in handle.log()


def test_an_access_line_rendered_without_a_record_reads_as_the_record_would() -> None:
    """The log thread renders access lines from the queue's (time, line) with no LogRecord:
    byte for byte what logging would have written, in both formats."""
    import time as time_

    from proxy.log import AccessLine, access_record, formatter

    fields = ("rid", "127.0.0.1", "GET", "/x", 200, 12, 0.4, None, "public", "public", "r", "HIT")
    for kind in ("text", "json"):
        made = formatter(kind)
        for created in (time_.time(), 1764770281.987, 1764770282.0005, 1764770399.9999):
            line = AccessLine(*fields)
            direct = made.format_access(created, line)  # type: ignore[attr-defined]
            assert direct == made.format(access_record(created, line)), kind
