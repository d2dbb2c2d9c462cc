"""The cache key: everything the shared public answer depends on, and nothing a visitor can
vary for free.

- the server id of the public session (answers of two OMERO servers never mix);
- the scheme and host OMERO.web sees (it builds absolute URLs from them: without them in the
  key, one request with a forged Host would poison the answer for everyone);
- the canonical path, as forwarded;
- the query, normalised: parameters in name order (values of one name keep their order,
  which Django's QueryDict depends on), jQuery's ``_=`` cache-buster dropped, every byte
  percent-encoded the same way. The fill is sent with exactly this query, so the stored
  answer is the answer to the key.
"""

from __future__ import annotations

from urllib.parse import parse_qsl, quote

CACHE_BUSTER = "_"
_SAFE = "-._~!$'()*+,;:@/?"  # left as they are by quote (RFC 3986 query characters but & = #)


def normalise_query(query: str) -> str:
    """`query` with its parameters sorted by name and ``_`` dropped (bytes kept exactly)."""
    if not query:
        return ""
    # latin-1: every byte maps to one character and back, so no two queries meet by accident
    pairs = parse_qsl(query, keep_blank_values=True, encoding="latin-1", errors="strict")
    pairs = [(name, value) for name, value in pairs if name != CACHE_BUSTER]
    pairs.sort(key=lambda pair: pair[0])  # stable: repeated names keep their order
    return "&".join(
        f"{quote(name, _SAFE, 'latin-1')}={quote(value, _SAFE, 'latin-1')}" for name, value in pairs
    )


def cache_key(server_id: int, scheme: str, host: str, path: str, query: str) -> str:
    """The key of the public answer to `path` (canonical, encoded) and `query` (normalised)."""
    return (
        f"{server_id}|{scheme}|{host}|{path}?{query}"
        if query
        else (f"{server_id}|{scheme}|{host}|{path}")
    )


def key_path(key: str) -> str:
    """The path part of `key` (what ``cache purge --path-regex`` is matched against)."""
    return key.split("|", 3)[-1].partition("?")[0]
