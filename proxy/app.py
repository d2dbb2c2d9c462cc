"""The composition root: build the aiohttp app from settings."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import aiohttp
import jinja2
from aiohttp import web
from cachetools import TTLCache

import metrics
from auth.jwt_verify import JwtVerifier
from auth.lifecycle import PeriodicJob, end_all, keepalive_job, purge_job
from auth.login_throttle import MemoryLoginThrottle, RedisLoginThrottle, Throttle
from auth.oidc import OidcProvider, PreLoginSealer
from auth.omero_backend import OmeroBackend
from auth.porter_tokens import PorterTokenIssuer
from auth.public_session import PublicSession, SharedPublicEntries
from auth.rate_limit_redis import RedisRates
from auth.session_store import SessionStoreUnavailable
from auth.sessions import SessionRecord
from auth.single_flight import SingleFlight
from auth.sso_identity import SsoIdentityMapper
from auth.sso_sessions import SharedSsoSessions, SsoSessions
from auth.store_memory import MemorySessionStore
from auth.stores import Stores, create_stores
from auth.verified_tokens import VerifiedTokens
from cache.disk import DiskError
from cache.purges import RedisPurgeLog
from cache.store import PublicCache
from filters.cors import CorsPolicy
from filters.forwarded import TrustedProxies
from filters.hosts import AllowedHosts
from filters.limits import MemoryRates
from filters.rules import PublicRules, RuleMatcher
from mailer import MailSender
from proxy import metrics_http
from proxy.answers import REFUSAL_PAGES, RefusalPages, error_response
from proxy.config import ConfigError, Problem
from proxy.csrf import Csrf
from proxy.forwarding.handoff import handoff, web_logout
from proxy.forwarding.send import UpstreamRequest
from proxy.gate import gate
from proxy.identity import tokens
from proxy.identity.chain import AUTHENTICATORS, Authenticator
from proxy.identity.public import public_user
from proxy.identity.session import porter_session
from proxy.keys import (
    ALLOWED_HOSTS,
    CACHE_FLIGHTS,
    CLIENT_SESSION,
    COOKIE_NAMES,
    CORS,
    CSRF,
    JWT_VERIFIER,
    MAILER,
    METRICS_ON,
    OIDC_PROVIDERS,
    OMERO,
    OUTAGES,
    PORTER_TOKENS,
    PRELOGIN,
    PUBLIC,
    PUBLIC_CACHE,
    PUBLIC_RULES,
    READINESS_CHECKS,
    SCOPE,
    SESSION_STORE,
    SETTINGS,
    SSO_MAPPER,
    SSO_SESSIONS,
    STATUS_DETAIL,
    STORE_SEAL,
    STORES,
    TEMPLATES,
    THROTTLE,
    TRUSTED_PROXIES,
    VERIFIED_TOKENS,
    WEBSOCKETS,
    CookieNames,
    ReadinessCheck,
)
from proxy.limits import LIMITS, Limits, robots_route
from proxy.middleware.boundary import error_boundary
from proxy.middleware.cors import on_response_prepare
from proxy.middleware.scope import request_scope
from proxy.omero_outages import OmeroOutages
from proxy.pages import cache_admin, forgot_password, forward_auth, health, login, logo, oidc, sso
from proxy.pages.feedback import feedback
from proxy.settings import Settings

log = logging.getLogger("porter.proxy")

CleanupContext = Callable[[web.Application], AsyncIterator[None]]

TEMPLATE_DIR = Path(__file__).resolve().parent / "templates"


def create_app(settings: Settings) -> web.Application:
    """The porter application for `settings` (nothing is started until it runs)."""
    # Porter's body limit is enforced while streaming (413), not by aiohttp's read() cap.
    app = web.Application(middlewares=[request_scope, error_boundary], client_max_size=1024**2)
    app[SETTINGS] = settings
    _add_request_parts(app)
    _add_omero(app)
    app.cleanup_ctx.append(_client_session)
    app.cleanup_ctx.append(_mail_sender)
    app.cleanup_ctx.append(_omero_backend)
    _add_session_store(app)
    if settings.public_session.enabled:
        _add_public_session(app)
        if settings.cache.enabled:
            _add_public_cache(app)
    if settings.sso.enabled or settings.sso.porter_tokens.enabled or settings.oidc.enabled:
        _add_sso(app)
    if settings.oidc.enabled:
        _add_oidc(app)
    app[AUTHENTICATORS] = authenticators(settings)
    app.on_shutdown.append(_close_websockets)
    _add_pages(app)
    if settings.limits.enabled:
        _add_limits(app)
    if settings.metrics.enabled:
        _add_metrics(app)
    # [\s\S]: a decoded path may hold any character (even a newline): gate() judges it.
    app.router.add_route("*", r"/{tail:[\s\S]*}", _dispatch)
    return app


def _add_request_parts(app: web.Application) -> None:
    """What every request's scope and answer use: cookie names, trusted proxies and hosts,
    templates and refusal pages, CSRF, the path rules, CORS, the admin mailer."""
    settings = app[SETTINGS]
    proxy = settings.proxy
    app[METRICS_ON] = False  # _add_metrics turns it on
    app[COOKIE_NAMES] = CookieNames.from_settings(settings)
    app[TRUSTED_PROXIES] = TrustedProxies(proxy.trusted_proxies)
    app[ALLOWED_HOSTS] = AllowedHosts(proxy.allowed_hosts)
    app[STATUS_DETAIL] = TrustedProxies(proxy.status_detail_from)
    app[TEMPLATES] = _templates(settings)
    app[REFUSAL_PAGES] = RefusalPages(app)
    app[CSRF] = Csrf(
        proxy.secret_key,
        cookie_path=(proxy.prefix or "") + "/porter/",
        https=lambda request: request[SCOPE].client.scheme == "https",
    )
    app[MAILER] = MailSender(settings.mail)
    app[WEBSOCKETS] = set()
    app[PUBLIC_RULES] = RuleMatcher(public_rules(settings))
    app.on_cleanup.append(_close_rules)
    app[CORS] = CorsPolicy.from_settings(settings.cors)
    if app[CORS].active:  # CORS headers are the only thing left for prepare-time
        app.on_response_prepare.append(on_response_prepare)


def _add_omero(app: web.Application) -> None:
    """The OMERO backend, its outage mails, and the readiness checks."""
    app[OMERO] = OmeroBackend(app[SETTINGS].omero)
    outages = app[OUTAGES] = OmeroOutages(app[MAILER].submit)
    app[OMERO].on_reached = outages.answered
    app[OMERO].on_unreachable = outages.failed
    app[READINESS_CHECKS] = {
        "upstream": health.upstream_check(app),
        "omero": health.omero_check(app),
        "session_store": health.session_store_check(app),
    }


def _add_pages(app: web.Application) -> None:
    """Porter's own pages, under proxy.prefix; each module adds what its settings turn on."""
    settings = app[SETTINGS]
    prefix = settings.proxy.prefix
    health.add_routes(app, prefix)
    app.router.add_post(prefix + "/porter/feedback", feedback)
    for pages in (login, logo, forgot_password, sso, oidc, forward_auth, cache_admin):
        pages.add_routes(app, prefix)
    if settings.limits.robots_txt:
        app.router.add_get(prefix + "/robots.txt", robots_route(settings.limits.robots_txt))
    if settings.forward_auth.enabled and settings.forward_auth.decision_cache_ttl > 0:
        app[forward_auth.DECISIONS] = TTLCache(
            settings.forward_auth.decision_cache_size, settings.forward_auth.decision_cache_ttl
        )


