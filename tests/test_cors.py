"""CORS: exact and pattern origins, echo with Vary, never '*' with credentials, preflights."""

from __future__ import annotations

import logging

import pytest

from filters.cors import CorsPolicy, is_preflight
from filters.origin import check_origins, normalise_origin
from filters.settings import CorsSettings

SITE = "https://viewer.example.org"


def policy(**kwargs: object) -> CorsPolicy:
    return CorsPolicy.from_settings(CorsSettings(**kwargs))  # type: ignore[arg-type]


LISTED = policy(
    cors_origin_whitelist=(SITE, "http://localhost:8080"),
    cors_origin_patterns=(r"https://[a-z0-9-]+\.lab\.example\.net",),
)


def test_default_settings_allow_no_origin() -> None:
    assert policy().response_headers(SITE) == {}
    assert policy().preflight_headers(SITE, "GET", None) is None


def test_listed_origin_is_echoed_with_credentials_and_vary() -> None:
    assert LISTED.response_headers(SITE) == {
        "Access-Control-Allow-Origin": SITE,
        "Access-Control-Allow-Credentials": "true",
        "Vary": "Origin",
    }


@pytest.mark.parametrize(
    "origin",
    [
        "https://VIEWER.example.org",
        "HTTPS://viewer.example.org",
        "https://viewer.example.org:443",
        "http://localhost:8080",
        "https://a-1.lab.example.net",
    ],
)
def test_allowed_origins_match_exactly_up_to_case_and_default_port(origin: str) -> None:
    assert LISTED.response_headers(origin)["Access-Control-Allow-Origin"] == origin


@pytest.mark.parametrize(
    "origin",
    [
        None,
        "",
        "null",
        "http://viewer.example.org",
        "https://viewer.example.org:8443",
        "https://viewer.example.org.evil.com",
        "https://evilviewer.example.org",
        "https://viewer.example.org/",
        "https://viewer.example.org/path",
        "https://user@viewer.example.org",
        "http://localhost",
        "http://localhost:8081",
        "https://a.lab.example.net.evil.com",
        "https://lab.example.net",
        "https://x.y.lab.example.net",
        "https://viewer.example.org\r\nSet-Cookie: x=1",
        "viewer.example.org",
        "https://" + "a" * 400 + ".lab.example.net",
    ],
)
def test_other_origins_get_no_cors_headers(origin: str | None) -> None:
    assert LISTED.response_headers(origin) == {}
    assert LISTED.preflight_headers(origin, "GET", None) is None


def test_allow_all_with_credentials_echoes_the_origin_never_a_star() -> None:
    headers = policy(cors_origin_allow_all=True).response_headers("https://any.example.com")
    assert headers["Access-Control-Allow-Origin"] == "https://any.example.com"
    assert headers["Access-Control-Allow-Credentials"] == "true"
    assert headers["Vary"] == "Origin"


def test_allow_all_without_credentials_answers_star_without_credentials() -> None:
    headers = policy(cors_origin_allow_all=True, allow_credentials=False).response_headers(SITE)
    assert headers == {"Access-Control-Allow-Origin": "*"}


def test_null_origin_needs_its_own_setting_even_with_allow_all() -> None:
    assert policy(cors_origin_allow_all=True).response_headers("null") == {}
    headers = policy(allow_null_origin=True).response_headers("null")
    assert headers["Access-Control-Allow-Origin"] == "null"


def test_exposed_headers_are_listed_on_responses_not_preflights() -> None:
    p = policy(cors_origin_whitelist=(SITE,), expose_headers=("X-Request-Id",))
    assert p.response_headers(SITE)["Access-Control-Expose-Headers"] == "X-Request-Id"
    preflight = p.preflight_headers(SITE, "GET", None)
    assert preflight is not None
    assert "Access-Control-Expose-Headers" not in preflight


def test_preflight_answers_methods_headers_and_max_age() -> None:
    headers = LISTED.preflight_headers(SITE, "POST", "Content-Type, X-CSRFToken")
    assert headers is not None
    assert headers["Access-Control-Allow-Origin"] == SITE
    assert headers["Access-Control-Allow-Credentials"] == "true"
    assert headers["Vary"] == "Origin"
    assert "POST" in headers["Access-Control-Allow-Methods"].split(", ")
    assert "x-csrftoken" in headers["Access-Control-Allow-Headers"].split(", ")
    assert headers["Access-Control-Max-Age"] == "86400"


def test_preflight_refuses_unlisted_method_or_header() -> None:
    assert LISTED.preflight_headers(SITE, "PROPFIND", None) is None
    assert LISTED.preflight_headers(SITE, "POST", "content-type, x-secret") is None
    assert LISTED.preflight_headers(SITE, None, None) is None
    assert (
        policy(cors_origin_whitelist=(SITE,), allow_methods=("GET",)).preflight_headers(
            SITE, "POST", None
        )
        is None
    )


def test_is_preflight_needs_options_origin_and_requested_method() -> None:
    assert is_preflight("OPTIONS", SITE, "POST")
    assert not is_preflight("OPTIONS", SITE, None)
    assert not is_preflight("OPTIONS", None, "POST")
    assert not is_preflight("GET", SITE, "POST")


def test_runaway_origin_pattern_refuses_the_origin(caplog: pytest.LogCaptureFixture) -> None:
    p = policy(cors_origin_patterns=(r"https://(a|a)+\.example",))
    with caplog.at_level(logging.WARNING, logger="porter.filters"):
        assert p.response_headers("https://" + "a" * 40 + ".example.org") == {}
    assert "timed out" in caplog.text


@pytest.mark.parametrize(
    ("origin", "normal"),
    [
        ("https://Example.ORG", "https://example.org"),
        ("https://example.org:443", "https://example.org"),
        ("http://example.org:80", "http://example.org"),
        ("http://example.org:443", "http://example.org:443"),
        ("http://[::1]:8080", "http://[::1]:8080"),
        ("null", "null"),
        ("https://example.org:0", None),
        ("https://example.org:70000", None),
        ("https://", None),
        ("example.org", None),
    ],
)
def test_normalise_origin(origin: str, normal: str | None) -> None:
    assert normalise_origin(origin) == normal


def test_check_origins_explains_what_an_origin_looks_like() -> None:
    check_origins(("https://example.org", "http://localhost:4080"))
    with pytest.raises(ValueError, match="scheme://host"):
        check_origins(("example.org",))
    with pytest.raises(ValueError, match="trailing"):
        check_origins(("https://example.org/",))
    with pytest.raises(ValueError, match="allow_null_origin"):
        check_origins(("null",))


def test_allow_all_with_credentials_is_warned_about() -> None:
    assert CorsSettings(cors_origin_allow_all=True).warnings()
    assert CorsSettings(cors_origin_allow_all=True, allow_credentials=False).warnings() == []
