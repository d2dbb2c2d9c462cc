"""Admin mail that could not be delivered, kept on disk until the SMTP server is back.

One RFC 5322 file per mail (``<time>-<random>.eml``), written to a temporary name and
renamed, so a crash never leaves half a mail; oldest first. The directory is bounded by a
number of files and of bytes: a mail past either bound is not kept (the caller counts it).
The spool survives porter's restarts: a new sender delivers what an old one left.

Several porter processes share one spool (gunicorn workers, a restart overlapping the old
process): a sender first *claims* a mail by renaming it to ``<name>.sending-<pid>``, an
atomic rename only one of them can win, and delivers only what it claimed. A claim whose
process is gone, or older than CLAIM_TIMEOUT, goes back to the queue.
"""

from __future__ import annotations

import contextlib
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
CLAIMED = ".sending-"
CLAIM_TIMEOUT = 600.0  # seconds: past it a claim is released even if its process lives


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

    def _claimed(self) -> list[Path]:
        try:
            return [p for p in self.directory.iterdir() if CLAIMED in p.name]
        except OSError:
            return []

    def claim(self, path: Path) -> Path | None:
        """Make `path` this process's to deliver; None when another process claimed it."""
        claimed = path.with_name(f"{path.name}{CLAIMED}{os.getpid()}")
        try:
            path.rename(claimed)  # atomic: one process wins, the others find it gone
            os.utime(claimed)  # the claim's age, for CLAIM_TIMEOUT
        except OSError:
            return None
        return claimed

    def unclaim(self, claimed: Path) -> None:
        """Put a claimed mail back in the queue (its delivery failed for now)."""
        with contextlib.suppress(OSError):
            claimed.rename(claimed.with_name(claimed.name.split(CLAIMED, 1)[0]))

    def release_stale(self) -> int:
        """Claims of processes that are gone (or too old) back to the queue; how many."""
        released = 0
        now = time.time()
        for claimed in self._claimed():
            pid = claimed.name.rsplit(CLAIMED, 1)[1]
            try:
                age = now - claimed.stat().st_mtime
            except OSError:
                continue
            if _alive(pid) and age < CLAIM_TIMEOUT:
                continue
            self.unclaim(claimed)
            released += 1
            log.warning(
                "admin mail spool: %s released from a claim of process %s", claimed.name, pid
            )
        return released

    def put(self, message: EmailMessage) -> bool:
        """Keep `message`; False when a bound (or the disk) does not allow it."""
        data = bytes(message)
        files = self.files() + self._claimed()
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


def _alive(pid: str) -> bool:
    """True when process `pid` exists on this host (a claim's owner)."""
    try:
        os.kill(int(pid), 0)
    except (ValueError, ProcessLookupError):
        return False
    except PermissionError:
        return True  # someone else's process: alive
    return True


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0
