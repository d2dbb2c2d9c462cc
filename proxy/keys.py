"""Typed keys for application and request state."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import aiohttp
import jinja2
from aiohttp import web

from auth.omero_backend import OmeroBackend
from auth.store import SessionStore
from filters.forwarded import Client, TrustedProxies
from filters.throttle import LoginThrottle
from mailer import MailSender
from proxy.csrf import Csrf
from proxy.settings import Settings


@dataclass(frozen=True)
class RequestScope:
    """What porter knows about a request before deciding anything."""

    request_id: str
    client: Client
    path: str  # the path below the mount prefix, as received (still percent-encoded)


@dataclass(frozen=True)
class Who:
    """Who a request runs as, for reports and logs; `secrets` are values to mask there."""

    user: str = "anonymous"
    server_id: int | None = None
    secrets: frozenset[str] = frozenset()


# A readiness check answers (ok, detail); detail is shown on /porter/readyz.
ReadinessCheck = Callable[[], Awaitable[tuple[bool, str]]]

SETTINGS = web.AppKey("settings", Settings)
CLIENT_SESSION = web.AppKey("client_session", aiohttp.ClientSession)
TRUSTED_PROXIES = web.AppKey("trusted_proxies", TrustedProxies)
TEMPLATES = web.AppKey("templates", jinja2.Environment)
READINESS_CHECKS = web.AppKey("readiness_checks", dict[str, ReadinessCheck])
MAILER = web.AppKey("mailer", MailSender)
OMERO = web.AppKey("omero", OmeroBackend)
SESSION_STORE = web.AppKey("session_store", SessionStore)
THROTTLE = web.AppKey("login_throttle", LoginThrottle)
CSRF = web.AppKey("csrf", Csrf)
WEBSOCKETS = web.AppKey("websockets", set[web.WebSocketResponse])

SCOPE = web.RequestKey("scope", RequestScope)
WHO = web.RequestKey("who", Who)
