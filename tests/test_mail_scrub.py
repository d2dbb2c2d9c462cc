"""Scrubbing masks each kind of credential wherever it appears and keeps ordinary text."""

from __future__ import annotations

import pytest

from mailer.compose import html_to_text, shown_headers
from mailer.scrub import MASK, mask_query, scrub_text

SESSION_KEY = "6f1c3b0e-2f7a-4d7e-9a63-4b5e8d7f0c11"
JWT = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJlLWJ5dGVz"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("password=hunter2&x=1", "password=[masked]&x=1"),
        ("passwd: hunter2", "passwd: [masked]"),
        ("{'password': 'two words'}", "{'password': '[masked]'}"),
        ('{"token": "a\\"b"}', '{"token": "[masked]"}'),
        ("Cookie: sessionid=abc; csrftoken=def", "Cookie: [masked]; csrftoken=[masked]"),
        ("Authorization: Bearer abc.def", "Authorization: [masked] [masked]"),
        ("next=/webclient/?bsession=abc", "next=/webclient/?bsession=[masked]"),
        (f"joined {SESSION_KEY} ok", "joined [masked] ok"),
        (f"got {JWT}!", "got [masked]!"),
        ("key " + "0123456789abcdef" * 2, "key [masked]"),
        ("API_KEY=zzz", "API_KEY=[masked]"),
        ("KeyError: 'image'", "KeyError: 'image'"),
        ("KeyError: 'password=x'", "KeyError: 'password=[masked]'"),
        ("user=alice path=/webclient/", "user=alice path=/webclient/"),
    ],
)
def test_scrub_text_masks_secrets_by_name_and_by_shape(text: str, expected: str) -> None:
    assert scrub_text(text) == expected


def test_known_secret_values_are_masked_in_plain_and_url_encoded_form() -> None:
    text = "login as alice with Tr0ub&dor or Tr0ub%26dor or Tr0ub%26dor"
    assert scrub_text(text, {"Tr0ub&dor"}) == f"login as alice with {MASK} or {MASK} or {MASK}"


def test_too_short_known_values_are_not_searched() -> None:
    assert scrub_text("a b c", {"b"}) == "a b c"


def test_query_masks_secret_parameters_and_keeps_the_rest_in_order() -> None:
    query = "show=image-1&password=x&api_key=y&q=name&bsession=z&csrfmiddlewaretoken=w"
    assert mask_query(query) == (
        "show=image-1&password=[masked]&api_key=[masked]&q=name&bsession=[masked]"
        "&csrfmiddlewaretoken=[masked]"
    )


def test_only_whitelisted_headers_are_shown() -> None:
    headers = [
        ("Cookie", "sessionid=x"),
        ("Authorization", "Basic eA=="),
        ("Proxy-Authorization", "Basic eA=="),
        ("X-CSRFToken", "tok"),
        ("Set-Cookie", "a=b"),
        ("user-agent", "curl/8"),
        ("Referer", "https://h/webclient/?bsession=x&server=1"),
    ]
    assert shown_headers(headers, ()) == [
        "User-Agent: curl/8",
        "Referer: https://h/webclient/?bsession=[masked]&server=1",
    ]


def test_header_values_cannot_inject_lines() -> None:
    assert shown_headers([("User-Agent", "a\r\nBcc: x@example.org")], ()) == [
        "User-Agent: a  Bcc: x@example.org"
    ]


def test_html_error_page_becomes_text() -> None:
    page = "<html><style>p{}</style><h1>Server Error (500)</h1><p>a &amp; b</p></html>"
    assert html_to_text(page) == "Server Error (500)\na & b"