def _add_limits(app: web.Application) -> None:
    """Admission to OMERO.web by class, and the per-network rates: in Redis with the Redis
    store (every process and host counts alike), else in this process."""
    settings = app[SETTINGS]
    rates = app[STORES].shared(lambda redis, prefix: RedisRates(redis, prefix).hit)
    slots = settings.limits.slots(settings.proxy.workers)
    app[LIMITS] = Limits(settings.limits, slots, rates or MemoryRates().hit, app[COOKIE_NAMES])
    app[READINESS_CHECKS]["limits"] = app[LIMITS].check


GAUGES_INTERVAL = 15.0  # seconds between readings of the gauges Prometheus shows


def _add_metrics(app: web.Application) -> None:
    """Count every request, read the gauges periodically, serve /porter/metrics."""
    app[METRICS_ON] = True
    metrics.build_info(_version())
    metrics_http.add_routes(app, app[SETTINGS].proxy.prefix)

    async def read_gauges() -> None:
        metrics.SESSIONS.set(await app[SESSION_STORE].count())
        cache = app.get(PUBLIC_CACHE)
        if cache is not None:
            metrics.CACHE_MEMORY_BYTES.set(cache.memory_bytes)
            disk = await cache.disk_stats()
            if disk is not None:
                metrics.CACHE_DISK_BYTES.set(disk["bytes"])

    job = PeriodicJob("metrics gauges", GAUGES_INTERVAL, read_gauges)

    async def gauges(app: web.Application) -> AsyncIterator[None]:
        with contextlib.suppress(SessionStoreUnavailable):  # Redis down at start: read later
            await read_gauges()
        async for _ in job.cleanup_ctx(app):
            yield

    app.cleanup_ctx.append(gauges)


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("omero-porter")
    except PackageNotFoundError:
        return "unknown"


