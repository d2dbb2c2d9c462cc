"""Open-redirect corpus: after login porter only ever sends a browser to a same-site path."""

from __future__ import annotations

import itertools

import pytest

from filters.redirects import safe_redirect

DEFAULT = "/webclient/"

HOSTS = ["evil.example", "evil.example:443", "127.0.0.1", "[::1]", "user@evil.example"]
SHAPES = [
    "//{h}",
    "///{h}",
    "////{h}/x",
    "/\\{h}",
    "\\\\{h}",
    "\\/{h}",
    "/\\/{h}",
    "http://{h}",
    "https://{h}/webclient/",
    "HTTPS://{h}",
    "http:/{h}",
    "http:{h}",
    "https:\\\\{h}",
    "//{h}/%2e%2e",
    "/%2F{h}",
    "/%2f%2f{h}",
    "/%5C{h}",
    "/%5c%5c{h}",
    "/%252F%252F{h}",
    "%2F%2F{h}",
    " //{h}",
    "\t//{h}",
    "/\t/{h}",
    "/%09/{h}",
    "/\r\n/{h}",
    "/%0d%0a/{h}",
    "/%00/{h}",
    "\x00//{h}",
    "/ /{h}",
    "/./{h}",
    "/../{h}",
    "/webclient/../..//{h}",
    "/webclient/%2e%2e/%2e%2e//{h}",
    "//{h}?url=/webclient/",
    "/webclient/#//{h}",
    "/\u3000/{h}",
    "/\uff0f{h}",
    "/\u2028//{h}",
]
OTHER_HOSTILE = [
    "javascript:alert(1)",
    "JaVaScRiPt:alert(1)",
    "data:text/html,<script>alert(1)</script>",
    "vbscript:msgbox",
    "webclient/",
    "./webclient/",
    "../webclient/",
    "?next=//evil.example",
    "#//evil.example",
    "/porter/login",
    "/porter/logout?url=/webclient/",
    "/x" * 1100,
    "/webclient/?q=a b",
    "/webclient/?q=%0d%0aSet-Cookie:x=1",
    "/webclient/?q=\\evil",
    "/webclient/%",
    "/webclient/%zz",
    "/webclient//x",
    "/webclient/;jsessionid=1",
]
HOSTILE = [shape.format(h=host) for shape, host in itertools.product(SHAPES, HOSTS)] + OTHER_HOSTILE

BENIGN = [
    "/webclient/",
    "/webclient/?show=image-123",
    "/webclient/img_detail/12/?dataset=3&x=%20y",
    "/webgateway/render_image/1/0/0/",
    "/iviewer/?images=1,2,3",
    "/",
]


def test_corpus_is_large_enough() -> None:
    assert len(set(HOSTILE)) >= 100


@pytest.mark.parametrize("target", HOSTILE)
def test_hostile_target_falls_back_to_default(target: str) -> None:
    assert safe_redirect(target, "", DEFAULT) == DEFAULT


@pytest.mark.parametrize("target", BENIGN)
def test_same_site_path_is_kept(target: str) -> None:
    assert safe_redirect(target, "", DEFAULT) == target


def test_missing_target_gives_default() -> None:
    assert safe_redirect(None, "", DEFAULT) == DEFAULT
    assert safe_redirect("", "", DEFAULT) == DEFAULT


def test_prefix_is_required_when_mounted() -> None:
    assert safe_redirect("/omero/webclient/", "/omero", "/omero/webclient/") == "/omero/webclient/"
    assert safe_redirect("/webclient/", "/omero", "/omero/x/") == "/omero/x/"
    assert safe_redirect("/omeroevil/", "/omero", "/omero/x/") == "/omero/x/"
    assert safe_redirect("/omero/porter/login", "/omero", "/omero/x/") == "/omero/x/"


@pytest.mark.parametrize("target", HOSTILE[:40])
def test_hostile_target_under_prefix_falls_back(target: str) -> None:
    assert safe_redirect(target, "/omero", "/omero/webclient/") == "/omero/webclient/"
