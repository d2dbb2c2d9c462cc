"""Settings of `filters`: the public URL rules (``[public]``) and CORS (``[cors]``)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from filters.lint import lint_url_filter
from filters.origin import check_origins
from filters.regex_guard import check_pattern, check_patterns

# An HTTP method is a token (RFC 9110); porter compares methods case-sensitively.
_METHOD = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
READ_METHODS = ("GET", "HEAD")


def _check_methods(methods: tuple[str, ...]) -> None:
    if not methods:
        raise ValueError("list at least one method, e.g. ['GET', 'HEAD']")
    for method in methods:
        if not _METHOD.fullmatch(method) or method != method.upper():
            raise ValueError(f"{method!r} is not an upper-case HTTP method name")


@dataclass(frozen=True)
class MethodRule:
    """One ``[[public.rules]]`` table: these methods are public on paths matching `path`."""

    methods: tuple[str, ...] = field(
        default=READ_METHODS,
        metadata={
            "doc": "HTTP methods this rule makes public (GET implies HEAD)",
            "check": _check_methods,
        },
    )
    path: str = field(
        default="",
        metadata={
            "doc": "Regex matched against the whole canonical path (empty: nothing)",
            "check": check_pattern,
        },
    )


@dataclass(frozen=True)
class PublicRuleSettings:
    """The URL-rule part of ``[public]`` (the shared public session's fields belong to auth)."""

    enabled: bool = field(
        default=False,
        metadata={
            "doc": "Serve matching URLs to anonymous visitors as the public user "
            "(OMERO.web: omero.web.public.enabled)"
        },
    )
    url_filter: str = field(
        default="",
        metadata={
            "doc": "Regex of public URLs, matched against the WHOLE canonical path, "
            "never the query; empty: none (OMERO.web: omero.web.public.url_filter)",
            "check": check_pattern,
        },
    )
    get_only: bool = field(
        default=True,
        metadata={
            "doc": "Public access only for GET and HEAD, for url_filter and rules "
            "(OMERO.web: omero.web.public.get_only)"
        },
    )
    rules: tuple[MethodRule, ...] = field(
        default=(),
        metadata={"doc": "Extra public rules, each {methods, path}, beside url_filter"},
    )
    deny: tuple[str, ...] = field(
        default=(),
        metadata={
            "doc": "Regexes of paths never public, matched case-insensitively; added to "
            "the built-in ones (/webadmin, login, logout, /porter)",
            "check": check_patterns,
        },
    )
    match_timeout: float = field(
        default=0.1,
        metadata={
            "doc": "Seconds of regex matching allowed per request; past it the path "
            "is not public (fail closed)",
            "min": 0.001,
            "max": 1.0,
        },
    )

    def problems(self) -> list[tuple[str, str]]:
        """Rules that could never apply as written."""
        found: list[tuple[str, str]] = []
        for index, rule in enumerate(self.rules):
            extra = [m for m in rule.methods if m not in READ_METHODS]
            if self.get_only and extra:
                found.append(
                    (
                        f"rules[{index}].methods",
                        f"{', '.join(extra)} cannot be public while get_only = true: "
                        "set get_only = false to allow them",
                    )
                )
            if not rule.path:
                found.append((f"rules[{index}].path", "empty: the rule would match nothing"))
        return found

    def warnings(self) -> list[tuple[str, str]]:
        """Legal but suspicious settings, for ``run.py check`` to print."""
        found = [("url_filter", w) for w in lint_url_filter(self.url_filter)]
        for index, rule in enumerate(self.rules):
            found += [(f"rules[{index}].path", w) for w in lint_url_filter(rule.path)]
        if self.enabled and not self.url_filter and not self.rules:
            found.append(("enabled", "true, but no url_filter or rules: nothing is public"))
        return found


@dataclass(frozen=True)
class CorsSettings:
    """``[cors]``: which other sites' pages may call porter from a browser."""

    cors_origin_allow_all: bool = field(
        default=False,
        metadata={
            "doc": "Allow every origin (echoed back, never '*' with credentials) "
            "(OMERO.web: omero.web.cors_origin_allow_all)"
        },
    )
    cors_origin_whitelist: tuple[str, ...] = field(
        default=(),
        metadata={
            "doc": "Allowed origins, exact, e.g. https://example.org "
            "(OMERO.web: omero.web.cors_origin_whitelist)",
            "check": check_origins,
        },
    )
    cors_origin_patterns: tuple[str, ...] = field(
        default=(),
        metadata={
            "doc": "Regexes of allowed origins, matched against the whole lower-cased "
            "origin, e.g. https://[a-z0-9-]+\\.example\\.org",
            "check": check_patterns,
        },
    )
    allow_null_origin: bool = field(
        default=False,
        metadata={
            "doc": "Allow the origin 'null' (sandboxed frames, file: pages); "
            "cors_origin_allow_all does not include it"
        },
    )
    allow_credentials: bool = field(
        default=True,
        metadata={"doc": "Let allowed origins send cookies (OMERO.web: always true)"},
    )
    allow_methods: tuple[str, ...] = field(
        default=("DELETE", "GET", "OPTIONS", "PATCH", "POST", "PUT"),
        metadata={"doc": "Methods a preflight may ask for", "check": _check_methods},
    )
    allow_headers: tuple[str, ...] = field(
        default=(
            "accept",
            "authorization",
            "content-type",
            "user-agent",
            "x-csrftoken",
            "x-requested-with",
        ),
        metadata={"doc": "Request headers a preflight may ask for (case-insensitive)"},
    )
    expose_headers: tuple[str, ...] = field(
        default=(),
        metadata={"doc": "Response headers scripts of allowed origins may read"},
    )
    max_age: int = field(
        default=86400,
        metadata={"doc": "Seconds a browser may cache a preflight answer", "min": 0},
    )

    def warnings(self) -> list[tuple[str, str]]:
        """Legal but risky settings, for ``run.py check`` to print."""
        if self.cors_origin_allow_all and self.allow_credentials:
            return [
                (
                    "cors_origin_allow_all",
                    "with allow_credentials, any web site can read what a logged-in "
                    "user can see (as with OMERO.web); list origins instead",
                )
            ]
        return []
