"""Deliver one message over SMTP (aiosmtplib): the one place its errors become ours."""

from __future__ import annotations

import asyncio
import functools
import ssl
from dataclasses import dataclass
from email.message import EmailMessage

import aiosmtplib

from mailer.settings import MailSettings
from porter_errors import Internal


class DeliveryError(Internal):
    """A message was not delivered. `transient`: trying again later may work.

    The message names the server and what went wrong, never the password.
    """

    def __init__(self, reason: str, *, transient: bool) -> None:
        super().__init__(reason)
        self.reason = reason
        self.transient = transient


@dataclass(frozen=True)
class Delivered:
    """How many recipients the server accepted, and where the message went."""

    accepted: int
    refused: tuple[str, ...]
    via: str


def server_name(settings: MailSettings) -> str:
    """ "smtp host:port" with the TLS mode, for messages."""
    mode = (
        " (implicit TLS)"
        if settings.email_use_ssl
        else (" (STARTTLS)" if settings.email_use_tls else "")
    )
    return f"smtp {settings.email_host}:{settings.email_port}{mode}"


@functools.lru_cache(maxsize=8)
def _tls_context(ca_file: str | None, verify: bool) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=ca_file)
    if not verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def _reason(exc: BaseException, settings: MailSettings) -> DeliveryError:
    where = f"{settings.email_host}:{settings.email_port}"
    cause = exc.__cause__ or exc.__context__
    if isinstance(exc, aiosmtplib.SMTPAuthenticationError):
        return DeliveryError(
            f"authentication failed for user {settings.email_host_user!r} "
            f"at {where}: {exc.code} {exc.message}",
            transient=False,
        )
    if isinstance(exc, ssl.SSLError) or isinstance(cause, ssl.SSLError):
        detail = getattr(exc if isinstance(exc, ssl.SSLError) else cause, "reason", None)
        return DeliveryError(f"TLS failed with {where}: {detail or exc}", transient=False)
    if isinstance(exc, aiosmtplib.SMTPTimeoutError | TimeoutError):
        return DeliveryError(
            f"timed out after {settings.email_timeout:g} s talking to {where}", transient=True
        )
    if isinstance(cause, ConnectionRefusedError) or isinstance(exc, ConnectionRefusedError):
        return DeliveryError(f"connection refused to {where}", transient=True)
    if isinstance(exc, aiosmtplib.SMTPRecipientsRefused):
        return DeliveryError(f"{where} refused every recipient", transient=False)
    if isinstance(exc, aiosmtplib.SMTPNotSupported):
        return DeliveryError(f"{where} does not support it: {exc.message}", transient=False)
    if isinstance(exc, aiosmtplib.SMTPResponseException):
        return DeliveryError(
            f"{where} answered {exc.code} {exc.message}", transient=400 <= exc.code < 500
        )
    if isinstance(exc, aiosmtplib.SMTPConnectError | aiosmtplib.SMTPServerDisconnected):
        return DeliveryError(f"cannot talk to {where}: {exc}", transient=True)
    return DeliveryError(f"cannot deliver via {where}: {type(exc).__name__}: {exc}", transient=True)


def _without_password(error: DeliveryError, settings: MailSettings) -> DeliveryError:
    password = settings.email_host_password
    if password and password in error.reason:
        return DeliveryError(error.reason.replace(password, "[masked]"), transient=error.transient)
    return error


async def deliver(message: EmailMessage, settings: MailSettings) -> Delivered:
    """Send `message` to `settings.admins`; raise DeliveryError when nobody got it."""
    secure = settings.email_use_tls or settings.email_use_ssl
    client = aiosmtplib.SMTP(
        hostname=settings.email_host,
        port=settings.email_port,
        username=settings.email_host_user,
        password=settings.email_host_password,
        use_tls=settings.email_use_ssl,
        start_tls=settings.email_use_tls,
        timeout=settings.email_timeout,
        tls_context=_tls_context(settings.tls_ca_file, settings.tls_verify) if secure else None,
    )
    try:
        async with client:
            refused, _ = await client.send_message(
                message, sender=settings.server_email, recipients=list(settings.recipients)
            )
    except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
        raise _without_password(_reason(exc, settings), settings) from exc
    finally:
        # Abort rather than close: a graceful TLS close needs more loop turns than a shutting
        # down loop may give, and would leave the socket open. Then give the abort its turn.
        transport = client.transport
        if isinstance(transport, asyncio.Transport):
            transport.abort()
        client.close()
        await asyncio.sleep(0.01)
    accepted = len(settings.recipients) - len(refused)
    return Delivered(accepted, tuple(sorted(refused)), server_name(settings))
