"""`run.py mail-test`: send one test message to the admins and say what the SMTP server did."""

from __future__ import annotations

from dataclasses import dataclass

from mailer.compose import envelope
from mailer.settings import MailSettings
from mailer.smtp import DeliveryError, deliver, server_name


@dataclass(frozen=True)
class MailTestResult:
    """The outcome of a test mail: `ok`, and one line for the admin (never the password)."""

    ok: bool
    message: str


async def send_test_mail(settings: MailSettings) -> MailTestResult:
    """Send a test message to `settings.admins` now, once, without retries."""
    if not settings.admins:
        return MailTestResult(False, "no admins configured: set admins in [mail]")
    body = (
        "This is a test message from omero-porter.\n\n"
        f"It was sent via {server_name(settings)} from {settings.server_email}.\n"
        "Admin error mail will arrive the same way.\n"
    )
    if not settings.enabled:
        body += "\nNote: mail is disabled (enabled = false): porter sends no error mail.\n"
    message = envelope(f"{settings.email_subject_prefix}Test message", body, settings)
    try:
        delivered = await deliver(message, settings)
    except DeliveryError as exc:
        return MailTestResult(False, exc.reason)
    text = f"delivered to {delivered.accepted} admin(s) via {delivered.via}"
    if delivered.refused:
        text += f"; refused: {', '.join(delivered.refused)}"
    if not settings.enabled:
        text += " (note: enabled = false, porter sends no error mail)"
    return MailTestResult(True, text)