CACHE_PURGE_POLL = 2.0  # seconds between reads of the disk tier's purge log


def _add_public_cache(app: web.Application) -> None:
    """The public answer cache (proxy/forwarding/cached.py serves from it)."""
    settings = app[SETTINGS].cache
    shared = app[STORES].shared(RedisPurgeLog)
    try:
        cache = PublicCache(settings, shared)
    except DiskError as exc:
        raise ConfigError(
            "[cache]", [Problem("cache.disk_dir", f"cannot be opened: {exc}")]
        ) from None
    app[PUBLIC_CACHE] = cache
    flights = app[CACHE_FLIGHTS] = SingleFlight[str, Any]("cache fetch")
    app.on_cleanup.append(lambda _: flights.close())
    if cache.disk is not None:
        app[READINESS_CHECKS]["cache_disk"] = cache.check_disk
    if cache.disk is not None or shared is not None:
        # purges another porter process noted reach this memory tier
        job = PeriodicJob("cache purges", CACHE_PURGE_POLL, cache.apply_purges)
        app.cleanup_ctx.append(job.cleanup_ctx)

    async def close(app: web.Application) -> None:
        await cache.close()  # background refreshes cancelled, disk writes landed

    app.on_cleanup.append(close)


def authenticators(settings: Settings) -> tuple[Authenticator, ...]:
    """The identity chain, in order: a token a script sends, porter's own session, a front
    SSO layer's cookie, then the public user (on public paths only)."""
    sso = settings.sso
    chain: list[Authenticator] = []
    if sso.enabled and sso.bearer:
        chain.append(tokens.bearer)
    chain.append(porter_session)
    if sso.enabled and sso.token_cookie:
        chain.append(tokens.sso_cookie)
    if settings.public_session.enabled:
        chain.append(public_user)
    return tuple(chain)


def public_rules(settings: Settings) -> PublicRules:
    """The URL rules; with public access off, nothing is public (the deny rules still show
    in `run.py explain`)."""
    rules = settings.public
    if not (rules.enabled and settings.public_session.enabled):
        rules = replace(rules, url_filter="", rules=())
    return PublicRules.from_settings(rules)


def _templates(settings: Settings) -> jinja2.Environment:
    # An admin's templates_dir is searched first, so any page can be replaced one by one.
    search = [settings.proxy.templates_dir] if settings.proxy.templates_dir else []
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader([*search, str(TEMPLATE_DIR)]),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
    )


