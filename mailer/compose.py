"""Turn a report (or a digest) into the e-mail the admins read, every part scrubbed."""

from __future__ import annotations

import html
import re
from collections.abc import Iterable
from datetime import datetime, timezone
from email.message import EmailMessage
from email.utils import format_datetime, formataddr, make_msgid

from mailer.dedup import Digest
from mailer.report import Report
from mailer.scrub import mask_query, one_line, scrub_text
from mailer.settings import MailSettings

# The only request headers a report may show; cookies and credentials are never among them.
SHOWN_HEADERS = (
    "Host",
    "User-Agent",
    "Referer",
    "Origin",
    "Accept",
    "Accept-Language",
    "Content-Type",
    "Content-Length",
    "X-Requested-With",
)
_SHOWN = {name.lower(): name for name in SHOWN_HEADERS}

# Django's debug page keeps a plain-text traceback in this textarea.
_DJANGO_TRACE = re.compile(r'<textarea[^>]*id="traceback_area"[^>]*>(.*?)</textarea>', re.S)
_DROP_BLOCKS = re.compile(r"<(script|style)\b.*?</\1\s*>", re.S | re.I)
_BREAK_TAG = re.compile(r"<(?:br|/p|/tr|/h\d|/div|/li|/pre|/table|/title)\b[^>]*>", re.I)
_TAG = re.compile(r"<[^>]*>")
_SPACES = re.compile(r"[ \t]+")
_BLANK_LINES = re.compile(r"\n\s*\n(\s*\n)+")
_PARTIAL_TOKEN = re.compile(r"[^\s&;,\"'<>=:()\[\]{}]*\Z")


def html_to_text(body: str) -> str:
    """Readable text of an HTML error page (a Django debug page gives its traceback)."""
    found = _DJANGO_TRACE.search(body)
    if found:
        return html.unescape(found.group(1))
    text = _TAG.sub(" ", _BREAK_TAG.sub("\n", _DROP_BLOCKS.sub("", body)))
    lines = (_SPACES.sub(" ", line).strip() for line in html.unescape(text).splitlines())
    return _BLANK_LINES.sub("\n\n", "\n".join(lines)).strip()


def bounded(text: str, limit: int) -> str:
    """`text` cut to `limit` characters, saying so when it was cut."""
    if len(text) <= limit:
        return text
    return text[:limit] + f"\n[... {len(text) - limit} more characters cut]"


def _excerpt(report: Report, settings: MailSettings) -> str:
    # Read at most this much: the cut end may split a secret, so its last token is dropped.
    raw = report.excerpt
    if len(raw) > settings.excerpt_size * 4:
        raw = _PARTIAL_TOKEN.sub("", raw[: settings.excerpt_size * 4])
    if "<" in raw and re.search(r"<(html|body|div|p|pre|h1|textarea)\b", raw, re.I):
        raw = html_to_text(raw)
    return bounded(scrub_text(raw, report.secrets), settings.excerpt_size)


def _trace(report: Report, settings: MailSettings) -> str:
    # Scrub the whole trace before cutting it, so no secret is split by the cut.
    return bounded(scrub_text(report.trace, report.secrets), settings.trace_size)


def shown_headers(headers: Iterable[tuple[str, str]], secrets: Iterable[str]) -> list[str]:
    """The whitelisted request headers as scrubbed "Name: value" lines."""
    lines = []
    for name, value in headers:
        shown = _SHOWN.get(name.lower())
        if shown is None:
            continue
        if shown == "Referer":
            base, sep, query = value.partition("?")
            value = base + sep + mask_query(query, secrets)
        lines.append(f"{shown}: {one_line(scrub_text(value, secrets))}")
    return lines


def subject_of(report: Report, settings: MailSettings) -> str:
    """The scrubbed one-line subject of `report`'s mail."""
    text = f"{report.headline()} [{report.request_id}]"
    return one_line(settings.email_subject_prefix + text)


def body_of(report: Report, settings: MailSettings) -> str:
    """The scrubbed plain-text body of `report`'s mail."""
    secrets = report.secrets
    server = "" if report.server_id is None else str(report.server_id)
    status = "" if report.status is None else str(report.status)
    facts = [
        ("Request id", report.request_id),
        ("Time", report.time.isoformat(timespec="seconds")),
        ("Method", report.method),
        ("Path", scrub_text(report.path, secrets)),
        ("Query", mask_query(report.query, secrets)),
        ("User", scrub_text(report.user, secrets)),
        ("Client", report.client),
        ("Server id", server),
        ("Upstream status", status),
    ]
    lines = [f"{name + ':':<17}{one_line(value)}" for name, value in facts if value]
    headers = shown_headers(report.headers, secrets)
    if headers:
        lines += ["", "Request headers (cookies and credentials are never shown):"]
        lines += [f"  {line}" for line in headers]
    if report.comment:
        comment = scrub_text(report.comment, secrets)
        lines += ["", "Comment:", bounded(comment, settings.comment_size)]
    if report.trace:
        lines += ["", "Traceback:", _trace(report, settings)]
    if report.excerpt:
        lines += ["", "Upstream response (excerpt):", _excerpt(report, settings)]
    return "\n".join(lines) + "\n"


def digest_body(digest: Digest) -> str:
    """The body of a digest mail: how often a failure repeated, and where."""
    lines = [
        f"{digest.count} more occurrence(s) of this failure between "
        f"{digest.first_seen.isoformat(timespec='seconds')} and "
        f"{digest.last_seen.isoformat(timespec='seconds')}.",
        f"{'Failure:':<17}{digest.headline}",
        f"{'Fingerprint:':<17}{digest.fingerprint}",
    ]
    if digest.first_sent is False:
        lines.append("The first occurrence was not mailed: the hourly cap was reached.")
    if digest.paths:
        lines += ["", "Paths:"] + [f"  {n:>7}  {p}" for p, n in digest.paths]
    if digest.request_ids:
        lines += ["", "Latest request ids:"] + [f"  {rid}" for rid in digest.request_ids]
    return "\n".join(lines) + "\n"


def envelope(subject: str, body: str, settings: MailSettings, request_id: str = "") -> EmailMessage:
    """A mail to the admins from `server_email` with the given subject and body."""
    subject, body, request_id = map(_encodable, (subject, body, request_id))
    message = EmailMessage()
    message["Subject"] = one_line(subject)
    message["From"] = settings.server_email
    message["To"] = ", ".join(formataddr((name, addr)) for name, addr in settings.admins)
    message["Date"] = format_datetime(_utcnow())
    message["Message-ID"] = make_msgid(domain=settings.server_email.rpartition("@")[2])
    # RFC 3834: tells auto-responders not to answer, so no mail loop.
    message["Auto-Submitted"] = "auto-generated"
    if request_id:
        message["X-Porter-Request-Id"] = one_line(request_id)
    message.set_content(body)
    return message


def _encodable(text: str) -> str:
    """`text` with any lone surrogate (an undecodable byte of a header or path) spelled out
    as an escape, so every report can be encoded and sent."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def report_message(report: Report, settings: MailSettings) -> EmailMessage:
    """The complete, scrubbed mail for one report."""
    return envelope(
        subject_of(report, settings), body_of(report, settings), settings, report.request_id
    )


def digest_message(digest: Digest, settings: MailSettings) -> EmailMessage:
    """The complete mail for one digest."""
    subject = f"{settings.email_subject_prefix}Digest: {digest.count} more x {digest.headline}"
    return envelope(subject, digest_body(digest), settings)


def _utcnow() -> datetime:
    return datetime.now(timezone.utc)
