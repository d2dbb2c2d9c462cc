"""No credential planted in a failing request reaches the mail the SMTP server receives."""

from __future__ import annotations

import base64
import secrets
import string
import uuid
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, quote_plus

import jwt
import pytest

from mailer import MailSender, Report
from tests.smtp_fixture import Received, SmtpServer, settings_for


@dataclass(frozen=True)
class Planted:
    password: str
    omero_session_key: str
    django_sessionid: str
    csrf_token: str
    porter_cookie: str
    jwt: str
    basic: str

    def all(self) -> frozenset[str]:
        return frozenset(vars(self).values())


def plant() -> Planted:
    alnum = string.ascii_lowercase + string.digits
    return Planted(
        password="Tr0ub4dor&3horse",
        omero_session_key=str(uuid.uuid4()),
        django_sessionid="".join(secrets.choice(alnum) for _ in range(32)),
        csrf_token="".join(secrets.choice(string.ascii_letters + string.digits) for _ in range(64)),
        porter_cookie=secrets.token_urlsafe(32),
        jwt=jwt.encode({"sub": "alice", "email": "alice@example.org"}, "k" * 32, "HS256"),
        basic=base64.b64encode(b"alice:Tr0ub4dor&3horse").decode(),
    )


def leaky_login(p: Planted) -> None:
    """Porter code failing with credentials in its exception message, as careless code does."""
    payload = {"password": p.password, "token": p.jwt}
    raise RuntimeError(
        f"join failed: bsession={p.omero_session_key} payload={payload!r} "
        f"Cookie: sessionid={p.django_sessionid}; csrftoken={p.csrf_token}"
    )


def failing_request(p: Planted, known: frozenset[str]) -> list[Report]:
    """One report of each kind for a request that carries every secret."""
    query = (
        f"show=image-1&bsession={p.omero_session_key}&password={quote_plus(p.password)}"
        f"&csrfmiddlewaretoken={p.csrf_token}&jwt={p.jwt}"
    )
    headers = (
        (
            "Cookie",
            f"porter_session={p.porter_cookie}; sessionid={p.django_sessionid}; "
            f"csrftoken={p.csrf_token}",
        ),
        ("Authorization", f"Bearer {p.jwt}"),
        ("Proxy-Authorization", f"Basic {p.basic}"),
        ("X-CSRFToken", p.csrf_token),
        (
            "Referer",
            f"https://omero.example.org/webclient/?bsession={p.omero_session_key}"
            f"&server=1&password={quote(p.password)}",
        ),
        ("User-Agent", "Mozilla/5.0 (X11; Linux x86_64)"),
    )
    common: dict[str, Any] = {
        "method": "POST",
        "query": query,
        "user": "alice",
        "client": "192.0.2.7",
        "server_id": 1,
        "headers": headers,
        "secrets": known,
    }
    try:
        leaky_login(p)
    except RuntimeError as exc:
        crash = Report.for_exception(exc, "req-exc", path="/webclient/login/", **common)
    debug_page = (
        "<html><body><h1>Error</h1><table>"
        f"<tr><td>HTTP_COOKIE</td><td>'sessionid={p.django_sessionid}; "
        f"csrftoken={p.csrf_token}'</td></tr>"
        f"<tr><td>HTTP_AUTHORIZATION</td><td>Bearer {p.jwt}</td></tr>"
        f"<tr><td>QUERY_STRING</td><td>bsession={p.omero_session_key}&amp;server=1</td></tr>"
        f'<tr><td>POST</td><td>{{"password": "{p.password}"}}</td></tr>'
        "</table></body></html>"
    )
    upstream = Report(
        kind="upstream_error",
        request_id="req-up",
        path="/webclient/api/",
        status=500,
        excerpt=debug_page,
        **common,
    )
    feedback = Report(
        kind="feedback",
        request_id="req-fb",
        path="/webclient/feedback/",
        comment=f"it broke, my password is {p.password}" if known else "it broke",
        **common,
    )
    return [crash, upstream, feedback]


def assert_clean(mail: Received, p: Planted) -> None:
    readable = mail.text
    raw = mail.raw.decode("ascii", "replace")
    for secret in p.all():
        for form in {secret, quote(secret, safe=""), quote_plus(secret)}:
            assert form not in readable, f"a planted secret is in mail {mail.message['Subject']}"
            assert form not in raw, f"a planted secret is in raw mail {mail.message['Subject']}"
    shown = [line.strip().lower() for line in readable.splitlines() if line.startswith("  ")]
    forbidden = ("cookie:", "authorization:", "proxy-authorization:", "x-csrftoken:")
    assert not [line for line in shown if line.startswith(forbidden)]


@pytest.mark.parametrize("known", [True, False], ids=["secrets-known", "secrets-by-shape"])
async def test_no_planted_secret_reaches_the_delivered_mail(
    smtp_server: SmtpServer, known: bool
) -> None:
    p = plant()
    reports = failing_request(p, p.all() if known else frozenset())
    async with MailSender(settings_for(smtp_server), tick=0.02) as sender:
        for report in reports:
            assert sender.submit(report)
        mails = await smtp_server.inbox.wait_for(len(reports))
    for mail in mails:
        assert_clean(mail, p)
    by_id = {m.message["X-Porter-Request-Id"]: m.text for m in mails}
    # What is not secret is still there for the admin.
    assert "show=image-1" in by_id["req-exc"]
    assert "User-Agent: Mozilla/5.0 (X11; Linux x86_64)" in by_id["req-exc"]
    assert "in leaky_login" in by_id["req-exc"]
    assert (
        "Referer: https://omero.example.org/webclient/?bsession=[masked]&server=1"
        in (by_id["req-up"])
    )
    assert "HTTP_COOKIE" in by_id["req-up"]
    assert "it broke" in by_id["req-fb"]
