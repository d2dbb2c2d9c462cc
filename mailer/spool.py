"""Admin mail that could not be delivered, kept on disk until the SMTP server is back.

One RFC 5322 file per mail (``<time>-<random>.eml``), written to a temporary name and
renamed, so a crash never leaves half a mail; oldest first. The directory is bounded by a
number of files and of bytes: a mail past either bound is not kept (the caller counts it).
The spool survives porter's restarts: a new sender delivers what an old one left.
"""

from __future__ import annotations

import email
import email.policy
import logging
import os
import secrets
import time
from email.message import EmailMessage
from pathlib import Path

log = logging.getLogger("porter.mailer")

SUFFIX = ".eml"


class MailSpool:
    """A bounded directory of undelivered mails."""

    def __init__(self, directory: Path, *, max_files: int, max_bytes: int) -> None:
        self.directory = directory
        self._max_files = max_files
        self._max_bytes = max_bytes
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)

    def files(self) -> list[Path]:
        """The spooled mails, oldest first."""
        try:
            return sorted(p for p in self.directory.iterdir() if p.name.endswith(SUFFIX))
        except OSError:
            return []

    def put(self, message: EmailMessage) -> bool:
        """Keep `message`; False when a bound (or the disk) does not allow it."""
        data = bytes(message)
        files = self.files()
        used = sum(_size(p) for p in files)
        if len(files) >= self._max_files or used + len(data) > self._max_bytes:
            return False
        name = f"{time.time_ns():020d}-{secrets.token_hex(4)}{SUFFIX}"
        temporary = self.directory / ("." + name + ".tmp")
        try:
            # readable by porter's user only: a mail names users, paths and errors
            fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            temporary.rename(self.directory / name)
        except OSError as exc:
            log.error("admin mail spool %s: cannot write (%s)", self.directory, exc.strerror)
            temporary.unlink(missing_ok=True)
            return False
        return True

    def read(self, path: Path) -> EmailMessage | None:
        """The mail in `path`, or None when it is gone or unreadable (then it is removed)."""
        try:
            raw = path.read_bytes()
        except OSError:
            return None
        message = email.message_from_bytes(raw, policy=email.policy.default)
        if not isinstance(message, EmailMessage) or not message["To"]:
            log.error("admin mail spool: %s is not a mail; removed", path.name)
            self.remove(path)
            return None
        return message

    def remove(self, path: Path) -> None:
        path.unlink(missing_ok=True)


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0
