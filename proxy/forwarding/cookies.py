"""Cookies on the way through: held OMERO.web cookies in, OMERO.web's Set-Cookie for them out.

Porter keeps OMERO.web's session cookie in its own session record: the browser's copy of that
name is dropped on the way in and the held one added; OMERO.web's Set-Cookie for it is taken
off the answer (and captured) so browsers never see it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from http.cookies import CookieError, SimpleCookie

from aiohttp import hdrs
from multidict import CIMultiDict


def parse_cookie_header(values: Iterable[str]) -> list[tuple[str, str]]:
    """Name/value pairs of Cookie headers, in order, keeping values byte for byte."""
    pairs: list[tuple[str, str]] = []
    for value in values:
        for part in value.split(";"):
            name, sep, val = part.strip().partition("=")
            if sep and name:
                pairs.append((name.strip(), val.strip()))
    return pairs


def rewrite_cookies(
    headers: CIMultiDict[str], drop: frozenset[str], held: Mapping[str, str] | None
) -> None:
    """Remove cookies named in `drop` from the Cookie header, then add the `held` ones."""
    pairs = [
        (n, v) for n, v in parse_cookie_header(headers.getall(hdrs.COOKIE, ())) if n not in drop
    ]
    pairs += list((held or {}).items())
    headers.popall(hdrs.COOKIE, None)
    if pairs:
        headers[hdrs.COOKIE] = "; ".join(f"{n}={v}" for n, v in pairs)


def take_set_cookies(
    headers: CIMultiDict[str], names: frozenset[str], https: bool = False
) -> dict[str, str | None]:
    """Remove Set-Cookie headers for `names`; return their new values (None: deleted). Over
    `https` (the scheme the browser used, as porter trusts it), every cookie relayed gets
    `Secure`: OMERO.web behind porter speaks plain HTTP and would not add it (its csrftoken)."""
    if hdrs.SET_COOKIE not in headers:
        return {}
    taken: dict[str, str | None] = {}
    kept: list[str] = []
    for value in headers.getall(hdrs.SET_COOKIE, ()):
        name = value.split("=", 1)[0].strip()
        if name not in names:
            kept.append(value + "; Secure" if https and not _is_secure(value) else value)
            continue
        taken[name] = _cookie_value(value, name)
    headers.popall(hdrs.SET_COOKIE, None)
    for value in kept:
        headers.add(hdrs.SET_COOKIE, value)
    return taken


def _is_secure(header: str) -> bool:
    return any(part.strip().lower() == "secure" for part in header.split(";")[1:])


def _cookie_value(header: str, name: str) -> str | None:
    cookie: SimpleCookie = SimpleCookie()
    try:
        cookie.load(header)
    except CookieError:
        return None
    morsel = cookie.get(name)
    if morsel is None or not morsel.value:
        return None
    max_age = morsel["max-age"]
    if max_age not in ("", None) and str(max_age).lstrip("-").isdigit() and int(max_age) <= 0:
        return None
    return morsel.value
