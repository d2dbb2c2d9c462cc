"""Admin error mail through the running proxy, to a real SMTP server (aiosmtpd).

The SMTP fixture comes first in every test's arguments so it outlives porter: porter's
shutdown delivers what is queued, and must find the server still there.
"""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

from aiohttp import web

import run
from mailer import MailSettings
from proxy.keys import MAILER
from tests.porter_fixtures import PorterFactory, Upstream, free_port
from tests.smtp_fixture import SmtpServer, settings_for


class Boom(RuntimeError):
    pass


async def _raise(request: web.Request) -> web.Response:
    raise Boom("porter broke while handling the request")


def add_boom(app: web.Application) -> None:
    # A route that fails inside porter: the one way to make porter itself raise on demand.
    app.router.add_get("/test-only/boom", _raise)


def mail(server: SmtpServer | int, **overrides: object) -> dict[str, MailSettings]:
    return {"mail": settings_for(server, **overrides)}


async def test_porter_exception_gives_500_page_and_mail_with_trace(
    smtp_server: SmtpServer, echo_upstream: Upstream, porter: PorterFactory
) -> None:
    client = await porter(sections=mail(smtp_server), configure=add_boom)
    resp = await client.get("/test-only/boom", headers={"Accept": "text/html"})
    assert resp.status == 500
    page = await resp.text()
    request_id = resp.headers["X-Request-Id"]
    assert request_id in page
    assert "Traceback" not in page  # debug is off
    [received] = await smtp_server.inbox.wait_for(1)
    assert request_id in received.message["Subject"] or request_id in received.text
    assert "Boom: porter broke while handling the request" in received.text
    assert "_raise" in received.text


async def test_debug_shows_trace_to_browsers_never_to_ajax(
    smtp_server: SmtpServer, echo_upstream: Upstream, porter: PorterFactory
) -> None:
    client = await porter(debug=True, sections=mail(smtp_server), configure=add_boom)
    page = await (await client.get("/test-only/boom", headers={"Accept": "text/html"})).text()
    assert "Traceback" in page
    resp = await client.get("/test-only/boom", headers={"X-Requested-With": "XMLHttpRequest"})
    body = await resp.json()
    assert set(body) == {"error", "status", "request_id"}
    assert "Traceback" not in await resp.text()


async def test_upstream_500_mail_holds_its_page_and_user_gets_porters_page(
    smtp_server: SmtpServer, echo_upstream: Upstream, porter: PorterFactory
) -> None:
    client = await porter(sections=mail(smtp_server))
    resp = await client.get(
        "/django-500/webclient/api/", headers={"X-Requested-With": "XMLHttpRequest"}
    )
    assert resp.status == 500
    text = await resp.text()
    assert "Traceback" not in text  # OMERO.web's trace never reaches an AJAX client
    assert (await resp.json())["request_id"] == resp.headers["X-Request-Id"]
    [received] = await smtp_server.inbox.wait_for(1)
    assert "OMERO.web error 500" in received.message["Subject"]
    assert "image 12 is missing" in received.text


async def test_planted_secrets_never_reach_the_mail(
    smtp_server: SmtpServer, echo_upstream: Upstream, porter: PorterFactory
) -> None:
    omero_key = "6f1c9a3e-2b7d-4e55-9d0a-3c2b1a0f9e8d"
    jwt = (
        "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJhZGEifQ."
        "c2lnbmF0dXJlLW9mLWEtand0LXRva2VuLWhlcmU"
    )
    password = "Hunter2-correct-horse"
    csrf = "Xc9Kq2mP7vR4tY8wZ1aB3dF6gH0jL5nQ"
    cookie = "dj4ngo5ess10n1d3nt1f13rv4lu3xyz"
    client = await porter(sections=mail(smtp_server))
    resp = await client.post(
        f"/django-500/webclient/login/?session_key={omero_key}&passwd={password}&next=/x",
        data={"password": password, "csrfmiddlewaretoken": csrf},
        headers={
            "Cookie": f"sessionid={cookie}; csrftoken={csrf}",
            "Authorization": f"Bearer {jwt}",
            "X-CSRFToken": csrf,
        },
    )
    assert resp.status == 500
    [received] = await smtp_server.inbox.wait_for(1)
    raw = received.raw.decode("utf-8", "replace")
    for secret in (omero_key, jwt, password, csrf, cookie):
        assert secret not in received.text
        assert secret not in raw
    assert "/webclient/login/" in received.text  # the report is still useful


async def test_thousand_identical_failures_give_one_mail_and_one_digest(
    smtp_server: SmtpServer, echo_upstream: Upstream, porter: PorterFactory
) -> None:
    client = await porter(sections=mail(smtp_server), configure=add_boom, access_log=False)
    for _ in range(1000):
        resp = await client.get("/test-only/boom")
        assert resp.status == 500
        resp.release()
    await smtp_server.inbox.wait_for(1)
    counters = client.app[MAILER].counters()
    assert counters.folded == 999
    await client.close()  # shutting down mails the open digest
    received = await smtp_server.inbox.wait_for(2)
    assert len(received) == 2
    assert "999" in received[1].text


