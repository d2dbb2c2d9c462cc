"""The 500 page's feedback form: the user's comment goes to the configured admins only."""

from __future__ import annotations

import re

from aiohttp import web

from proxy.answers import PAGE_HEADERS, error_response, page_look, posted_form
from proxy.keys import CSRF, SETTINGS, TEMPLATES
from proxy.reporting import report_feedback

_REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,64}\Z")
MAX_FORM = 16 * 1024


async def feedback(request: web.Request) -> web.StreamResponse:
    settings = request.app[SETTINGS]
    if not settings.mail.active:
        return error_response(request, 404)
    if (request.content_length or 0) > MAX_FORM:
        return error_response(request, 413)
    form = await posted_form(request)
    token = form.get("csrf_token")
    if not isinstance(token, str) or not request.app[CSRF].valid(request, token, "feedback"):
        return error_response(request, 403, "The form has expired. Please go back and try again.")
    about = form.get("request_id")
    comment = form.get("comment")
    if not isinstance(about, str) or not _REQUEST_ID.match(about) or not isinstance(comment, str):
        return error_response(request, 400)
    comment = comment.strip()[: settings.mail.comment_size]
    if not comment:
        return error_response(request, 400, "Please write a comment.")
    report_feedback(request, about, comment)
    page = request.app[TEMPLATES].get_template("feedback.html")
    html = page.render(
        message="Your comment has been passed to the administrators.",
        **page_look(settings),
    )
    return web.Response(text=html, content_type="text/html", headers=PAGE_HEADERS)
