"""The disk tier: diskcache (SQLite index plus files), shared by the porter processes of one
host, bounded in bytes. Every call blocks, so porter runs them in a thread.

Values are stored as bytes (Entry.to_bytes), never pickled; `_BytesOnly` refuses to unpickle
anything found in the directory, so a planted file cannot run code in porter."""

from __future__ import annotations

import contextlib
import gc
import json
import os
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import diskcache

from cache.entry import Entry
from cache.key import key_path
from filters.private_dir import private_directory
from filters.regex_guard import GuardedPattern
from porter_errors import Internal

PURGE_LOG = "porter:purge-log"  # the purges other processes apply to their memory tier
PURGE_LOG_KEEP = 100
WAL_LIMIT = 256 * 1024

DiskError = (OSError, sqlite3.Error, diskcache.Timeout)


class _BytesOnly(diskcache.Disk):  # type: ignore[misc]
    """diskcache's Disk without pickle: keys are str, values bytes; anything else is None."""

    def get(self, key: Any, raw: bool) -> Any:
        return super().get(key, raw) if raw else None

    def fetch(self, mode: int, filename: str | None, value: Any, read: bool) -> Any:
        if mode == diskcache.core.MODE_RAW:
            return super().fetch(mode, filename, value, read)
        inside = bool(filename) and not os.path.isabs(filename or "/")
        if mode == diskcache.core.MODE_BINARY and inside and ".." not in Path(filename or "").parts:
            return super().fetch(mode, filename, value, read)
        return None


class DiskReplaced(Internal, OSError):
    """The directory was removed or replaced under porter; the tier was reopened on the new
    one (or could not be: then the next call tries again)."""


REOPEN_EVERY = 1.0  # seconds between attempts to reopen a directory that is gone


class DiskTier:
    """Entries on disk under `directory`, at most about `size_limit` bytes (diskcache culls
    the oldest stored entries past it, ten per write).

    Every call first checks that the directory and its index are the ones opened (device and
    inode): removed or replaced (`rm -rf` and `mkdir` under a running porter), the tier
    reopens on what is there now, made again 0700 if it is gone, and refused if another user
    could write it. So the tier, sharing between processes and cross-process purges come back
    by themselves, and a disk freed by removing the directory gets its space back (porter no
    longer holds the deleted files)."""

    def __init__(self, directory: str, size_limit: int) -> None:
        self.directory = Path(directory)
        self._size_limit = size_limit
        self._lock = threading.Lock()
        self._next_reopen = 0.0
        self.reopened = 0
        self._cache, self._opened_as = self._open()

    def _open(self) -> tuple[diskcache.Cache, tuple[int, ...]]:
        path = self.directory
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        why = private_directory(str(path))
        if why is not None:
            raise PermissionError(f"{path} {why}")
        cache = diskcache.Cache(
            str(path),
            disk=_BytesOnly,
            size_limit=self._size_limit,
            eviction_policy="least-recently-stored",  # reads write nothing: processes share well
            statistics=False,
            timeout=2,
            # SQLite's write-ahead log is checkpointed often and cut back, so the directory
            # stays within size_limit plus a fixed few hundred KiB
            sqlite_wal_autocheckpoint=64,
            sqlite_journal_size_limit=WAL_LIMIT,
        )
        return cache, self._identity()

    def _identity(self) -> tuple[int, ...]:
        """What the directory and its index are now (FileNotFoundError: gone)."""
        directory = os.stat(self.directory)
        index = os.stat(self.directory / "cache.db")
        return (directory.st_dev, directory.st_ino, index.st_dev, index.st_ino)

    def _fresh(self) -> diskcache.Cache:
        """The open cache, after making sure it is still the directory's; DiskReplaced when
        it was not (reopened now, or at the next call)."""
        try:
            same = self._identity() == self._opened_as
        except OSError:
            same = False
        if same:
            return self._cache
        with self._lock:
            try:
                if self._identity() == self._opened_as:
                    return self._cache  # another thread reopened it meanwhile
            except OSError:
                pass
            now = time.monotonic()
            if now < self._next_reopen:
                raise DiskReplaced(f"{self.directory}: gone; reopening shortly")
            self._next_reopen = now + REOPEN_EVERY
            old = self._cache
            self._cache, self._opened_as = self._open()  # raises while it cannot be made
            self.reopened += 1
            with contextlib.suppress(Exception):
                old.close()  # this thread's connection; the others' go with the object
            del old
            gc.collect()  # now, so no thread keeps the deleted files (and their space)
        raise DiskReplaced(f"{self.directory}: removed or replaced; reopened")

    def get(self, key: str) -> Entry | None:
        data = self._fresh().get(key)
        return Entry.from_bytes(data) if isinstance(data, bytes) else None

    def put(self, key: str, entry: Entry, keep: float) -> None:
        """Store `entry` until `keep` seconds past its ttl (then diskcache drops it)."""
        expire = entry.stored + entry.ttl + keep - time.time()
        if expire > 0:
            self._fresh().set(key, entry.to_bytes(), expire=expire)

    def purge(self, pattern: GuardedPattern | None, deadline: float) -> int:
        """Remove the entries whose path `pattern` finds (all: None); how many were removed.
        Noted in the purge log, so other processes drop their memory copies too. Raises
        MatchTimeout past monotonic `deadline` (what was matched by then is removed, and
        the purge is not noted)."""
        removed = 0
        self._fresh()
        for key in list(self._cache.iterkeys()):
            if key == PURGE_LOG or not isinstance(key, str):
                continue
            if pattern is None or pattern.finds(key_path(key), deadline):
                removed += bool(self._cache.delete(key))
        with self._cache.transact():
            log = self.purge_log()
            log.append((time.time(), None if pattern is None else pattern.source))
            self._cache.set(PURGE_LOG, json.dumps(log[-PURGE_LOG_KEEP:]).encode())
        return removed

    def purge_log(self) -> list[tuple[float, str | None]]:
        data = self._fresh().get(PURGE_LOG)
        try:
            return [(float(t), p) for t, p in json.loads(data)] if data else []
        except (ValueError, TypeError):
            return []

    def stats(self) -> dict[str, int]:
        self._fresh()
        entries = len(self._cache) - (PURGE_LOG in self._cache)
        return {"entries": entries, "bytes": int(self._cache.volume())}

    def check(self) -> None:
        """Raise OSError unless the directory and its index are still there and answer."""
        if not (self.directory / "cache.db").is_file():
            raise FileNotFoundError(str(self.directory / "cache.db"))
        self._fresh().get(PURGE_LOG)

    def close(self) -> None:
        self._cache.close()
