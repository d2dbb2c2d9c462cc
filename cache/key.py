"""The cache key: everything the shared public answer depends on, and nothing a visitor can
vary for free.

- the server id of the public session (answers of two OMERO servers never mix);
- the scheme and host OMERO.web sees (it builds absolute URLs from them: without them in the
  key, one request with a forged Host would poison the answer for everyone);
- the canonical path, as forwarded;
- the query, normalised: parameters in name order (values of one name keep their order,
  which Django's QueryDict depends on), jQuery's ``_=`` cache-buster dropped. The fetch is
  sent with exactly this query, so the stored answer is the answer to the key.
"""

from __future__ import annotations

import functools
from operator import itemgetter
from urllib.parse import unquote_plus

CACHE_BUSTER = "_"


@functools.lru_cache(maxsize=1024)  # the same tiles again and again; bounded: 1024 x 8 KiB
def normalise_query(query: str) -> str:
    """`query` with its parameters in name order and ``_`` dropped, each ``name=value`` kept
    byte for byte. Names are compared as Django decodes them, and the sort is stable, so
    repeated names keep their order (QueryDict.get answers the last one). Two spellings of
    one byte (``%63`` and ``c``) stay two keys: a duplicate entry at worst, never a wrong one.
    """
    pairs: list[tuple[str, str]] = []
    for part in query.split("&"):
        if not part:
            continue
        name = part.partition("=")[0]
        if "%" in name or "+" in name:
            name = unquote_plus(name, encoding="latin-1")
        if name != CACHE_BUSTER:
            pairs.append((name, part))
    pairs.sort(key=itemgetter(0))
    return "&".join(part for _, part in pairs)


def cache_key(server_id: int, scheme: str, host: str, path: str, query: str) -> str:
    """The key of the public answer to `path` (canonical, encoded) and `query` (normalised)."""
    return f"{server_id}|{scheme}|{host}|{path}?{query}"


def key_path(key: str) -> str:
    """The path part of `key` (what ``cache purge --path-regex`` is matched against)."""
    return key.split("|", 3)[-1].partition("?")[0]
