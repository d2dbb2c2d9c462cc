"""Canonical request paths: the one path porter matches rules against and forwards.

Input is the raw path as received on the wire (``request.raw_path``, relative to porter's
mount prefix). Percent-escapes are decoded exactly once. A path that some layer behind
porter could read differently from porter is refused with `BadPath` (answer 400):

- the query string (after the first ``?``) is never part of the path;
- a raw ``#``, a raw ``\\`` and a raw non-ASCII character (aiohttp's own parser refuses
  the last one);
- a percent-escape that decodes to a character with URL syntax meaning: ``/``, ``\\``,
  ``?``, ``#`` or ``%`` (the last one catches every double encoding);
- ``;`` in any form: Tomcat, Jetty and Spring read it as a path parameter, Django does not;
  OMERO.web never uses it, so refusing it removes that disagreement (and ``..;``);
- control characters (C0, DEL, C1), raw or encoded;
- malformed escapes, invalid or overlong UTF-8;
- dot segments (``.``, ``..``) and empty segments (``//``); one trailing ``/`` is normal;
- a path not starting with ``/`` or longer than `MAX_PATH_LENGTH`.

Case is kept: Django's URLs are case-sensitive (deny rules are matched case-insensitively,
see `filters.rules`). `forward_path` re-encodes the canonical path so that the upstream,
decoding once, sees exactly the canonical path.
"""

from __future__ import annotations

import re
from urllib.parse import unquote_to_bytes

from porter_errors import Refused

# Long enough for any OMERO.web path (the query is not counted); bounds rule-matching work.
MAX_PATH_LENGTH = 4096

# Characters refused however they arrive.
_NO_RAW = frozenset("#\\;")
# Raw: anything but printable ASCII and space, and the characters above.
_RAW_REFUSED = re.compile(r"[^\x20-\x7e]|[#\\;]")
_MALFORMED_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")
# Escapes of / \ ? # % ; : a later layer could split or decode again on them.
_ENCODED_REFUSED = re.compile(r"%(?:2[Ff]|5[Cc]|3[Ff]|23|25|3[Bb])")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_DOT_SEGMENT = re.compile(r"/\.{1,2}(?=/|\Z)")
# Left as they are by forward_path (RFC 3986 pchar minus ";"), everything else is escaped.
_FORWARD_SAFE = frozenset(
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._~!$&'()*+,=:@/"
)


class BadPath(Refused, ValueError):
    """The path cannot be made canonical without changing its meaning (answer 400).

    `reason` is safe to log and to show: it never contains the path itself.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(400, reason)
        self.reason = reason


def split_target(raw_target: str) -> tuple[str, str | None]:
    """Split a raw request target into (raw path, raw query or None) at the first ``?``."""
    path, sep, query = raw_target.partition("?")
    return path, (query if sep else None)


def strip_prefix(raw_path: str, prefix: str) -> str | None:
    """The raw path relative to mount `prefix` (e.g. ``/omero``), or None when outside it.

    Compared on the raw, undecoded path and only on a segment boundary, so ``/omeroX`` and
    ``/omero%2F..`` are not under ``/omero``. An empty or ``/`` prefix returns the path.
    """
    prefix = prefix.rstrip("/")
    if not prefix:
        return raw_path
    if raw_path == prefix:
        return "/"
    if raw_path.startswith(prefix + "/"):
        return raw_path[len(prefix) :]
    return None


def canonical_path(raw_path: str, *, max_length: int = MAX_PATH_LENGTH) -> str:
    """The decoded canonical form of `raw_path`; raises `BadPath` when there is none.

    Anything from the first ``?`` on is ignored (it is the query, never matched).
    """
    path, _ = split_target(raw_path)
    if len(path) > max_length:
        raise BadPath(f"path longer than {max_length} characters")
    if not path.startswith("/"):
        raise BadPath("path does not start with /")
    text = _decode(path)
    _check_characters(text)
    _check_segments(text)
    return text


def forward_path(canonical: str) -> str:
    """`canonical` percent-encoded for the wire: the upstream decodes it back exactly."""
    out: list[str] = []
    for char in canonical:
        if char in _FORWARD_SAFE:
            out.append(char)
        else:
            out.extend(f"%{byte:02X}" for byte in char.encode("utf-8"))
    return "".join(out)


def _decode(path: str) -> str:
    """Decode percent-escapes once; refuse raw and encoded characters that change meaning."""
    raw = _RAW_REFUSED.search(path)
    if raw is not None:
        char = raw.group()
        if not char.isascii():
            raise BadPath("raw non-ASCII character in path (must be percent-encoded)")
        if char in _NO_RAW:
            raise BadPath(f"{char!r} in path")
        raise BadPath(f"control character U+{ord(char):04X} in path")
    if _MALFORMED_ESCAPE.search(path):
        raise BadPath("malformed percent-escape")
    encoded = _ENCODED_REFUSED.search(path)
    if encoded is not None:
        raise BadPath(f"percent-encoded {chr(int(encoded.group()[1:], 16))!r} in path")
    try:
        # Strict UTF-8: refuses overlong forms (%C0%AF), encoded surrogates, > U+10FFFF.
        return unquote_to_bytes(path).decode("utf-8")
    except UnicodeDecodeError:
        raise BadPath("path is not valid UTF-8") from None


def _check_characters(text: str) -> None:
    control = _CONTROL.search(text)
    if control is not None:
        raise BadPath(f"control character U+{ord(control.group()):04X} in path")


def _check_segments(text: str) -> None:
    # An empty last segment is fine: "/" and "/webclient/" are normal.
    if "//" in text:
        raise BadPath("empty path segment (//)")
    if _DOT_SEGMENT.search(text):
        raise BadPath("dot segment in path")
