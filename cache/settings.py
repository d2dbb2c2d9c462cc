"""``[cache]``: which public answers porter keeps, for how long, and in how much room."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from filters.regex_guard import check_pattern

CACHEABLE_METHODS = ("GET", "HEAD")
DAY = 86400

# OMERO.web's image views that answer the same bytes to every caller of the same URL, as the
# same user (webgateway/urls.py, webclient/urls.py). Left out on purpose: render_image_rdef
# and render_image_region_rdef (they render with settings kept in the Django session),
# render_ome_tiff and render_movie (exports: large, and render_movie runs a script).
RENDER_VIEWS = (
    "render_image|render_image_region|render_split_channel|render_row_plot|render_col_plot"
    "|render_thumbnail|render_roi_thumbnail|render_shape_thumbnail|render_shape_mask"
    "|render_birds_eye_view|get_thumbnail|get_thumbnails|get_thumbnails_json"
)


def _check_methods(methods: tuple[str, ...]) -> None:
    if not methods:
        raise ValueError("list at least one method: GET and/or HEAD")
    for method in methods:
        if method not in CACHEABLE_METHODS:
            raise ValueError(f"{method!r}: only GET and HEAD answers are cached")


def _check_dir(value: str) -> None:
    if value and not Path(value).is_absolute():
        raise ValueError("must be an absolute directory path (or empty: no disk tier)")


@dataclass(frozen=True)
class CacheRule:
    """One ``[[cache.rules]]`` table: public answers to these methods on paths matching
    `path` are kept `ttl` seconds."""

    path: str = field(
        default="",
        metadata={
            "doc": "Regex matched against the WHOLE canonical path below the prefix",
            "check": check_pattern,
        },
    )
    methods: tuple[str, ...] = field(
        default=CACHEABLE_METHODS,
        metadata={
            "doc": "GET and/or HEAD (a HEAD is answered from a GET)",
            "check": _check_methods,
        },
    )
    ttl: float = field(
        default=DAY,
        metadata={"doc": "Seconds an answer is fresh", "min": 1.0, "max": 365.0 * DAY},
    )


DEFAULT_RULES = (
    CacheRule(path=rf"/(webgateway|webclient)/({RENDER_VIEWS})/.*", ttl=DAY),
    CacheRule(path=r"/(webgateway|webclient)/imgData/.*", ttl=600.0),
    CacheRule(path=r"/static/.*", ttl=DAY),
)


@dataclass(frozen=True)
class CacheSettings:
    """The public answer cache (off by default)."""

    enabled: bool = field(
        default=False,
        metadata={
            "doc": "Keep public answers (the shared public user's, never a logged-in user's) "
            "and serve them without OMERO.web"
        },
    )
    rules: tuple[CacheRule, ...] = field(
        default=DEFAULT_RULES,
        metadata={"doc": "What is cached: tables of {path, methods, ttl}; the first match wins"},
    )
    memory_bytes: int = field(
        default=256 * 1024**2,
        metadata={
            "doc": "Bytes of answers kept in memory at most (least recently used go)",
            "min": 1024**2,
        },
    )
    max_object_size: int = field(
        default=8 * 1024**2,
        metadata={
            "doc": "Largest answer in bytes that is cached; larger ones are streamed",
            "min": 1024,
        },
    )
    disk_dir: str = field(
        default="",
        metadata={
            "doc": "Directory of the disk tier, shared by the porter processes of this host "
            "(created 0700; only porter may write it); empty: memory only",
            "check": _check_dir,
        },
    )
    disk_bytes: int = field(
        default=10 * 1024**3,
        metadata={"doc": "Bytes the disk tier keeps at most", "min": 1024**2},
    )
    stale_while_revalidate: float = field(
        default=60.0,
        metadata={
            "doc": "Seconds past its ttl an answer is still served while ONE background "
            "request refreshes it",
            "min": 0.0,
            "max": float(DAY),
        },
    )
    stale_if_error: float = field(
        default=float(DAY),
        metadata={
            "doc": "Seconds past its ttl an answer is served when OMERO.web is down or "
            "answers 5xx (X-Cache: STALE), instead of an error",
            "min": 0.0,
            "max": 30.0 * DAY,
        },
    )
    lock_timeout: float = field(
        default=30.0,
        metadata={
            "doc": "Seconds requests for one missing answer wait for the ONE request that "
            "fetches it; past it they get a stale copy or 504",
            "min": 0.1,
            "max": 600.0,
        },
    )

    @property
    def keep(self) -> float:
        """Seconds past its ttl an answer is kept at all."""
        return max(self.stale_while_revalidate, self.stale_if_error)

    def warnings(self, public: bool) -> list[tuple[str, str]]:
        """Legal but doubtful settings, for ``run.py check`` to print."""
        found = []
        if self.enabled and not public:
            found.append(("enabled", "true, but [public] is off: only public answers are cached"))
        if self.max_object_size > self.memory_bytes:
            found.append(
                ("max_object_size", "larger than memory_bytes: the largest answers never fit")
            )
        if self.enabled and not self.rules:
            found.append(("rules", "empty: nothing is cached"))
        return found
