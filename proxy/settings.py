"""Porter's settings: read config.toml once, apply environment overrides, validate everything.

Each package owns the dataclass of its own section; this module only composes them.
"""

from __future__ import annotations

import os
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from auth.oidc_settings import OidcSettings
from auth.omero_settings import OmeroSettings
from auth.public_settings import PublicSessionSettings
from auth.session_settings import SessionSettings
from auth.sso_settings import SsoSettings
from auth.store_seal import StoreSeal
from cache.settings import CacheSettings
from filters.forwarded import check_cidrs
from filters.hosts import check_allowed_hosts
from filters.limits import LimitsSettings
from filters.private_dir import private_directory
from filters.settings import CorsSettings, PublicRuleSettings
from mailer.settings import MailSettings
from proxy.config import ConfigError, Problem, build, env_overrides, merge, tomllib

__all__ = [
    "DEFAULT_CONFIG",
    "ConfigError",
    "ForwardAuthSettings",
    "LogSettings",
    "LoginSettings",
    "MetricsSettings",
    "ProxySettings",
    "Settings",
    "load_settings",
]

# The commented config.toml porter ships (in the package; in a checkout, the top-level file).
DEFAULT_CONFIG = Path(__file__).resolve().parent / "config.toml"
# Where a command looks for its configuration when not given --config, in order.
CONFIG_SEARCH = (Path("config.toml"), Path("/etc/omero-porter/config.toml"))


def find_config(search: tuple[Path, ...] = CONFIG_SEARCH) -> Path | None:
    """The first configuration file of `search` that exists (absolute), or None."""
    for candidate in search:
        if candidate.is_file():
            return candidate.resolve()
    return None


def _check_upstream(value: str) -> None:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("must be an http:// or https:// URL with a host")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ValueError("must not have a path, query or fragment (use prefix for a mount path)")
    try:
        _ = parts.port
    except ValueError as exc:
        raise ValueError(str(exc)) from None


def _check_prefix(value: str) -> None:
    if value == "":
        return
    if not value.startswith("/") or value.endswith("/") or "//" in value:
        raise ValueError('must be empty or a path like "/omero" (leading slash, no trailing slash)')
    if any(seg in (".", "..") for seg in value.split("/")) or any(c in value for c in "?#%\\ "):
        raise ValueError("must be a plain path without dot segments, ?, #, % or spaces")


def _check_secret_key(value: str) -> None:
    if len(value) < 32:
        raise ValueError(
            "must be at least 32 characters (e.g. python -c 'import secrets; "
            "print(secrets.token_urlsafe(32))')"
        )


def _check_logo(value: str) -> None:
    if (value and not value.startswith(("/", "https://", "http://"))) or value.startswith("//"):
        raise ValueError(
            "must be an https:// URL or a path on this site (e.g. /static/mysite/logo.png); "
            "for a file porter serves itself, use login_logo_file"
        )


def _check_logo_file(value: str) -> None:
    if value:
        from proxy.logo_file import read_logo

        read_logo(value)


