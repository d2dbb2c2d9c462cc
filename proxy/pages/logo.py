"""`/porter/assets/logo`: the logo of porter's pages, from `[login] login_logo_file`.

`login_logo` is a URL the browser loads (OMERO.web's setting, as is): an https:// address, or
a path on this site such as /static/mysite/logo.png, which only works when something serves
it to anonymous visitors (the front proxy: deploy/nginx-porter.conf serves /static/ itself;
OMERO.web's gunicorn does not, outside DEBUG). `login_logo_file` needs nothing else: porter
reads the image at start and serves it to everyone, as an image only (an SVG cannot run a
script on porter's origin).
"""

from __future__ import annotations

from aiohttp import hdrs, web

from proxy.answers import LOGO_PATH
from proxy.config import ConfigError, Problem
from proxy.keys import SETTINGS
from proxy.logo_file import Logo, read_logo

LOGO = web.AppKey("logo", Logo)


async def logo(request: web.Request) -> web.StreamResponse:
    found = request.app[LOGO]
    return web.Response(
        body=found.body,
        content_type=found.content_type,
        headers={
            hdrs.CACHE_CONTROL: "public, max-age=3600",
            "X-Content-Type-Options": "nosniff",
            "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; sandbox",
        },
    )


def add_routes(app: web.Application, prefix: str) -> None:
    path = app[SETTINGS].login.login_logo_file
    if not path:
        return
    try:
        app[LOGO] = read_logo(path)
    except ValueError as exc:  # checked at load; gone or changed since
        raise ConfigError("login", [Problem("login.login_logo_file", str(exc))]) from None
    app.router.add_get(prefix + LOGO_PATH, logo)
