"""The `[mail]` section: who gets admin mail, how it is delivered, and how much of it.

Names follow OMERO.web's (Django's) settings where one exists: `admins` is
`omero.web.admins`, `server_email` is `omero.mail.from`, `email_host` is `omero.mail.host`, ...
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field

# Deliberately simple: one @, no spaces, no angle brackets, no header-breaking characters.
_ADDRESS = re.compile(r"[^@\s<>\"(),;:\\\[\]]+@[^@\s<>\"(),;:\\\[\]]+\Z")


def check_address(value: str) -> None:
    """Raise ValueError when `value` is not a plain e-mail address."""
    if not _ADDRESS.match(value):
        raise ValueError(f"{value!r} is not an e-mail address like name@example.org")


def _check_admins(value: tuple[tuple[str, str], ...]) -> None:
    for name, address in value:
        if any(c in name for c in "\r\n"):
            raise ValueError(f"admin name {name!r} contains a line break")
        check_address(address)


def _is_loopback(host: str) -> bool:
    try:
        return host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _check_prefix(value: str) -> None:
    if any(c in value for c in "\r\n"):
        raise ValueError("must not contain a line break")


@dataclass(frozen=True)
class MailSettings:
    """Admin error mail: recipients, SMTP delivery, queue, dedup and rate limits."""

    enabled: bool = field(
        default=True,
        metadata={"doc": "Send admin error mail (nothing is sent while admins is empty)"},
    )
    admins: tuple[tuple[str, str], ...] = field(
        default=(),
        metadata={
            "doc": 'Who gets error mail, [["Full Name", "email"], ...] (omero.web.admins)',
            "check": _check_admins,
            "example": 'admins = [["Ada Admin", "ada@example.org"]]',
        },
    )
    server_email: str = field(
        default="omero-porter@localhost",
        metadata={"doc": "From address of admin mail (omero.mail.from)", "check": check_address},
    )
    email_host: str = field(
        default="localhost", metadata={"doc": "SMTP server host (omero.mail.host)"}
    )
    email_port: int = field(
        default=25,
        metadata={"doc": "SMTP server port (omero.mail.port)", "min": 1, "max": 65535},
    )
    email_host_user: str | None = field(
        default=None, metadata={"doc": "SMTP user name, none for no AUTH (omero.mail.username)"}
    )
    email_host_password: str | None = field(
        default=None,
        metadata={"doc": "SMTP password (omero.mail.password)", "secret": True},
    )
    email_use_tls: bool = field(
        default=False,
        metadata={"doc": "Upgrade with STARTTLS (omero.mail.smtp.starttls.enable)"},
    )
    email_use_ssl: bool = field(
        default=False,
        metadata={"doc": "Implicit TLS from the first byte, port 465 (Django's EMAIL_USE_SSL)"},
    )
    email_timeout: float = field(
        default=10.0,
        metadata={
            "doc": "Seconds to wait for the SMTP server per step (Django EMAIL_TIMEOUT)",
            "min": 0.1,
        },
    )
    email_subject_prefix: str = field(
        default="[omero-porter] ",
        metadata={
            "doc": "Subject prefix (omero.web.admins.email_subject_prefix)",
            "check": _check_prefix,
        },
    )
    tls_ca_file: str | None = field(
        default=None,
        metadata={
            "doc": "PEM file of CAs to trust for the SMTP server's certificate "
            "(default: the system's)"
        },
    )
    tls_verify: bool = field(
        default=True,
        metadata={"doc": "Verify the SMTP server's certificate and host name (keep true)"},
    )
    queue_size: int = field(
        default=200,
        metadata={"doc": "Mails waiting for delivery at most; more are counted as lost", "min": 1},
    )
    retries: int = field(
        default=5,
        metadata={"doc": "Delivery retries after a failed attempt before a mail is lost", "min": 0},
    )
    backoff: float = field(
        default=2.0,
        metadata={"doc": "Seconds before the first retry; doubles each retry", "min": 0.0},
    )
    backoff_max: float = field(
        default=120.0, metadata={"doc": "Longest wait between two retries, seconds", "min": 0.0}
    )
    dedup_window: float = field(
        default=600.0,
        metadata={
            "doc": "Seconds during which repeats of a failure are summed into one digest",
            "min": 0.0,
        },
    )
    unavailable_window: float = field(
        default=900.0,
        metadata={"doc": "Same for upstream-unavailable (502/503/504) events, seconds", "min": 0.0},
    )
    max_per_hour: int = field(
        default=60,
        metadata={
            "doc": "Mails sent per hour at most, digests included, and as many again for "
            "porter's own exceptions; 0 means no cap",
            "min": 0,
        },
    )
    trace_size: int = field(
        default=32768,
        metadata={"doc": "Characters of porter's traceback kept in a mail", "min": 256},
    )
    excerpt_size: int = field(
        default=8192,
        metadata={"doc": "Characters of an upstream error body kept in a mail", "min": 256},
    )
    comment_size: int = field(
        default=4000,
        metadata={"doc": "Characters of a feedback comment kept in a mail", "min": 1},
    )
    drain_timeout: float = field(
        default=10.0,
        metadata={"doc": "Seconds to keep delivering queued mail at shutdown", "min": 0.0},
    )
    spool_dir: str = field(
        default="",
        metadata={
            "doc": "Directory keeping undelivered mail until the SMTP server is back, across "
            "restarts; empty: mail is dropped after its retries"
        },
    )
    spool_max_files: int = field(
        default=1000, metadata={"doc": "Mails the spool keeps at most", "min": 1}
    )
    spool_max_bytes: int = field(
        default=52428800, metadata={"doc": "Bytes the spool keeps at most", "min": 1024}
    )
    spool_retry_interval: float = field(
        default=30.0,
        metadata={"doc": "Seconds between tries to deliver spooled mail", "min": 0.01},
    )

    @property
    def recipients(self) -> tuple[str, ...]:
        """The admins' addresses."""
        return tuple(address for _, address in self.admins)

    @property
    def active(self) -> bool:
        """True when mail is enabled and someone would receive it."""
        return self.enabled and bool(self.admins)

    def problems(self) -> list[tuple[str, str]]:
        """Contradictions between fields."""
        found: list[tuple[str, str]] = []
        if self.email_use_tls and self.email_use_ssl:
            found.append(("email_use_ssl", "email_use_tls and email_use_ssl exclude each other"))
        if self.email_host_password and not self.email_host_user:
            found.append(("email_host_password", "is set but email_host_user is not"))
        secure = self.email_use_tls or self.email_use_ssl
        if self.email_host_password and not secure and not _is_loopback(self.email_host):
            found.append(
                (
                    "email_host_password",
                    "would cross the network in clear text: set email_use_tls or email_use_ssl",
                )
            )
        if self.backoff_max < self.backoff:
            found.append(("backoff_max", "must not be smaller than backoff"))
        return found
