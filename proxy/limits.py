"""`[limits]` in the gate: cheap refusals before the identity chain, admission after it.

    before_identity   User-Agent deny list (403); the per-network rate of a request that can
                      only be the public principal (no credential at all) (429)
    after_identity    the same rate for a public principal that sent a credential that did
                      not hold (a forged cookie must not skip the limit); the per-user rate
    slot              admission to OMERO.web by class (proxy/admission.py; 503)

Refusals are short answers made without templates, with Retry-After; the access log names
the rule (`limit:agent`, `limit:rate`, `limit:user_rate`, `limit:wait`).
"""

from __future__ import annotations

import contextlib
import functools
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

from aiohttp import hdrs, web

import metrics
from filters.forwarded import TrustedProxies
from filters.limits import AgentPolicy, LimitsSettings, Rate, cached_network
from filters.limits import retry_after as retry_value
from filters.rules import Decision
from proxy.admission import Admission, SlotClass
from proxy.answers import NO_STORE, PAGE_HEADERS, REFUSAL_PAGES, request_id_of, wants_json
from proxy.keys import SCOPE, CookieNames
from proxy.principal import Principal

Rates = Callable[[str, Rate], Awaitable[float]]
TALKER_WINDOW = 60.0  # seconds of public requests the top-talker list counts


class Limits:
    """The limits of one porter process."""

    def __init__(
        self, settings: LimitsSettings, slots: int, rates: Rates, cookies: CookieNames
    ) -> None:
        self.settings = settings
        self.admission = Admission(
            slots, settings.user_share, settings.public_share, settings.queue_timeout
        )
        self._rates = rates
        self._public = (
            Rate(settings.public_rate, settings.public_burst) if settings.public_rate else None
        )
        self._user = Rate(settings.user_rate, settings.user_burst) if settings.user_rate else None
        self._agents = AgentPolicy(settings.deny_agents)
        allowed = TrustedProxies(settings.allow_from)
        # addresses repeat (crawlers, users): their verdict is kept, bounded
        self._allowed = functools.lru_cache(maxsize=8192)(allowed.trusts_text)
        self._credential_cookies = cookies.credentials
        self._talkers: Counter[str] = Counter()
        self._previous: Counter[str] = Counter()
        self._window = time.monotonic()

    # -- before the identity chain --------------------------------------------------------

    async def before_identity(
        self, request: web.Request, decision: Decision
    ) -> web.StreamResponse | None:
        """A refusal made on the request alone, or None. Marks whether the public rate was
        already applied (`after_identity` then does not count it twice)."""
        address = request[SCOPE].client.address
        if self._allowed(address):
            request[_CHECKED] = True
            return None
        if self._agents.active and self._agents.denied(request.headers.get(hdrs.USER_AGENT, "")):
            return refuse(request, 403, "agent", None, "This client is not served here.")
        if decision.kind != "public" or self._credentialed(request):
            return None
        request[_CHECKED] = True
        return await self._public_rate(request, address)

    def _credentialed(self, request: web.Request) -> bool:
        if hdrs.AUTHORIZATION in request.headers:
            return True
        if hdrs.COOKIE not in request.headers:
            return False
        return not self._credential_cookies.isdisjoint(request.cookies)

    async def _public_rate(self, request: web.Request, address: str) -> web.StreamResponse | None:
        settings = self.settings
        net = cached_network(address, settings.ipv4_prefix, settings.ipv6_prefix)
        self._count(net)
        if self._public is None:
            return None
        wait = await self._rates("p:" + net, self._public)
        if wait > 0:
            return refuse(request, 429, "rate", wait, "Too many requests from your network.")
        return None

    # -- after it --------------------------------------------------------------------------

    async def after_identity(
        self, request: web.Request, principal: Principal
    ) -> web.StreamResponse | None:
        if request.get(_CHECKED):
            return None
        if principal.kind == "public":
            return await self._public_rate(request, request[SCOPE].client.address)
        if self._user is None or self._allowed(request[SCOPE].client.address):
            return None
        wait = await self._rates("u:" + principal.user, self._user)
        if wait > 0:
            return refuse(request, 429, "user_rate", wait, "Too many requests from your account.")
        return None

    @contextlib.asynccontextmanager
    async def slot(self, principal: Principal) -> AsyncIterator[None]:
        kind: SlotClass = "public" if principal.kind == "public" else "user"
        async with self.admission.slot(kind):
            yield

    # -- for operators ---------------------------------------------------------------------

    def _count(self, net: str) -> None:
        now = time.monotonic()
        if now - self._window > TALKER_WINDOW:
            self._previous, self._talkers, self._window = self._talkers, Counter(), now
        self._talkers[net] += 1
        if len(self._talkers) > 10_000:  # bounded whatever the storm's width
            self._talkers = Counter(dict(self._talkers.most_common(1000)))

    def top_talkers(self, n: int = 10) -> list[tuple[str, int]]:
        return (self._previous + self._talkers).most_common(n)

    async def check(self) -> tuple[bool, str]:
        """Readiness detail (advisory): slots, waiting, the busiest client networks."""
        a = self.admission
        talkers = ", ".join(f"{net} {count}" for net, count in self.top_talkers())
        return True, (
            f"slots user {a.busy['user']} public {a.busy['public']} of {a.slots} "
            f"(public at most {a.public_max}); waiting user {a.waiting('user')} public "
            f"{a.waiting('public')}; top networks (public requests, 1-2 min): {talkers or '-'}"
        )


