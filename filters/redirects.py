"""Where porter may send a browser after login or logout: same-site relative paths only."""

from __future__ import annotations

import re

from filters.canonical import BadPath, canonical_path, strip_prefix

MAX_TARGET_LENGTH = 2048
# Printable ASCII without space, backslash or fragment mark; everything else is refused.
_QUERY_OK = re.compile(r"[!$&'()*+,\-./0-9:;=?@A-Z_a-z~%]*\Z")
_BAD_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})|%(?:[01][0-9A-Fa-f]|7[Ff]|5[Cc])")


def safe_redirect(target: str | None, prefix: str, default: str) -> str:
    """`target` when it is a same-site path under `prefix` that cannot leave the site, else
    `default`.

    Refused: absolute and scheme-relative URLs (``//host``), backslashes (browsers read
    ``/\\host`` as ``//host``), whitespace and control characters raw or encoded, encoded
    slashes, dot segments, fragments, porter's own pages and anything outside the prefix.
    """
    if not target or len(target) > MAX_TARGET_LENGTH or " " in target:
        return default
    path, _, query = target.partition("?")
    if not path.startswith("/") or path.startswith(("//", "/\\")):
        return default
    if not _QUERY_OK.match(query) or _BAD_ESCAPE.search(query):
        return default
    relative = strip_prefix(path, prefix)
    if relative is None:
        return default
    try:
        canonical = canonical_path(relative)
    except BadPath:
        return default
    if canonical == "/porter" or canonical.startswith("/porter/"):
        return default
    return target
