"""Porter's Prometheus metrics (prometheus-client), in base units with the names Prometheus
users expect. Every package may count into them (this one imports none of porter's).

With several workers, the supervising parent sets PROMETHEUS_MULTIPROC_DIR before any worker
starts: prometheus-client then keeps each worker's values in files there, and a scrape (of the
parent's [metrics] listen address, or of /porter/metrics on any worker) sums them. Gauges
say how: `livesum` adds up the live workers, `max` takes the highest (a value every worker
reads from shared state, e.g. the Redis store's session count).
"""

from __future__ import annotations

import os
import platform

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
# Porter answers in milliseconds; OMERO.web in tens of milliseconds to seconds.
BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

REQUESTS = Counter(
    "porter_requests_total", "Requests answered, by kind and status class", ["kind", "status_class"]
)
REQUEST_SECONDS = Histogram(
    "porter_request_duration_seconds", "Time to answer a request", ["kind"], buckets=BUCKETS
)
UPSTREAM_SECONDS = Histogram(
    "porter_upstream_duration_seconds", "Time to OMERO.web's response headers", buckets=BUCKETS
)
IN_FLIGHT = Gauge(
    "porter_requests_in_flight", "Requests being answered now", multiprocess_mode="livesum"
)
SESSIONS = Gauge(
    "porter_sessions_active",
    "Porter sessions in the session store (per process with the memory store)",
    multiprocess_mode="max",
)
OMERO_SESSIONS_CREATED = Counter(
    "porter_omero_sessions_created_total",
    "OMERO sessions porter created, by reason: login, public, sso",
    ["reason"],
)
OMERO_SESSIONS_CLOSED = Counter(
    "porter_omero_sessions_closed_total",
    "OMERO sessions porter closed, by reason: logout, expired, evicted, public, sso",
    ["reason"],
)
PUBLIC_RECREATIONS = Counter(
    "porter_public_session_recreations_total",
    "Times the shared public session was found gone or wrong and made again",
)
LOGINS = Counter(
    "porter_logins_total", "Password logins, by result: success, failure, throttled", ["result"]
)
JWKS_FETCHES = Counter(
    "porter_jwks_fetches_total", "JWKS documents fetched, by result: ok, error", ["result"]
)
MAILS = Counter(
    "porter_admin_mails_total",
    "Admin mails, by result: sent, deduplicated (summed into a digest), dropped",
    ["result"],
)
MAIL_EVENTS = Counter(
    "porter_admin_mail_events_total",
    "What happened to admin mail, by event: submitted, inactive, folded, capped, sent, "
    "digests_sent, retries, spooled, spool_delivered, lost_queue_full, lost_undeliverable, "
    "lost_rate_limited, lost_shutdown, lost_spool_full",
    ["event"],
)
SERVER_ERRORS = Counter(
    "porter_server_errors_total",
    "Answers of status 500 and above, by status (500, 502, 503, 504; 5xx: any other)",
    ["status"],
)
UPSTREAM_ERRORS = Counter(
    "porter_upstream_errors_total",
    "OMERO.web failing a request, by error (timeout, unreachable, answered) and status",
    ["error", "status"],
)
CACHE_REQUESTS = Counter(
    "porter_cache_requests_total",
    "Public cache answers, by result: hit, miss, stale, stale_if_error, pass",
    ["result"],
)
CACHE_MEMORY_BYTES = Gauge(
    "porter_cache_memory_bytes", "Bytes in the cache's memory tiers", multiprocess_mode="livesum"
)
CACHE_DISK_BYTES = Gauge(
    "porter_cache_disk_bytes", "Bytes in the cache's shared disk tier", multiprocess_mode="max"
)
SLOTS_BUSY = Gauge(
    "porter_upstream_slots_busy",
    "Requests in flight to OMERO.web, by class (user, public)",
    ["class"],
    multiprocess_mode="livesum",
)
SLOTS_WAITING = Gauge(
    "porter_upstream_slots_waiting",
    "Requests waiting for a slot to OMERO.web, by class",
    ["class"],
    multiprocess_mode="livesum",
)
SLOT_WAIT_SECONDS = Histogram(
    "porter_upstream_slot_wait_seconds",
    "Time requests waited for a slot to OMERO.web, by class",
    ["class"],
    buckets=BUCKETS,
)
LIMIT_REFUSALS = Counter(
    "porter_limit_refusals_total",
    "Requests refused by [limits], by reason (rate, user_rate, wait, agent)",
    ["reason"],
)
CONNECTIONS_OPEN = Gauge(
    "porter_connections_open",
    "Client connections open now",
    multiprocess_mode="livesum",
)
CONNECTIONS_CUT = Counter(
    "porter_connections_cut_total",
    "Client connections porter closed itself, by reason (header_timeout: no complete "
    "request head in time; over_limit: max_connections reached)",
    ["reason"],
)
for _cut in ("header_timeout", "over_limit"):
    CONNECTIONS_CUT.labels(_cut)
# every series exists from the start, at 0: a dashboard shows "none yet", not "no data"
for _kind in ("user", "public"):
    SLOTS_BUSY.labels(_kind)
    SLOTS_WAITING.labels(_kind)
    SLOT_WAIT_SECONDS.labels(_kind)
for _reason in ("rate", "user_rate", "agent", "wait"):
    LIMIT_REFUSALS.labels(_reason)
for _status in ("500", "502", "503", "504", "5xx"):
    SERVER_ERRORS.labels(_status)
for _error, _status in (("timeout", "504"), ("unreachable", "502")):
    UPSTREAM_ERRORS.labels(_error, _status)
BUILD_INFO = Gauge(
    "porter_build_info",
    "Always 1: the versions running",
    ["version", "python", "aiohttp"],
    multiprocess_mode="max",
)

# Bound once: the hot path pays a dictionary lookup less.
CACHE_HIT = CACHE_REQUESTS.labels("hit")
CACHE_MISS = CACHE_REQUESTS.labels("miss")
CACHE_STALE = CACHE_REQUESTS.labels("stale")
CACHE_STALE_IF_ERROR = CACHE_REQUESTS.labels("stale_if_error")
CACHE_PASS = CACHE_REQUESTS.labels("pass")


def build_info(version: str) -> None:
    from importlib.metadata import version as installed

    BUILD_INFO.labels(version, platform.python_version(), installed("aiohttp")).set(1)


def registry() -> CollectorRegistry:
    """What a scrape reads: every worker's values summed, or this process's."""
    directory = os.environ.get(MULTIPROC_ENV)
    if not directory:
        from prometheus_client import REGISTRY

        return REGISTRY
    from prometheus_client import multiprocess

    summed = CollectorRegistry()
    multiprocess.MultiProcessCollector(summed, directory)  # type: ignore[no-untyped-call]
    return summed


def exposition() -> tuple[bytes, str]:
    """The scrape's body and content type."""
    return generate_latest(registry()), CONTENT_TYPE_LATEST


def server_error(status: int) -> str:
    """The status label of SERVER_ERRORS and UPSTREAM_ERRORS (a bounded set)."""
    return str(status) if status in (500, 502, 503, 504) else "5xx"


def status_class(status: int) -> str:
    return f"{min(5, max(1, status // 100))}xx"