@dataclass(frozen=True)
class ProxySettings:
    """The listener, the upstream OMERO.web and the forwarding limits."""

    host: str = field(default="127.0.0.1", metadata={"doc": "Address porter listens on"})
    port: int = field(
        default=8080, metadata={"doc": "Port porter listens on", "min": 1, "max": 65535}
    )
    upstream: str = field(
        default="http://127.0.0.1:4080",
        metadata={"doc": "Base URL of OMERO.web (its gunicorn)", "check": _check_upstream},
    )
    prefix: str = field(
        default="",
        metadata={
            "doc": "Mount path of porter and OMERO.web, e.g. /omero (OMERO.web's omero.web.prefix)",
            "check": _check_prefix,
        },
    )
    debug: bool = field(
        default=False,
        metadata={"doc": "Show tracebacks on error pages (omero.web.debug); never in production"},
    )
    trusted_proxies: tuple[str, ...] = field(
        default=(),
        metadata={
            "doc": "CIDRs whose X-Forwarded-* headers are believed (default: trust none)",
            "check": check_cidrs,
        },
    )
    status_detail_from: tuple[str, ...] = field(
        default=("127.0.0.0/8", "::1/128"),
        metadata={
            "doc": "CIDRs from which the operator token is accepted (a second fence: the "
            "token decides)",
            "check": check_cidrs,
        },
    )
    operator_token: str | None = field(
        default=None,
        metadata={
            "doc": "Bearer token of the operator endpoints (/porter/cache, its purge, "
            "/porter/metrics, readyz details); unset: they are off. Use operator_token_file",
            "secret": True,
            "check": _check_secret_key,
        },
    )
    allowed_hosts: tuple[str, ...] = field(
        default=("*",),
        metadata={
            "doc": "Host names porter serves: exact names, '.example.org' for the domain and "
            "its subdomains, '*' for any well-formed Host (omero.web.allowed_hosts)",
            "check": check_allowed_hosts,
        },
    )
    connect_timeout: float = field(
        default=5.0,
        metadata={"doc": "Seconds to connect to OMERO.web before answering 502", "min": 0.1},
    )
    read_timeout: float = field(
        default=60.0,
        metadata={"doc": "Seconds OMERO.web may stay silent before answering 504", "min": 0.1},
    )
    max_body_size: int = field(
        default=100 * 1024 * 1024,
        metadata={"doc": "Largest request body in bytes; bigger gets 413", "min": 0},
    )
    upstream_connections: int = field(
        default=100,
        metadata={"doc": "Most connections held open to OMERO.web at once", "min": 1},
    )
    worker_timeout: float = field(
        default=30.0,
        metadata={
            "doc": "Seconds a worker may leave its heartbeat unanswered before gunicorn "
            "replaces it (with workers > 1)",
            "min": 2.0,
        },
    )
    shutdown_grace: float = field(
        default=30.0,
        metadata={
            "doc": "Seconds in-flight requests may finish after SIGTERM; on the memory "
            "store, as long again to close its sessions on OMERO.web and OMERO",
            "min": 0,
        },
    )
    header_timeout: float = field(
        default=10.0,
        metadata={
            "doc": "Seconds a client has to send a complete request head (request line and "
            "headers), on a new connection and for each next request on a kept-alive one; "
            "past it the connection is closed (slowloris); 0: off",
            "min": 0,
        },
    )
    max_connections: int = field(
        default=8192,
        metadata={
            "doc": "Client connections one porter process keeps open at most; a new one past "
            "it is closed at once (metric porter_connections_cut_total); 0: no limit. Keep it "
            "under the process's open-file limit",
            "min": 0,
        },
    )
    log_level: str = field(
        default="info",
        metadata={"doc": "Logging level", "choices": ("debug", "info", "warning", "error")},
    )
    access_log: bool = field(default=True, metadata={"doc": "Log one line per request"})
    workers: int = field(
        default=1,
        metadata={
            "doc": "Porter processes: more than 1 runs them as gunicorn workers (HUP reloads "
            "this file); needs session.store = 'redis'",
            "min": 1,
            "max": 64,
        },
    )
    templates_dir: str = field(
        default="",
        metadata={"doc": "Directory of templates that replace porter's own (error.html, ...)"},
    )
    secret_key: str | None = field(
        default=None,
        metadata={
            "doc": "Key signing CSRF tokens and sealing sessions in Redis; unset: random per "
            "process (required with session.store = 'redis')",
            "secret": True,
            "check": _check_secret_key,
        },
    )
    secret_key_previous: str | None = field(
        default=None,
        metadata={
            "doc": "The secret_key before a rotation: sessions in Redis sealed with it are "
            "still read (drop it after session_cookie_age)",
            "secret": True,
            "check": _check_secret_key,
        },
    )

    def store_seal(self) -> StoreSeal:
        """How the Redis store names and seals sessions (a random key without secret_key)."""
        if not self.secret_key:
            return StoreSeal.random()
        return StoreSeal(self.secret_key, self.secret_key_previous)

    def warnings(self) -> list[tuple[str, str]]:
        """Legal but risky settings, for ``run.py check`` to print."""
        if "*" in self.allowed_hosts:
            return [
                (
                    "allowed_hosts",
                    "'*': any well-formed Host is served and passed to OMERO.web; "
                    "list your site's names",
                )
            ]
        return []


def _check_path(value: str) -> None:
    if not value.startswith("/") or value.startswith("//") or any(c in value for c in "?#\\ "):
        raise ValueError("must be a path starting with / (without the mount prefix)")


def _check_cookie_name(value: str) -> None:
    if not value or any(c in value for c in ' =;,\t"\\'):
        raise ValueError("must be a cookie name without spaces, =, ;, commas or quotes")


@dataclass(frozen=True)
class ForwardAuthSettings:
    """``[forward_auth]``: porter decides, the site's proxy (nginx auth_request) streams."""

    enabled: bool = field(
        default=False,
        metadata={
            "doc": "Answer GET /porter/auth for a front proxy's auth_request (X-Original-URI "
            "and X-Original-Method believed from trusted_proxies only); see docs/forward-auth.md"
        },
    )
    decision_cache_ttl: float = field(
        default=0.0,
        metadata={
            "doc": "Seconds a decision is reused for the same credentials, method and path "
            "(0: off); a logout elsewhere takes effect within this bound",
            "min": 0.0,
            "max": 10.0,
        },
    )
    decision_cache_size: int = field(
        default=10000,
        metadata={"doc": "Decisions the cache holds at most", "min": 1},
    )

    def warnings(self, trusted_proxies: tuple[str, ...]) -> list[tuple[str, str]]:
        """Legal but useless settings, for ``run.py check`` to print."""
        if self.enabled and not trusted_proxies:
            return [
                (
                    "enabled",
                    "true, but proxy.trusted_proxies is empty: every /porter/auth question "
                    "is refused (list the nginx that asks)",
                )
            ]
        return []


