"""Reports travel through the sender to a real SMTP server and arrive readable and complete."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from mailer import MailSender, Report
from tests.smtp_fixture import (
    SMTP_PASSWORD,
    SMTP_USER,
    CertFiles,
    SmtpServer,
    free_port,
    settings_for,
)


def failing_handler() -> None:
    """Stands in for porter code that fails while handling a request."""
    raise ValueError("image 42 has no pixels")


async def test_porter_exception_is_mailed_to_every_admin_with_its_traceback(
    smtp_server: SmtpServer,
) -> None:
    try:
        failing_handler()
    except ValueError as exc:
        report = Report.for_exception(
            exc,
            "req-7f3a",
            method="GET",
            path="/webclient/img_detail/42/",
            user="alice",
            client="192.0.2.10",
            server_id=1,
        )
    async with MailSender(settings_for(smtp_server), tick=0.02) as sender:
        assert sender.submit(report)
        [mail] = await smtp_server.inbox.wait_for(1)
    assert set(mail.rcpt_tos) == {"ada@example.org", "bob@example.org"}
    assert mail.mail_from == "porter@example.org"
    assert mail.message["Subject"] == (
        "[omero-porter] Porter error: GET /webclient/img_detail/42/ [req-7f3a]"
    )
    assert mail.message["X-Porter-Request-Id"] == "req-7f3a"
    assert mail.message["Auto-Submitted"] == "auto-generated"
    text = mail.text
    assert "Traceback (most recent call last)" in text
    assert "in failing_handler" in text
    assert "ValueError: image 42 has no pixels" in text
    assert "alice" in text
    assert "192.0.2.10" in text


async def test_upstream_500_debug_page_is_mailed_as_plain_text_traceback(
    smtp_server: SmtpServer,
) -> None:
    debug_page = (
        "<html><body><h1>ValueError at /webclient/</h1>"
        '<textarea id="traceback_area" cols="140" rows="25">'
        "Traceback (most recent call last):\n  File &quot;/opt/omero/web/views.py&quot;, "
        "line 9, in index\nValueError: bad &lt;thing&gt;</textarea></body></html>"
    )
    report = Report(
        kind="upstream_error",
        request_id="req-500",
        method="GET",
        path="/webclient/",
        status=500,
        excerpt=debug_page,
    )
    async with MailSender(settings_for(smtp_server), tick=0.02) as sender:
        sender.submit(report)
        [mail] = await smtp_server.inbox.wait_for(1)
    subject = "[omero-porter] OMERO.web error 500: GET /webclient/ [req-500]"
    assert mail.message["Subject"] == subject
    assert 'File "/opt/omero/web/views.py", line 9, in index' in mail.text
    assert "ValueError: bad <thing>" in mail.text
    assert "<textarea" not in mail.text


async def test_long_upstream_body_is_cut_to_the_excerpt_size(smtp_server: SmtpServer) -> None:
    body = "".join(f"line {n:04d} of the upstream error page\n" for n in range(1000))
    report = Report(
        kind="upstream_error", request_id="req-long", status=500, path="/api/", excerpt=body
    )
    settings = settings_for(smtp_server, excerpt_size=1000)
    async with MailSender(settings, tick=0.02) as sender:
        sender.submit(report)
        [mail] = await smtp_server.inbox.wait_for(1)
    assert "line 0000 of" in mail.text
    assert "line 0030 of" not in mail.text  # 30 lines of 37 characters are more than 1000
    assert "more characters cut" in mail.text


async def test_feedback_comment_reaches_the_admins(smtp_server: SmtpServer) -> None:
    report = Report(
        kind="feedback",
        request_id="req-fb1",
        method="POST",
        path="/webclient/",
        user="public",
        client="198.51.100.4",
        comment="The thumbnail page broke after I clicked 'next'.",
    )
    async with MailSender(settings_for(smtp_server), tick=0.02) as sender:
        sender.submit(report)
        [mail] = await smtp_server.inbox.wait_for(1)
    assert mail.message["Subject"].startswith("[omero-porter] Feedback: POST /webclient/")
    assert "The thumbnail page broke after I clicked 'next'." in mail.text
    assert "public" in mail.text


async def test_starttls_with_self_signed_certificate_trusted_by_ca_file(
    smtp_tls_server: SmtpServer,
    smtp_cert: CertFiles,
) -> None:
    settings = settings_for(
        smtp_tls_server,
        email_use_tls=True,
        tls_ca_file=smtp_cert.ca_file,
        email_host_user=SMTP_USER,
        email_host_password=SMTP_PASSWORD,
    )
    report = Report(kind="unavailable", request_id="req-503", method="GET", path="/", status=503)
    async with MailSender(settings, tick=0.02) as sender:
        sender.submit(report)
        [mail] = await smtp_tls_server.inbox.wait_for(1)
    assert mail.message["Subject"] == "[omero-porter] OMERO.web unavailable 503: GET / [req-503]"
    assert sender.counters().sent == 1


async def test_mail_delivered_once_smtp_comes_back_and_submit_never_raises(
    start_smtp: Callable[..., SmtpServer],
) -> None:
    port = free_port()
    settings = settings_for(port, retries=50, backoff=0.05, backoff_max=0.1)
    async with MailSender(settings, tick=0.02) as sender:
        assert sender.submit(Report(kind="unavailable", request_id="req-down", status=502))
        while sender.counters().retries < 2:  # it has tried, and failed, at least twice
            await asyncio.sleep(0.02)
        server = start_smtp(port=port)
        [mail] = await server.inbox.wait_for(1)
    assert "req-down" in mail.message["Subject"]
    counters = sender.counters()
    assert counters.sent == 1
    assert counters.lost == 0
