"""One cached answer, and its byte form on disk (never pickle: the disk tier reads no code)."""

from __future__ import annotations

import json
from dataclasses import dataclass

# What one entry costs in memory beside its body and headers' characters: the object, its
# tuples, the LRU's links and a key of ~100 characters (measured with tracemalloc: ~560 bytes
# for a 70-character key), so the memory budget holds for small answers too.
OVERHEAD = 640
_MAGIC = b"porter-cache-1\n"


@dataclass(frozen=True, slots=True)
class Entry:
    """An answer OMERO.web gave the public user: always a 200, headers already cleaned."""

    headers: tuple[tuple[str, str], ...]
    body: bytes
    stored: float  # wall-clock seconds: disk entries are shared by processes
    ttl: float

    @property
    def size(self) -> int:
        return len(self.body) + sum(len(k) + len(v) for k, v in self.headers) + OVERHEAD

    def age(self, now: float) -> float:
        return max(0.0, now - self.stored)

    def fresh(self, now: float) -> bool:
        return now - self.stored < self.ttl

    def to_bytes(self) -> bytes:
        head = json.dumps({"h": self.headers, "s": self.stored, "t": self.ttl})
        return _MAGIC + head.encode() + b"\n" + self.body

    @classmethod
    def from_bytes(cls, data: bytes) -> Entry | None:
        """The entry `data` holds; None if it is not one (damaged, or another format)."""
        if not data.startswith(_MAGIC):
            return None
        head, newline, body = data[len(_MAGIC) :].partition(b"\n")
        try:
            meta = json.loads(head)
            headers = tuple((str(k), str(v)) for k, v in meta["h"])
            return cls(headers, body, float(meta["s"]), float(meta["t"])) if newline else None
        except (ValueError, KeyError, TypeError):
            return None