def _check_log_paths(value: tuple[str, ...]) -> None:
    for path in value:
        _check_path(path)


@dataclass(frozen=True)
class LogSettings:
    """``[log]``: the format of porter's log lines (the access line and its own)."""

    format: str = field(
        default="text",
        metadata={
            "doc": "text (combined-log-like access lines) or json (one object per line)",
            "choices": ("text", "json"),
        },
    )
    exclude_paths: tuple[str, ...] = field(
        default=("/porter/healthz", "/porter/readyz"),
        metadata={
            "doc": "Paths (below the prefix, exact) that get no access line, e.g. probes",
            "check": _check_log_paths,
        },
    )
    file: str = field(
        default="",
        metadata={
            "doc": "Write the log to this file instead of standard output (appended; "
            "reopened within a second when logrotate moves it away); empty: standard output",
            "example": "/var/log/omero-porter/porter.log",
        },
    )


def _check_listen(value: str) -> None:
    if value:
        split_listen(value)


def split_listen(value: str) -> tuple[str, int]:
    """ "host:port" or "[v6]:port" -> (host, port); ValueError otherwise."""
    host, sep, port = value.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError('must be "host:port", e.g. "127.0.0.1:9090" (empty: off)')
    return host, int(port)


@dataclass(frozen=True)
class MetricsSettings:
    """``[metrics]``: Prometheus metrics, off unless an address or a client list is given."""

    listen: str = field(
        default="",
        metadata={
            "doc": 'Address of a separate metrics listener, e.g. "127.0.0.1:9090" (GET '
            "/metrics; with workers, gunicorn's arbiter serves their sum); empty: off",
            "check": _check_listen,
        },
    )
    allow_from: tuple[str, ...] = field(
        default=(),
        metadata={
            "doc": "CIDRs that may GET /porter/metrics on porter's own port; empty: off",
            "check": check_cidrs,
        },
    )

    @property
    def enabled(self) -> bool:
        return bool(self.listen or self.allow_from)


@dataclass(frozen=True)
class LoginSettings:
    """Porter's login and logout pages and the session handoff to OMERO.web."""

    landing_page: str = field(
        default="/webclient/",
        metadata={
            "doc": "Where a user goes after login when no url is given (below the prefix)",
            "check": _check_path,
        },
    )
    login_logo: str = field(
        default="",
        metadata={
            "doc": "URL of a logo on porter's pages (omero.web.login_logo): https://..., or a "
            "path such as /static/mysite/logo.png that the front proxy serves (run.py check "
            "warns when anonymous visitors cannot load it)",
            "check": _check_logo,
        },
    )
    login_logo_file: str = field(
        default="",
        metadata={
            "doc": "A logo image file (.png .jpg .gif .svg .webp, at most 1 MiB) porter reads "
            "at start and serves itself at /porter/assets/logo; wins over login_logo",
            "check": _check_logo_file,
            "example": "/etc/omero-porter/logo.png",
        },
    )
    login_title: str = field(default="OMERO", metadata={"doc": "Heading of the login page"})
    password_login: bool = field(
        default=True,
        metadata={
            "doc": "Offer the user name and password form; false: single sign-on only "
            "([[oidc.providers]] buttons; OMERO.web's API login refused too)"
        },
    )
    show_forgot_password: bool = field(
        default=True,
        metadata={
            "doc": 'Offer "Forgot your password?" on the login page: porter\'s form asks the '
            "OMERO server to mail a new password (omero.web.show_forgot_password; off for "
            "LDAP sites)"
        },
    )
    handoff_path: str = field(
        default="/webclient/keepalive_ping/",
        metadata={
            "doc": "OMERO.web path porter calls with ?server=&bsession= to hand a session over",
            "check": _check_path,
        },
    )
    upstream_session_cookie: str = field(
        default="sessionid",
        metadata={
            "doc": "OMERO.web's session cookie, held by porter, never given to browsers "
            "(omero.web.session_cookie_name)",
            "check": _check_cookie_name,
        },
    )
    max_failures_per_address: int = field(
        default=20,
        metadata={"doc": "Failed logins from one address before 429", "min": 1},
    )
    max_failures_per_user: int = field(
        default=5,
        metadata={"doc": "Failed logins for one user name before 429", "min": 1},
    )
    failure_window: int = field(
        default=900,
        metadata={"doc": "Seconds failed logins are remembered for throttling", "min": 1},
    )


