"""Admin error mail: scrubbed reports, a bounded queue, dedup and digests, SMTP delivery."""

from mailer.mailtest import MailTestResult, send_test_mail
from mailer.report import Report, Trace, trace_of
from mailer.sender import MailCounters, MailSender
from mailer.settings import MailSettings

__all__ = [
    "MailCounters",
    "MailSender",
    "MailSettings",
    "MailTestResult",
    "Report",
    "Trace",
    "send_test_mail",
    "trace_of",
]
