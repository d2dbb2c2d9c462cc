"""Typed keys for application and request state."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import jinja2
from aiohttp import web

from auth.jwt_verify import JwtVerifier
from auth.login_throttle import Throttle
from auth.oidc import PRELOGIN_COOKIE, RELOGIN_COOKIE, OidcProvider, PreLoginSealer
from auth.omero_backend import OmeroBackend
from auth.porter_tokens import PorterTokenIssuer
from auth.public_session import PublicSession
from auth.session_store import SessionStore
from auth.single_flight import SingleFlight
from auth.sso_identity import SsoIdentityMapper
from auth.sso_sessions import SsoSessions
from auth.store_seal import StoreSeal
from auth.stores import Stores
from auth.verified_tokens import VerifiedTokens
from cache.store import PublicCache
from filters.cors import CorsPolicy
from filters.forwarded import Client, TrustedProxies
from filters.hosts import AllowedHosts
from filters.rules import Decision, RuleMatcher
from mailer import MailSender
from proxy.csrf import COOKIE as CSRF_COOKIE
from proxy.csrf import Csrf
from proxy.omero_outages import OmeroOutages
from proxy.principal import Principal
from proxy.settings import Settings


@dataclass(frozen=True)
class RequestScope:
    """What porter knows about a request before deciding anything, and `notes`: what its
    handling tells the access log and the last headers (attributes, not request keys: most
    requests never set them, and a missing key costs a raised KeyError)."""

    request_id: str
    client: Client
    path: str  # the path below the mount prefix, as received (still percent-encoded)
    notes: Notes = field(default_factory=lambda: Notes())


@dataclass(slots=True)
class Notes:
    # Seconds OMERO.web took to send its response headers (the access log's upstream time).
    upstream_seconds: float | None = None
    # HIT, MISS or STALE when the public cache answered (the access log's cache field).
    cache_state: str | None = None
    # No access line of porter's (a granted forward-auth decision: the front proxy logs it).
    quiet: bool = False
    # The response must clear porter's session cookie (a stale cookie was sent).
    clear_cookie: bool = False
    # Which [limits] rule refused the request (the access log's rule, kind "refused").
    refusal: str | None = None


@dataclass(frozen=True)
class CookieNames:
    """Cookie names the forwarding rewrites, worked out once from the settings.

    `held`: OMERO.web's session cookies porter keeps server-side (never to or from browsers);
    `dropped`: every browser cookie not sent upstream (the held names and porter's own);
    `credentials`: the cookies the identity chain reads (porter's session, the SSO token).
    """

    held: frozenset[str]
    dropped: frozenset[str]
    credentials: frozenset[str] = frozenset()

    @classmethod
    def from_settings(cls, settings: Settings) -> CookieNames:
        held = frozenset({settings.login.upstream_session_cookie})
        credentials = {settings.session.cookie_name}
        if settings.sso.token_cookie:
            credentials.add(settings.sso.token_cookie)
        porter = {CSRF_COOKIE, PRELOGIN_COOKIE, RELOGIN_COOKIE, *credentials}
        return cls(held, held | porter, frozenset(credentials))


# A readiness check answers (ok, detail); detail is shown on /porter/readyz.
ReadinessCheck = Callable[[], Awaitable[tuple[bool, str]]]

# The request id's header, both ways (hdrs has no constant for it).
REQUEST_ID = "X-Request-Id"

SETTINGS = web.AppKey("settings", Settings)
COOKIE_NAMES = web.AppKey("cookie_names", CookieNames)
CLIENT_SESSION = web.AppKey("client_session", aiohttp.ClientSession)
TRUSTED_PROXIES = web.AppKey("trusted_proxies", TrustedProxies)
ALLOWED_HOSTS = web.AppKey("allowed_hosts", AllowedHosts)
STATUS_DETAIL = web.AppKey("status_detail", TrustedProxies)  # who sees readyz details
TEMPLATES = web.AppKey("templates", jinja2.Environment)
READINESS_CHECKS = web.AppKey("readiness_checks", dict[str, ReadinessCheck])
MAILER = web.AppKey("mailer", MailSender)
OMERO = web.AppKey("omero", OmeroBackend)
STORES = web.AppKey("stores", Stores)
SESSION_STORE = web.AppKey("session_store", SessionStore)
STORE_SEAL = web.AppKey("store_seal", StoreSeal)  # names and seals what porter keeps in Redis
THROTTLE = web.AppKey("login_throttle", Throttle)
PUBLIC_RULES = web.AppKey("public_rules", RuleMatcher)
PUBLIC = web.AppKey("public_session", PublicSession)
CORS = web.AppKey("cors", CorsPolicy)
JWT_VERIFIER = web.AppKey("jwt_verifier", JwtVerifier)
SSO_MAPPER = web.AppKey("sso_mapper", SsoIdentityMapper)
SSO_SESSIONS = web.AppKey("sso_sessions", SsoSessions)
PORTER_TOKENS = web.AppKey("porter_tokens", PorterTokenIssuer)
VERIFIED_TOKENS = web.AppKey("verified_tokens", VerifiedTokens)
CSRF = web.AppKey("csrf", Csrf)
OUTAGES = web.AppKey("omero_outages", OmeroOutages)  # the admins' outage mail
OIDC_PROVIDERS = web.AppKey("oidc_providers", dict[str, OidcProvider])
PRELOGIN = web.AppKey("oidc_prelogin", PreLoginSealer)
WEBSOCKETS = web.AppKey("websockets", set[web.WebSocketResponse])
PUBLIC_CACHE = web.AppKey("public_cache", PublicCache)
# Set when [metrics] is on: the request scope counts every request.
METRICS_ON = web.AppKey("metrics_on", bool)
# The one fetch in progress per cache key (proxy/forwarding/cached.py).
CACHE_FLIGHTS = web.AppKey("cache_flights", SingleFlight[str, Any])


SCOPE = web.RequestKey("scope", RequestScope)
# The path's decision (filters.rules) and who the request runs as (identity chain).
DECISION = web.RequestKey("decision", Decision)
PRINCIPAL = web.RequestKey("principal", Principal)
# The raw path and query to forward: the canonical path, re-encoded, and the query as sent.
TARGET = web.RequestKey("target", str)