@dataclass(frozen=True)
class Settings:
    """Every section of config.toml."""

    proxy: ProxySettings = field(default_factory=ProxySettings)
    omero: OmeroSettings = field(default_factory=OmeroSettings)
    session: SessionSettings = field(default_factory=SessionSettings)
    login: LoginSettings = field(default_factory=LoginSettings)
    forward_auth: ForwardAuthSettings = field(default_factory=ForwardAuthSettings)
    log: LogSettings = field(default_factory=LogSettings)
    metrics: MetricsSettings = field(default_factory=MetricsSettings)
    # [public] has two owners: the URL rules (filters) and the public user (auth).
    public: PublicRuleSettings = field(
        default_factory=PublicRuleSettings, metadata={"section": "public"}
    )
    public_session: PublicSessionSettings = field(
        default_factory=PublicSessionSettings, metadata={"section": "public"}
    )
    cors: CorsSettings = field(default_factory=CorsSettings)
    cache: CacheSettings = field(default_factory=CacheSettings)
    sso: SsoSettings = field(default_factory=SsoSettings)
    oidc: OidcSettings = field(default_factory=OidcSettings)
    mail: MailSettings = field(default_factory=MailSettings)
    limits: LimitsSettings = field(default_factory=LimitsSettings)


def _name_source(problem: Problem, sources: Mapping[str, str]) -> Problem:
    for key, variable in sources.items():
        if problem.key == key or problem.key.startswith((key + ".", key + "[")):
            return Problem(f"{problem.key} (from {variable})", problem.message)
    return problem


def cross_section_problems(settings: Settings) -> list[Problem]:
    """Settings each valid alone that cannot work together."""
    problems = []
    workers = settings.proxy.workers
    if workers > 1 and settings.session.store == "memory":
        problems.append(
            Problem(
                "proxy.workers",
                f"{workers} workers need session.store = 'redis': the memory store lives in "
                "one process, so a session made by one worker would be unknown to the others",
            )
        )
    if settings.metrics.allow_from and not settings.proxy.operator_token:
        problems.append(
            Problem(
                "metrics.allow_from",
                "/porter/metrics on porter's own port is served to operators only: set "
                "proxy.operator_token (or operator_token_file), or use metrics.listen",
            )
        )
    if settings.session.store == "redis" and not settings.proxy.secret_key:
        problems.append(
            Problem(
                "proxy.secret_key",
                "is required with session.store = 'redis': sessions there are named and "
                "sealed with it, the same on every process and host and across restarts",
            )
        )
    if not settings.login.password_login and not settings.oidc.enabled:
        problems.append(
            Problem(
                "login.password_login",
                "is false but no [[oidc.providers]] is configured: nobody could log in",
            )
        )
    return problems


def directory_problems(settings: Settings) -> list[Problem]:
    """The directories porter reads back from, each checked with `private_directory`."""
    directories = {
        "cache.disk_dir": settings.cache.disk_dir if settings.cache.enabled else "",
        "mail.spool_dir": settings.mail.spool_dir,
    }
    return [
        Problem(key, why)
        for key, path in directories.items()
        if path and (why := private_directory(path)) is not None
    ]


def load_settings(
    path: Path | str | None = None,
    environ: Mapping[str, str] | None = None,
    command_line: Mapping[str, tuple[str, Any]] | None = None,
) -> Settings:
    """Read `path` (default: the shipped config.toml), apply PORTER_* overrides, then the
    command line's (`command_line`: "section.key" -> (the option, its value)), validate.

    Raises ConfigError listing every problem found, each named with where it came from.
    """
    source = Path(path) if path is not None else DEFAULT_CONFIG
    environ = os.environ if environ is None else environ
    try:
        with source.open("rb") as fh:
            table: dict[str, Any] = tomllib.load(fh)
    except OSError as exc:
        raise ConfigError(
            str(source), [Problem("file", f"cannot read: {exc.strerror or exc}")]
        ) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(str(source), [Problem("syntax", str(exc))]) from None
    overrides, sources, problems = env_overrides(environ)
    table = merge(table, overrides)
    for dotted, (option, value) in (command_line or {}).items():
        section, key = dotted.split(".")
        table = merge(table, {section: {key: value}})
        sources[dotted] = option
    settings = build(Settings, table, "", problems)
    if not problems:
        problems.extend(cross_section_problems(typing.cast(Settings, settings)))
        problems.extend(directory_problems(typing.cast(Settings, settings)))
    if problems:
        raise ConfigError(str(source), [_name_source(p, sources) for p in problems])
    return typing.cast(Settings, settings)
