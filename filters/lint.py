"""Warnings for URL patterns written for OMERO.web's prefix search, not porter's full match.

OMERO.web runs ``url_filter.search(path)``: ``^/webgateway/`` there means "any path under
/webgateway/". Porter matches the whole canonical path, so the same intent is written
``^/webgateway/.*``.
"""

from __future__ import annotations

_OPEN_ENDINGS = (".*", ".+", ".*?", ".+?")
_END_ANCHORS = ("$", "\\Z", "\\z")


def lint_url_filter(pattern: str) -> list[str]:
    """Human-readable warnings about `pattern` (empty list: nothing suspicious)."""
    if not pattern:
        return []
    warnings: list[str] = []
    if not pattern.startswith(("^", "\\A", "(?#")):
        warnings.append(
            "no leading ^: OMERO.web searched for this anywhere in the path, porter matches "
            "it against the whole path; write ^/... to say what the path starts with"
        )
    if not _ends_openly_or_anchored(pattern):
        warnings.append(
            "does not end with .* or $: porter matches the whole path, so this matches only "
            "paths ending exactly here (OMERO.web also matched everything below); append .* "
            "to keep OMERO.web's meaning, or $ to say the match is exact"
        )
    if "\\?" in pattern or "[?]" in pattern:
        warnings.append("mentions '?': porter never matches the query string, only the path")
    return warnings


def _ends_openly_or_anchored(pattern: str) -> bool:
    if pattern.endswith(_END_ANCHORS) and not pattern.endswith("\\$"):
        return True
    body = pattern.rstrip(")?")
    return body.endswith(_OPEN_ENDINGS) and not body.endswith(("\\.*", "\\.+"))
