"""CORS: which headers porter adds for a browser's cross-origin request.

Build a `CorsPolicy` once from `CorsSettings`. It never answers ``*`` together with
credentials: an allowed origin is echoed with ``Vary: Origin``. A disallowed origin gets no
CORS headers at all. Origins are compared exactly (scheme, host, port; scheme and host
case-insensitive, default ports ignored); patterns must match the whole normalised origin.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from filters.origin import normalise_origin
from filters.regex_guard import GuardedPattern, MatchTimeout, compile_pattern
from filters.settings import CorsSettings

log = logging.getLogger("porter.filters")

# Budget for matching one origin against the configured patterns, seconds.
_ORIGIN_MATCH_TIMEOUT = 0.02


def is_preflight(method: str, origin: str | None, request_method: str | None) -> bool:
    """An OPTIONS request with Origin and Access-Control-Request-Method is a preflight."""
    return method == "OPTIONS" and origin is not None and request_method is not None


@dataclass(frozen=True)
class CorsPolicy:
    """Compiled CORS settings; see the module docstring for the rules it applies."""

    settings: CorsSettings
    whitelist: frozenset[str]
    patterns: tuple[GuardedPattern, ...]

    @classmethod
    def from_settings(cls, settings: CorsSettings) -> CorsPolicy:
        whitelist = {normalise_origin(o) for o in settings.cors_origin_whitelist}
        return cls(
            settings,
            frozenset(o for o in whitelist if o is not None),
            tuple(compile_pattern(p) for p in settings.cors_origin_patterns),
        )

    @property
    def active(self) -> bool:
        """Whether any origin can be allowed at all."""
        s = self.settings
        return bool(
            s.cors_origin_allow_all or self.whitelist or self.patterns or s.allow_null_origin
        )

    def _allows(self, origin: str) -> bool:
        normal = normalise_origin(origin)
        if normal is None:
            return False
        if normal == "null":
            return self.settings.allow_null_origin
        if self.settings.cors_origin_allow_all or normal in self.whitelist:
            return True
        deadline = time.monotonic() + _ORIGIN_MATCH_TIMEOUT
        try:
            return any(p.fullmatches(normal, deadline) for p in self.patterns)
        except MatchTimeout as exc:
            log.warning("origin matching timed out: pattern %r; origin refused", str(exc))
            return False

    def response_headers(self, origin: str | None) -> dict[str, str]:
        """Headers for any response (200, 304, redirects, errors); empty when not allowed."""
        if origin is None or not self._allows(origin):
            return {}
        headers = self._origin_headers(origin)
        if self.settings.expose_headers:
            headers["Access-Control-Expose-Headers"] = ", ".join(self.settings.expose_headers)
        return headers

    def preflight_headers(
        self, origin: str | None, request_method: str | None, request_headers: str | None
    ) -> dict[str, str] | None:
        """Headers answering a preflight, or None when origin, method or a header is refused.

        `request_method` and `request_headers` are the values of Access-Control-Request-Method
        and Access-Control-Request-Headers (comma-separated, or None).
        """
        if origin is None or request_method is None or not self._allows(origin):
            return None
        if request_method not in self.settings.allow_methods:
            return None
        asked = _header_names(request_headers)
        allowed = {h.lower() for h in self.settings.allow_headers}
        if not asked <= allowed:
            return None
        headers = self._origin_headers(origin)
        headers["Access-Control-Allow-Methods"] = ", ".join(self.settings.allow_methods)
        if self.settings.allow_headers:
            headers["Access-Control-Allow-Headers"] = ", ".join(self.settings.allow_headers)
        headers["Access-Control-Max-Age"] = str(self.settings.max_age)
        return headers

    def _origin_headers(self, origin: str) -> dict[str, str]:
        if self.settings.cors_origin_allow_all and not self.settings.allow_credentials:
            return {"Access-Control-Allow-Origin": "*"}
        headers = {"Access-Control-Allow-Origin": origin, "Vary": "Origin"}
        if self.settings.allow_credentials:
            headers["Access-Control-Allow-Credentials"] = "true"
        return headers


def _header_names(value: str | None) -> set[str]:
    if not value:
        return set()
    return {name.strip().lower() for name in value.split(",") if name.strip()}
