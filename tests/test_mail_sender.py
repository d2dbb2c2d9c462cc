"""The sender never blocks or raises on the request path; every mail not sent is counted."""

from __future__ import annotations

import asyncio
import logging

import pytest

from mailer import MailSender, MailSettings, Report
from tests.smtp_fixture import (
    SMTP_PASSWORD,
    SMTP_USER,
    CertFiles,
    SmtpServer,
    free_port,
    settings_for,
)
from tests.test_mail_dedup import view


def failure(n: int) -> Report:
    """Distinct failures (distinct paths), so dedup lets each one through."""
    return Report(kind="upstream_error", request_id=f"req-{n}", path=f"/p{view(n)}", status=500)


async def test_full_queue_counts_the_loss_and_submit_returns_false(
    smtp_server: SmtpServer,
) -> None:
    sender = MailSender(settings_for(smtp_server, queue_size=2))  # not started: nothing drains
    results = [sender.submit(failure(n)) for n in range(3)]
    assert results == [True, True, False]
    assert sender.counters().lost_queue_full == 1
    assert sender.waiting == 2


async def test_stop_drains_the_queue_before_returning(smtp_server: SmtpServer) -> None:
    sender = MailSender(settings_for(smtp_server), tick=0.02)
    for n in range(10):
        sender.submit(failure(n))
    await sender.start()
    await sender.stop(drain_timeout=30)
    assert len(smtp_server.inbox.messages) == 10
    assert sender.counters().sent == 10
    assert sender.counters().lost == 0


async def test_mail_still_queued_when_the_drain_ends_is_counted_lost() -> None:
    settings = settings_for(free_port(), retries=100, backoff=0.05, backoff_max=0.05)
    sender = MailSender(settings, tick=0.02)
    await sender.start()
    for n in range(3):
        sender.submit(failure(n))
    await sender.stop(drain_timeout=0.1)
    counters = sender.counters()
    assert counters.lost_shutdown == 3
    assert counters.sent == 0
    assert sender.waiting == 0


async def test_retries_exhausted_count_the_mail_as_undeliverable(
    caplog: pytest.LogCaptureFixture,
) -> None:
    port = free_port()
    sender = MailSender(settings_for(port, retries=2, backoff=0.01, backoff_max=0.01), tick=0.02)
    with caplog.at_level(logging.WARNING, logger="porter.mailer"):
        async with sender:
            sender.submit(failure(1))
            while sender.counters().lost_undeliverable == 0:
                await asyncio.sleep(0.02)
    counters = sender.counters()
    assert counters.retries == 2
    assert counters.lost_undeliverable == 1
    assert f"connection refused to 127.0.0.1:{port}" in caplog.text


async def test_wrong_smtp_password_is_not_retried_and_never_logged(
    smtp_tls_server: SmtpServer,
    smtp_cert: CertFiles,
    caplog: pytest.LogCaptureFixture,
) -> None:
    settings = settings_for(
        smtp_tls_server,
        email_use_tls=True,
        tls_ca_file=smtp_cert.ca_file,
        email_host_user=SMTP_USER,
        email_host_password="wrong-" + SMTP_PASSWORD,
        retries=5,
    )
    with caplog.at_level(logging.DEBUG, logger="porter.mailer"):
        async with MailSender(settings, tick=0.02) as sender:
            sender.submit(failure(1))
            while sender.counters().lost_undeliverable == 0:
                await asyncio.sleep(0.02)
    assert sender.counters().retries == 0
    assert "authentication failed" in caplog.text
    assert SMTP_PASSWORD not in caplog.text


async def test_inactive_mail_accepts_nothing() -> None:
    sender = MailSender(MailSettings(admins=()))
    assert sender.submit(failure(1)) is False
    disabled = MailSender(MailSettings(enabled=False, admins=(("A", "a@example.org"),)))
    assert disabled.submit(failure(1)) is False
    assert sender.counters().inactive == 1
    assert sender.counters().lost == 0


async def test_submit_after_stop_is_refused_and_counted(smtp_server: SmtpServer) -> None:
    sender = MailSender(settings_for(smtp_server), tick=0.02)
    await sender.start()
    await sender.stop()
    assert sender.submit(failure(1)) is False
    assert sender.counters().lost_shutdown == 1
