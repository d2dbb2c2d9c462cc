"""`mail-test` sends one message and reports the SMTP outcome in words, never the password."""

from __future__ import annotations

from mailer import MailSettings, send_test_mail
from tests.smtp_fixture import (
    SMTP_PASSWORD,
    SMTP_USER,
    CertFiles,
    SmtpServer,
    free_port,
    settings_for,
)


async def test_mail_test_delivers_to_every_admin(smtp_server: SmtpServer) -> None:
    result = await send_test_mail(settings_for(smtp_server))
    assert result.ok
    assert result.message == f"delivered to 2 admin(s) via smtp 127.0.0.1:{smtp_server.port}"
    [mail] = smtp_server.inbox.messages
    assert mail.message["Subject"] == "[omero-porter] Test message"
    assert set(mail.rcpt_tos) == {"ada@example.org", "bob@example.org"}


async def test_mail_test_over_starttls_with_auth(
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
    result = await send_test_mail(settings)
    assert result.ok, result.message
    assert result.message.endswith("(STARTTLS)")
    assert len(smtp_tls_server.inbox.messages) == 1


async def test_mail_test_reports_a_closed_port() -> None:
    port = free_port()
    result = await send_test_mail(settings_for(port))
    assert not result.ok
    assert result.message == f"connection refused to 127.0.0.1:{port}"


async def test_mail_test_reports_a_wrong_password_without_showing_it(
    smtp_tls_server: SmtpServer,
    smtp_cert: CertFiles,
) -> None:
    wrong = "Wr0ng-" + SMTP_PASSWORD
    settings = settings_for(
        smtp_tls_server,
        email_use_tls=True,
        tls_ca_file=smtp_cert.ca_file,
        email_host_user=SMTP_USER,
        email_host_password=wrong,
    )
    result = await send_test_mail(settings)
    assert not result.ok
    assert result.message.startswith(
        f"authentication failed for user 'porter' at 127.0.0.1:{smtp_tls_server.port}"
    )
    assert wrong not in result.message
    assert smtp_tls_server.inbox.messages == []


async def test_mail_test_reports_an_untrusted_certificate(smtp_tls_server: SmtpServer) -> None:
    settings = settings_for(
        smtp_tls_server,
        email_use_tls=True,
        email_host_user=SMTP_USER,
        email_host_password=SMTP_PASSWORD,
    )
    result = await send_test_mail(settings)  # the system CAs do not know the test's certificate
    assert not result.ok
    assert result.message.startswith("TLS failed with 127.0.0.1:")
    assert "CERTIFICATE_VERIFY_FAILED" in result.message


async def test_mail_test_without_admins_says_so() -> None:
    result = await send_test_mail(MailSettings())
    assert result == result.__class__(False, "no admins configured: set admins in [mail]")
