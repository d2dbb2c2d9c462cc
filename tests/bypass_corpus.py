"""Bypass corpus: request targets that try to reach a non-public path as public, as data.

Each `Case` is sent exactly as written on the request line (every target is printable ASCII
that aiohttp's parser accepts). With the rules built from `CORPUS_RULES`, `decide` must give
`kind`; `forwarded` is the path that reaches the upstream (None: nothing is forwarded). When
the target has a query, the upstream sees ``forwarded + "?" + query`` with the query as sent.
tests/test_bypass_corpus.py checks `decide`; an end-to-end test can replay the same cases
through the proxy to an echo upstream.
"""

from __future__ import annotations

from typing import NamedTuple

from filters.rules import DecisionKind
from filters.settings import MethodRule, PublicRuleSettings

# OMERO.web's documented public filter, adapted to whole-path matching, plus two method
# rules and one configured deny rule.
CORPUS_RULES = PublicRuleSettings(
    enabled=True,
    url_filter=r"^/webgateway/(?!(archived_files|download_as)).*",
    rules=(
        MethodRule(methods=("GET",), path=r"^/webclient/(render_thumbnail|img_detail)/[0-9]+/"),
        MethodRule(methods=("GET", "HEAD"), path=r"^/api/v0/m/.*"),
    ),
    deny=(r"^/webgateway/original_file(/.*)?",),
)


class Case(NamedTuple):
    method: str
    target: str
    kind: DecisionKind
    forwarded: str | None
    note: str


BAD: DecisionKind = "bad_request"
IMG = "/webgateway/render_image/1/0/0/"