_CHECKED = web.RequestKey("limits_checked", bool)
REASONS = ("rate", "user_rate", "agent", "wait")
_RULES = {reason: "limit:" + reason for reason in REASONS}
_REFUSALS = {reason: metrics.LIMIT_REFUSALS.labels(reason) for reason in REASONS}
LIMITS = web.AppKey("limits", Limits)


def upstream_slot(
    request: web.Request, principal: Principal
) -> contextlib.AbstractAsyncContextManager[None]:
    """A slot to OMERO.web for `principal`'s request (nothing to wait for without limits)."""
    limits = request.app.get(LIMITS)
    if limits is None:
        return contextlib.nullcontext()
    return limits.slot(principal)


def refuse(
    request: web.Request, status: int, reason: str, wait: float | None, message: str
) -> web.Response:
    """A short refusal (no template: it must stay cheap under a storm)."""
    request[SCOPE].notes.refusal = _RULES[reason]
    _REFUSALS[reason].inc()
    headers = dict(NO_STORE)
    if wait is not None:
        headers[hdrs.RETRY_AFTER] = retry_value(wait)
    if wants_json(request):
        return web.json_response(
            {"error": message, "status": status}, status=status, headers=headers
        )
    if "text/html" in request.headers.get(hdrs.ACCEPT, ""):  # a browser: porter's page
        headers.update(PAGE_HEADERS)
        headers[hdrs.CONTENT_TYPE] = "text/html; charset=utf-8"
        retry = headers.get(hdrs.RETRY_AFTER)
        page = request.app[REFUSAL_PAGES].body(status, message, retry, request_id_of(request))
        return web.Response(status=status, body=page, headers=headers)
    headers[hdrs.CONTENT_TYPE] = "text/plain; charset=utf-8"
    if wait is not None:
        message += f" Retry after {headers[hdrs.RETRY_AFTER]} s."
    return web.Response(status=status, body=_encoded(message), headers=headers)


@functools.lru_cache(maxsize=64)  # a handful of messages (Retry-After in whole seconds)
def _encoded(message: str) -> bytes:
    return (message + "\n").encode()


def robots_route(path: str) -> Callable[[web.Request], Awaitable[web.Response]]:
    body = Path(path).read_bytes()

    async def robots(request: web.Request) -> web.Response:
        return web.Response(
            body=body, content_type="text/plain", headers={hdrs.CACHE_CONTROL: "max-age=3600"}
        )

    return robots