def porter_page(settings: Settings, method: str, target: str) -> str | None:
    """What answers METHOD TARGET before the gate: porter's own page (its handler's name),
    or None when the gate decides (`run.py explain`: the router the running porter uses)."""
    from aiohttp.test_utils import make_mocked_request

    app = create_app(settings)

    async def resolve() -> str | None:
        request = make_mocked_request(method, target, app=app)
        match = await app.router.resolve(request)
        if match.http_exception is not None:
            return f"porter's own page, {match.http_exception.status} for {method}"
        handler = match.handler
        if handler is _dispatch:
            path = request.rel_url.path
            prefix = settings.proxy.prefix
            below = path[len(prefix) :] if prefix and path.startswith(prefix) else path
            return "porter's reserved prefix, 404" if below.startswith(health.RESERVED) else None
        return f"porter's own page ({getattr(handler, '__name__', 'handler')})"

    return asyncio.run(resolve())


async def _dispatch(request: web.Request) -> web.StreamResponse:
    prefix = request.app[SETTINGS].proxy.prefix
    path = request.raw_path.split("?", 1)[0]
    if prefix and not (path == prefix or path.startswith(prefix + "/")):
        return error_response(request, 404)
    if request[SCOPE].path.startswith(health.RESERVED):
        return error_response(request, 404)
    return await gate(request)


async def _client_session(app: web.Application) -> AsyncIterator[None]:
    proxy = app[SETTINGS].proxy
    connector = aiohttp.TCPConnector(
        limit=proxy.upstream_connections, limit_per_host=proxy.upstream_connections
    )
    timeout = aiohttp.ClientTimeout(
        total=None, sock_connect=proxy.connect_timeout, sock_read=proxy.read_timeout
    )
    session = aiohttp.ClientSession(
        connector=connector,
        timeout=timeout,
        auto_decompress=False,
        cookie_jar=aiohttp.DummyCookieJar(),  # cookies belong to the browser or a session record
        request_class=UpstreamRequest,  # no User-Agent or Accept-Encoding of aiohttp's
    )
    app[CLIENT_SESSION] = session
    yield
    await session.close()


async def _mail_sender(app: web.Application) -> AsyncIterator[None]:
    sender = app[MAILER]
    await sender.start()
    yield
    await sender.stop(app[SETTINGS].mail.drain_timeout)


async def _omero_backend(app: web.Application) -> AsyncIterator[None]:
    yield
    await app[OMERO].aclose()


def _add_session_store(app: web.Application) -> None:
    """The session store and its jobs: purge expired sessions, keep used ones alive."""
    settings = app[SETTINGS].session
    backend = app[OMERO]

    async def end_web(record: SessionRecord) -> bool:  # no Django session left in OMERO.web
        return await web_logout(app[CLIENT_SESSION], app[SETTINGS], record.cookies)

    app[STORE_SEAL] = app[SETTINGS].proxy.store_seal()
    stores = app[STORES] = create_stores(
        settings,
        on_evict=_counted(backend.close, "evicted"),
        end_web=end_web,
        seal=app[STORE_SEAL],
    )
    store = app[SESSION_STORE] = stores.sessions
    app[THROTTLE] = _throttle(app[SETTINGS], stores)
    app.cleanup_ctx.append(_closing(store.close))
    if isinstance(store, MemorySessionStore):  # after the jobs stop, before the store closes
        app.cleanup_ctx.append(_ending_at_shutdown(store, end_web))
    expired = _counted(backend.close, "expired")
    app.cleanup_ctx.append(purge_job(store, expired, settings, end_web).cleanup_ctx)
    app.cleanup_ctx.append(keepalive_job(store, backend.keep_alive, settings).cleanup_ctx)