async def test_provoked_omero_web_errors_cannot_use_up_the_mail_of_a_porter_crash(
    smtp_server: SmtpServer, echo_upstream: Upstream, porter: PorterFactory
) -> None:
    cap = 5
    client = await porter(sections=mail(smtp_server, max_per_hour=cap), configure=add_boom)
    for n in range(30):  # one view, thirty images: one failure, one mail
        assert (await client.get(f"/django-500/webgateway/render_image/{n}/")).status == 500
    for name in "abcdefghij":  # ten views: the cap stops them
        assert (await client.get(f"/django-500/webclient/view_{name}/")).status == 500
    assert (await client.get("/test-only/boom")).status == 500
    received = await smtp_server.inbox.wait_for(cap + 1)
    await asyncio.sleep(0.3)  # nothing more comes before the windows close
    received = list(smtp_server.inbox.messages)
    crashes = [m for m in received if "Boom: porter broke" in m.text]
    assert len(crashes) == 1  # the crash still reached the admins
    assert len(received) == cap + 1
    render = [m for m in received if "render_image" in m.text]
    assert len(render) == 1


async def test_smtp_down_leaves_requests_alone_and_mail_arrives_later(
    start_smtp: object, echo_upstream: Upstream, porter: PorterFactory
) -> None:
    from collections.abc import Callable

    assert callable(start_smtp)
    starter: Callable[..., SmtpServer] = start_smtp
    port = free_port()
    client = await porter(sections=mail(port), configure=add_boom)
    resp = await client.get("/test-only/boom", headers={"Accept": "application/json"})
    assert resp.status == 500
    assert (await resp.json())["status"] == 500
    server = starter(port=port)
    [received] = await server.inbox.wait_for(1)
    assert "Boom" in received.text


async def test_unreachable_upstream_is_reported_as_unavailable(
    smtp_server: SmtpServer, porter: PorterFactory
) -> None:
    client = await porter(upstream=f"http://127.0.0.1:{free_port()}", sections=mail(smtp_server))
    assert (await client.get("/webclient/")).status == 502
    [received] = await smtp_server.inbox.wait_for(1)
    assert "unavailable" in received.message["Subject"].lower()


async def test_feedback_form_reaches_the_admins_only(
    smtp_server: SmtpServer, echo_upstream: Upstream, porter: PorterFactory
) -> None:
    client = await porter(sections=mail(smtp_server), configure=add_boom)
    page = await (await client.get("/test-only/boom", headers={"Accept": "text/html"})).text()
    token = re.search(r'name="csrf_token" value="([^"]+)"', page)
    request_id = re.search(r'name="request_id" value="([^"]+)"', page)
    assert token is not None
    assert request_id is not None
    await smtp_server.inbox.wait_for(1)
    resp = await client.post(
        "/porter/feedback",
        data={
            "csrf_token": token.group(1),
            "request_id": request_id.group(1),
            "comment": "I clicked the image twice",
        },
    )
    assert resp.status == 200
    received = await smtp_server.inbox.wait_for(2)
    assert "I clicked the image twice" in received[1].text
    assert all(r.rcpt_tos for r in received)
    assert echo_upstream.state.received == []


async def test_feedback_without_csrf_token_is_refused(
    smtp_server: SmtpServer, echo_upstream: Upstream, porter: PorterFactory
) -> None:
    client = await porter(sections=mail(smtp_server))
    resp = await client.post("/porter/feedback", data={"request_id": "abc", "comment": "spam"})
    assert resp.status == 403
    assert smtp_server.inbox.messages == []


def test_mail_test_command_reports_good_and_bad_server(
    tmp_path: Path, smtp_server: SmtpServer, capsys: object
) -> None:
    import pytest

    assert isinstance(capsys, pytest.CaptureFixture)
    good = tmp_path / "good.toml"
    good.write_text(
        f'[mail]\nadmins = [["Ada", "ada@example.org"]]\nemail_host = "127.0.0.1"\n'
        f"email_port = {smtp_server.port}\n"
    )
    assert run.main(["mail-test", "--config", str(good)]) == 0
    assert "ok: delivered" in capsys.readouterr().out
    bad = tmp_path / "bad.toml"
    bad.write_text(
        f'[mail]\nadmins = [["Ada", "ada@example.org"]]\nemail_host = "127.0.0.1"\n'
        f"email_port = {free_port()}\nemail_timeout = 2.0\n"
    )
    assert run.main(["mail-test", "--config", str(bad)]) == 1
    assert "failed:" in capsys.readouterr().out
