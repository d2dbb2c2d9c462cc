"""A real SMTP server for the mail tests: aiosmtpd on loopback, in its own thread and loop.

`smtp_server` is plain SMTP; `smtp_tls_server` offers STARTTLS with a certificate made for the
test (trusted through `ca_file`) and requires AUTH as SMTP_USER / SMTP_PASSWORD.
`start_smtp(port=...)` starts one on a chosen port (e.g. one a sender already tries).
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import socket
import ssl
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from cryptography.hazmat.primitives import serialization

from mailer import MailSettings
from tests.omero_sim.certs import self_signed

SMTP_USER = "porter"
SMTP_PASSWORD = "smtp-Pa55word-x9"
ADMINS = (("Ada Admin", "ada@example.org"), ("Bob Ops", "bob@example.org"))


def free_port() -> int:
    """A loopback port nobody listens on (now)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class Received:
    """One message as the server got it: envelope, raw bytes and the parsed message."""

    mail_from: str
    rcpt_tos: tuple[str, ...]
    raw: bytes
    message: EmailMessage

    @property
    def text(self) -> str:
        """Every header and the decoded body, for assertions on what a reader sees."""
        headers = "".join(f"{k}: {v}\n" for k, v in self.message.items())
        body = self.message.get_body(("plain",))
        content = body.get_content() if body is not None else ""
        return headers + "\n" + str(content)


@dataclass
class Inbox:
    """The aiosmtpd handler: keeps every message it accepts."""

    messages: list[Received] = field(default_factory=list)
    delay: float = 0.0  # seconds each message takes to be accepted (a slow SMTP server)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if self.delay:
            await asyncio.sleep(self.delay)
        parsed = email.message_from_bytes(envelope.content, policy=email.policy.default)
        assert isinstance(parsed, EmailMessage)
        self.messages.append(
            Received(envelope.mail_from, tuple(envelope.rcpt_tos), envelope.content, parsed)
        )
        return "250 Message accepted for delivery"

    async def wait_for(self, count: int, timeout: float = 30.0) -> list[Received]:
        """Wait until `count` messages arrived (fails after `timeout`, a hang guard only)."""
        deadline = asyncio.get_running_loop().time() + timeout
        while len(self.messages) < count:
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"{len(self.messages)} message(s) arrived, not {count}")
            await asyncio.sleep(0.02)
        return list(self.messages)


@dataclass(frozen=True)
class CertFiles:
    cert: Path
    key: Path

    @property
    def ca_file(self) -> str:
        """The self-signed certificate is its own CA."""
        return str(self.cert)


@dataclass
class SmtpServer:
    host: str
    port: int
    inbox: Inbox
    controller: Controller

    def stop(self) -> None:
        self.controller.stop()


def make_cert(directory: Path) -> CertFiles:
    """A self-signed certificate for localhost and 127.0.0.1."""
    key, cert = self_signed("localhost")
    files = CertFiles(directory / "smtp-cert.pem", directory / "smtp-key.pem")
    files.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    files.key.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return files


def _authenticate(
    server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any
) -> AuthResult:
    ok = (
        isinstance(auth_data, LoginPassword)
        and auth_data.login == SMTP_USER.encode()
        and auth_data.password == SMTP_PASSWORD.encode()
    )
    return AuthResult(success=ok, handled=False)


def start_smtp_server(port: int | None = None, cert: CertFiles | None = None) -> SmtpServer:
    """Start aiosmtpd on 127.0.0.1; with `cert`: STARTTLS offered and AUTH required."""
    inbox = Inbox()
    kwargs: dict[str, Any] = {}
    if cert is not None:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(cert.cert, cert.key)
        kwargs = {
            "tls_context": context,
            "require_starttls": True,
            "auth_required": True,
            "authenticator": _authenticate,
        }
    port = port or free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port, **kwargs)
    controller.start()
    return SmtpServer("127.0.0.1", port, inbox, controller)


def settings_for(server: SmtpServer | int, **overrides: Any) -> MailSettings:
    """Mail settings for two admins via `server` (or a loopback port), with short retries."""
    port = server if isinstance(server, int) else server.port
    values: dict[str, Any] = {
        "admins": ADMINS,
        "email_host": "127.0.0.1",
        "email_port": port,
        "server_email": "porter@example.org",
        "email_timeout": 5.0,
        "backoff": 0.05,
        "backoff_max": 0.2,
    }
    values.update(overrides)
    return MailSettings(**values)


@pytest.fixture(scope="session")
def smtp_cert(tmp_path_factory: pytest.TempPathFactory) -> CertFiles:
    return make_cert(tmp_path_factory.mktemp("smtp-tls"))


@pytest.fixture
def start_smtp() -> Iterator[Callable[..., SmtpServer]]:
    """A factory: start_smtp(port=None, cert=None) -> SmtpServer, stopped after the test."""
    started: list[SmtpServer] = []

    def start(port: int | None = None, cert: CertFiles | None = None) -> SmtpServer:
        server = start_smtp_server(port, cert)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def smtp_server(start_smtp: Callable[..., SmtpServer]) -> SmtpServer:
    return start_smtp()


@pytest.fixture
def smtp_tls_server(start_smtp: Callable[..., SmtpServer], smtp_cert: CertFiles) -> SmtpServer:
    return start_smtp(cert=smtp_cert)