def _ending_at_shutdown(
    store: MemorySessionStore, end_web: Callable[[SessionRecord], Awaitable[bool]]
) -> Callable[[web.Application], AsyncIterator[None]]:
    """Sessions kept in this process die with it: at shutdown, end their OMERO.web and OMERO
    sessions too (nobody could use them after a restart), within `shutdown_grace`."""

    async def ctx(app: web.Application) -> AsyncIterator[None]:
        yield
        records = store.pop_all()
        if not records:
            return
        grace = app[SETTINGS].proxy.shutdown_grace
        # a server found down now is no news worth a mail: porter is stopping
        app[OMERO].on_unreachable = app[OMERO].on_reached = None
        closing = end_all(records, _counted(app[OMERO].close, "shutdown"), end_web=end_web)
        try:
            closed = await asyncio.wait_for(closing, grace)
        except asyncio.TimeoutError:
            log.warning(
                "shutdown: %d session(s) not all closed within shutdown_grace (%g s); OMERO "
                "ends the rest at its own timeout",
                len(records),
                grace,
            )
            return
        log.info("shutdown: closed %d of %d session(s) on OMERO", closed, len(records))

    return ctx


def _counted(
    close: Callable[[int | str, str], Awaitable[None]], reason: str
) -> Callable[[int | str, str], Awaitable[None]]:
    """`close`, counted in porter_omero_sessions_closed_total{reason} when it succeeds."""

    async def counted(server: int | str, key: str) -> None:
        await close(server, key)
        metrics.OMERO_SESSIONS_CLOSED.labels(reason).inc()

    return counted


def _throttle(settings: Settings, stores: Stores) -> Throttle:
    """Failed logins counted where sessions live: in Redis, every process sees them."""
    login = settings.login
    per_address, per_user = login.max_failures_per_address, login.max_failures_per_user
    window = login.failure_window
    shared = stores.shared(
        lambda redis, prefix: RedisLoginThrottle(
            redis, prefix, max_per_address=per_address, max_per_user=per_user, window=window
        )
    )
    return shared or MemoryLoginThrottle(
        max_per_address=per_address, max_per_user=per_user, window=window
    )


def _add_public_session(app: web.Application) -> None:
    """The shared public session: created on first need, kept alive, closed at shutdown."""
    settings = app[SETTINGS]
    seal = app[STORE_SEAL]

    async def handoff_public(server_id: int, key: str) -> dict[str, str]:
        return await handoff(app, server_id, key)

    public = PublicSession(
        app[OMERO],
        settings.public_session,
        handoff_public,
        shared=app[STORES].shared(lambda redis, prefix: SharedPublicEntries(redis, prefix, seal)),
    )
    app[PUBLIC] = public
    app.cleanup_ctx.append(_closing(public.close))
    interval = settings.session.ping_interval / 1000
    keepalive = PeriodicJob("public session keepalive", interval, public.keep_alive)
    app.cleanup_ctx.append(keepalive.cleanup_ctx)


def _add_sso(app: web.Application) -> None:
    """Token verification, porter's own tokens, and the SSO users' OMERO sessions."""
    settings = app[SETTINGS]
    backend = app[OMERO]
    app[SSO_MAPPER] = SsoIdentityMapper(
        settings.sso, protected=[settings.omero.admin_user] if settings.omero.admin_user else []
    )
    app[VERIFIED_TOKENS] = VerifiedTokens()

    async def handoff_sso(server_id: int, key: str) -> dict[str, str]:
        return await handoff(app, server_id, key)

    ttl = settings.sso.session_time_to_live
    create_timeout, seal = settings.public_session.create_timeout, app[STORE_SEAL]
    shared = app[STORES].shared(
        lambda redis, prefix: SharedSsoSessions(redis, prefix, ttl * 0.95, create_timeout, seal)
    )
    sessions = SsoSessions(
        backend,
        handoff_sso,
        ttl=ttl,
        tti=settings.sso.session_time_to_idle,
        allowed_admins=frozenset(settings.sso.allow_admin_accounts),
        shared=shared,
        recheck=settings.public_session.recheck_interval,
    )
    app[SSO_SESSIONS] = sessions
    app.cleanup_ctx.append(_jwt_verifier)
    app.cleanup_ctx.append(_closing(sessions.close))
    interval = settings.session.ping_interval / 1000
    admin = PeriodicJob("SSO admin session keepalive", interval, backend.keep_admin_alive)
    app.cleanup_ctx.append(admin.cleanup_ctx)