CASES: tuple[Case, ...] = (
    # Plain public and non-public paths.
    Case("GET", IMG, "public", IMG, "public by url_filter"),
    Case("HEAD", IMG, "public", IMG, "HEAD is read-only"),
    Case("GET", IMG + "?c=1|0:255$FF0000", "public", IMG, "query is forwarded, not matched"),
    Case("POST", IMG, "login", IMG, "get_only"),
    Case("PUT", IMG, "login", IMG, "get_only"),
    Case("DELETE", IMG, "login", IMG, "get_only"),
    Case("OPTIONS", IMG, "login", IMG, "get_only (preflights are answered before rules)"),
    Case("get", IMG, "login", IMG, "methods are case-sensitive: 'get' is not GET"),
    Case("GET", "/webgateway/", "public", "/webgateway/", "the filter's .* matches empty"),
    Case(
        "GET",
        "/webgateway/archived_files/download/1/",
        "login",
        "/webgateway/archived_files/download/1/",
        "lookahead",
    ),
    Case(
        "GET", "/webgateway/download_as/?image=1", "login", "/webgateway/download_as/", "lookahead"
    ),
    Case(
        "GET",
        "/webclient/render_thumbnail/5/",
        "public",
        "/webclient/render_thumbnail/5/",
        "method rule",
    ),
    Case(
        "HEAD", "/webclient/img_detail/5/", "public", "/webclient/img_detail/5/", "GET implies HEAD"
    ),
    Case(
        "GET",
        "/webclient/render_thumbnail/5/extra",
        "login",
        "/webclient/render_thumbnail/5/extra",
        "whole path, not a prefix",
    ),
    Case(
        "GET",
        "/webclient/render_thumbnail/x/",
        "login",
        "/webclient/render_thumbnail/x/",
        "rule wants digits",
    ),
    Case("GET", "/api/v0/m/images/", "public", "/api/v0/m/images/", "method rule"),
    Case("GET", "/", "login", "/", "root is not public"),
    Case("GET", "/webclient/", "login", "/webclient/", "not public"),
    Case("GET", "/webadminx/", "login", "/webadminx/", "not a deny path, not public either"),
    # Public-looking text in the query string.
    Case(
        "GET", "/webadmin/?/webgateway/render_image/1/", "deny", "/webadmin/", "query never matched"
    ),
    Case(
        "GET",
        "/webclient/?path=/webgateway/render_image/1/",
        "login",
        "/webclient/",
        "query never matched",
    ),
    Case(
        "GET",
        "/webclient/login/?url=/webgateway/",
        "deny",
        "/webclient/login/",
        "query never matched",
    ),
    Case(
        "GET",
        "/webadmin/myaccount/?webgateway/",
        "deny",
        "/webadmin/myaccount/",
        "query never matched",
    ),
    Case(
        "GET",
        "/webgateway/render_image/1/?/../../webadmin/",
        "public",
        "/webgateway/render_image/1/",
        "traversal in the query is inert",
    ),
    Case("GET", "/x?/webgateway/", "login", "/x", "query never matched"),
    Case(
        "GET",
        "/webadmin/?%2F..%2Fwebgateway%2F",
        "deny",
        "/webadmin/",
        "encoded text in the query is not decoded",
    ),
    # Dot segments, raw, encoded, mixed, double-encoded, overlong.
    Case("GET", "/webgateway/../webadmin/", BAD, None, "dot segment"),
    Case("GET", "/webgateway/%2e%2e/webadmin/", BAD, None, "encoded dot segment"),
    Case("GET", "/webgateway/%2E%2E/webadmin/", BAD, None, "encoded dot segment, upper hex"),
    Case("GET", "/webgateway/.%2e/webadmin/", BAD, None, "half-encoded dot segment"),
    Case("GET", "/webgateway/%2e./webadmin/", BAD, None, "half-encoded dot segment"),
    Case("GET", "/webgateway/./render_image/1/", BAD, None, "single dot segment"),
    Case("GET", "/webgateway/%2e/render_image/1/", BAD, None, "encoded single dot"),
    Case("GET", "/webgateway/render_image/..", BAD, None, "trailing dot segment"),
    Case("GET", "/webgateway/%252e%252e/webadmin/", BAD, None, "double-encoded dots"),
    Case("GET", "/webgateway/%c0%ae%c0%ae/webadmin/", BAD, None, "overlong UTF-8 dots"),
    Case("GET", "/webgateway/.../", "public", "/webgateway/.../", "three dots are a plain segment"),
    # Encoded and overlong slashes.
    Case("GET", "/webgateway%2F..%2Fwebadmin/", BAD, None, "encoded slash"),
    Case("GET", "/webgateway/render_image%2f1/", BAD, None, "encoded slash, lower hex"),
    Case("GET", "/%2Fwebadmin/", BAD, None, "encoded slash making //"),
    Case("GET", "/webgateway/%252F../webadmin/", BAD, None, "double-encoded slash"),
    Case("GET", "/webgateway/%c0%af../webadmin/", BAD, None, "overlong slash (2 bytes)"),
    Case("GET", "/webgateway/%e0%80%af../webadmin/", BAD, None, "overlong slash (3 bytes)"),
    # Backslashes.
    Case("GET", "/webgateway\\..\\webadmin\\", BAD, None, "raw backslashes"),
    Case("GET", "/webgateway/%5c../webadmin/", BAD, None, "encoded backslash"),
    Case("GET", "/webgateway/%5C", BAD, None, "encoded backslash, upper hex"),
    Case("GET", "/webgateway/%255c../webadmin/", BAD, None, "double-encoded backslash"),
    # Empty segments.
    Case("GET", "//webadmin/", BAD, None, "leading //"),
    Case("GET", "//webgateway/render_image/1/", BAD, None, "leading // on a public path"),
    Case("GET", "/webgateway//render_image/1/", BAD, None, "inner //"),
    Case("GET", "/webgateway/render_image/1//", BAD, None, "trailing //"),
    # Path parameters.
    Case("GET", "/webadmin;/", BAD, None, "; parameter"),
    Case("GET", "/webgateway/render_image/1;jsessionid=abc/", BAD, None, "Tomcat-style parameter"),
    Case("GET", "/webgateway/..;/webadmin/", BAD, None, "..; traversal"),
    Case("GET", "/webgateway/%3b/", BAD, None, "encoded ;"),
    Case("GET", "/webadmin/%3B/", BAD, None, "encoded ;, upper hex"),
    # Case variants and needlessly encoded letters.
    Case("GET", "/WEBADMIN/", "deny", "/WEBADMIN/", "deny rules ignore case"),
    Case("GET", "/WebAdmin/myaccount/", "deny", "/WebAdmin/myaccount/", "deny rules ignore case"),
    Case("GET", "/webclient/LOGIN/", "deny", "/webclient/LOGIN/", "deny rules ignore case"),
    Case(
        "GET",
        "/WebGateway/render_image/1/",
        "login",
        "/WebGateway/render_image/1/",
        "public rules are case-sensitive, like Django",
    ),
    Case(
        "GET",
        "/webgateway/ARCHIVED_FILES/1/",
        "public",
        "/webgateway/ARCHIVED_FILES/1/",
        "lookahead is case-sensitive; Django 404s it too",
    ),
    Case("GET", "/%77ebadmin/", "deny", "/webadmin/", "encoded letter decoded once"),
    Case("GET", "/%57EBADMIN/", "deny", "/WEBADMIN/", "encoded upper-case letter"),
    Case(
        "GET",
        "/webgateway/render_%69mage/1/",
        "public",
        "/webgateway/render_image/1/",
        "forwarded without needless escapes",
    ),
    # NUL and control characters.
    Case("GET", "/webgateway/render_image/1/%00", BAD, None, "NUL"),
    Case("GET", "/webadmin%00/", BAD, None, "NUL inside a segment"),
    Case("GET", "/webgateway/%0d%0aX-Injected:%20x", BAD, None, "CR LF"),
    Case("GET", "/webgateway/%09/", BAD, None, "tab"),
    Case("GET", "/webgateway/%7f/", BAD, None, "DEL"),
    Case("GET", "/webgateway/%c2%85/", BAD, None, "C1 control (NEL)"),
    Case("GET", "/webgateway/%2500/", BAD, None, "double-encoded NUL"),
    # Invalid UTF-8 and malformed escapes.
    Case("GET", "/webgateway/%ff/", BAD, None, "invalid UTF-8 byte"),
    Case("GET", "/webgateway/%c3/", BAD, None, "truncated UTF-8"),
    Case("GET", "/webgateway/%ed%a0%80/", BAD, None, "encoded surrogate"),
    Case("GET", "/webgateway/%f4%90%80%80/", BAD, None, "beyond U+10FFFF"),
    Case("GET", "/webgateway/%zz/", BAD, None, "malformed escape"),
    Case("GET", "/webgateway/%", BAD, None, "lone %"),
    Case("GET", "/webgateway/%2", BAD, None, "short escape"),
    Case("GET", "/webgateway/%u002e%u002e/webadmin/", BAD, None, "IIS %u escape"),
    # Fragments.
    Case("GET", "/webgateway/render_image/1/#x", BAD, None, "raw # in the path"),
    Case("GET", "/webadmin/#/webgateway/", BAD, None, "raw # in the path"),
    Case("GET", "/webgateway/%23/../../webadmin/", BAD, None, "encoded #"),
    Case("GET", "/webgateway/%3F/", BAD, None, "encoded ?"),
    Case(
        "GET",
        "/webgateway/render_image/1/?x#/webadmin/",
        "public",
        "/webgateway/render_image/1/",
        "# after ? belongs to the query",
    ),
    # Legal characters that must reach the upstream as the same character.
    Case(
        "GET",
        "/webgateway/caf%c3%a9/",
        "public",
        "/webgateway/caf%C3%A9/",
        "UTF-8, hex case normalised",
    ),
    Case("GET", "/webgateway/a%20b/", "public", "/webgateway/a%20b/", "space stays encoded"),
    Case("GET", "/webgateway/a+b/", "public", "/webgateway/a+b/", "+ is literal in a path"),
    Case("GET", "/webgateway/%7e/", "public", "/webgateway/~/", "unreserved ~ decoded"),
    Case("GET", '/webgateway/a"b', "public", "/webgateway/a%22b", "raw quote re-encoded"),
    # Deny rules: built-in and configured, whatever the method.
    Case("GET", "/webadmin", "deny", "/webadmin", "built-in deny"),
    Case(
        "GET",
        "/webadmin/forgottenpassword/",
        "deny",
        "/webadmin/forgottenpassword/",
        "password reset",
    ),
    Case(
        "POST",
        "/webadmin/forgottenpassword/",
        "deny",
        "/webadmin/forgottenpassword/",
        "password reset",
    ),
    Case("GET", "/webclient/logout/", "deny", "/webclient/logout/", "built-in deny"),
    Case("GET", "/api/v0/login/", "deny", "/api/v0/login/", "built-in deny"),
    Case("GET", "/porter/login", "deny", "/porter/login", "porter's own prefix"),
    Case(
        "GET",
        "/webgateway/original_file/1/",
        "deny",
        "/webgateway/original_file/1/",
        "configured deny beats url_filter",
    ),
    Case(
        "GET",
        "/WebGateway/Original_File/1/",
        "deny",
        "/WebGateway/Original_File/1/",
        "configured deny ignores case",
    ),
    # Not a path at all.
    Case(
        "GET", "http://evil.example/webgateway/render_image/1/", BAD, None, "absolute-form target"
    ),
    Case("GET", "/webgateway/" + "a" * 5000, BAD, None, "longer than MAX_PATH_LENGTH"),
)