def _add_oidc(app: web.Application) -> None:
    """The OpenID providers (discovery at start-up) and the pre-login cookie's seal."""
    settings = app[SETTINGS]
    # workers share proxy.secret_key (set for them when unset): any worker finishes a login
    app[PRELOGIN] = PreLoginSealer(settings.proxy.secret_key or secrets.token_urlsafe(32))
    client: list[aiohttp.ClientSession] = []  # made in the loop, at start-up
    app[OIDC_PROVIDERS] = {
        p.id: OidcProvider(p, settings.oidc, settings.sso, lambda: client[0])
        for p in settings.oidc.providers
    }

    async def providers(app: web.Application) -> AsyncIterator[None]:
        # the providers' own HTTP client: a slow or hung provider holds its connections,
        # never the ones OMERO.web's requests need
        client.append(
            aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=OIDC_CONNECTIONS),
                cookie_jar=aiohttp.DummyCookieJar(),
                trust_env=False,
            )
        )
        # fetched at start-up without delaying it: a provider that is down or slow does not
        # keep porter from serving; a login meanwhile waits for the same fetch
        first = [asyncio.create_task(p.discovery()) for p in app[OIDC_PROVIDERS].values()]
        for task in first:
            task.add_done_callback(_quietly)
        yield
        for task in first:
            task.cancel()
        await asyncio.gather(*first, return_exceptions=True)
        for provider in app[OIDC_PROVIDERS].values():
            await provider.aclose()
        await client[0].close()

    app.cleanup_ctx.append(providers)
    app[READINESS_CHECKS]["oidc"] = _oidc_check(app)


OIDC_CONNECTIONS = 20  # connections to all OpenID providers together


def _quietly(task: asyncio.Task[object]) -> None:
    """A start-up discovery's failure is logged by the provider and retried on a login."""
    if not task.cancelled():
        task.exception()


def _oidc_check(app: web.Application) -> ReadinessCheck:
    """Advisory: password login and sessions work without the providers."""

    async def check() -> tuple[bool, str]:
        providers = app[OIDC_PROVIDERS].values()
        down = [f"{p.id}: {p.error}" for p in providers if p.error]
        if down:
            return False, "; ".join(down)
        # usable, but a logout there does not reach porter: said, not counted as down
        silent = [p.id for p in providers if p.backchannel_logout is False]
        if silent:
            return True, f"ok; no back-channel logout from {', '.join(silent)}"
        return True, "ok"

    return check


async def _jwt_verifier(app: web.Application) -> AsyncIterator[None]:
    """The verifier fetches JWKS over its own HTTP session: made and closed in the loop."""
    settings = app[SETTINGS]
    extra = []
    if settings.sso.porter_tokens.enabled:
        issuer = PorterTokenIssuer(settings.sso.porter_tokens)
        app[PORTER_TOKENS] = issuer
        extra.append(issuer.trusted_issuer())
    verifier = JwtVerifier.from_settings(settings.sso, extra=extra)
    app[JWT_VERIFIER] = verifier
    yield
    await verifier.aclose()


def _closing(close: Callable[[], Awaitable[None]]) -> CleanupContext:
    """A cleanup context that only closes: the object was built with the app."""

    async def context(app: web.Application) -> AsyncIterator[None]:
        yield
        await close()

    return context


async def _close_rules(app: web.Application) -> None:
    app[PUBLIC_RULES].close()


async def _close_websockets(app: web.Application) -> None:
    open_sockets: set[web.WebSocketResponse] = app[WEBSOCKETS]
    for ws in list(open_sockets):
        await ws.close(code=aiohttp.WSCloseCode.GOING_AWAY, message=b"server shutdown")
