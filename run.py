#!/usr/bin/env python3
"""omero-porter command line: serve (default) | check | explain | mail-test | clearsessions |
cache stats|purge | init-config | demo.

Exit codes: 0 ok, 2 usage or configuration error, 1 runtime failure.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from proxy.config import ConfigError, dump
from proxy.settings import CONFIG_SEARCH, DEFAULT_CONFIG, Settings, find_config, load_settings

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"  # the workers' metrics, summed by gunicorn's arbiter
OWNED_ENV = "PORTER_METRICS_DIR_MADE"  # ours to remove at exit (a site's own is left alone)


def _serve(args: argparse.Namespace, settings: Settings) -> int:
    from proxy.log import configure_logging

    proxy = settings.proxy
    if proxy.workers > 1 and MULTIPROC_ENV not in os.environ:
        # prometheus-client reads its mode when first imported, and this process has imported
        # it already: start again with the workers' shared directory set
        directory = tempfile.mkdtemp(prefix="porter-metrics-")
        os.environ[MULTIPROC_ENV] = os.environ[OWNED_ENV] = directory
        os.execv(  # noqa: S606 (porter itself, with its own arguments)
            sys.executable, [sys.executable, str(Path(__file__).resolve()), *args.argv]
        )
    listener = configure_logging(proxy.log_level, settings.log.format, settings.log.file)
    try:
        if proxy.workers > 1:
            from proxy.gunicorn_app import run_workers

            return run_workers(
                args.config,
                args.command_line,
                settings,
                lambda: configure_logging(proxy.log_level, settings.log.format, settings.log.file),
            )
        from proxy.server import serve  # after the multiprocess set-up: it imports metrics

        serve(settings)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return EXIT_USAGE
    except OSError as exc:
        print(
            f"porter: cannot serve on {proxy.host}:{proxy.port}: {exc.strerror or exc}",
            file=sys.stderr,
        )
        return EXIT_FAILURE
    finally:
        listener.stop()  # every line logged is written before porter exits
    return EXIT_OK


def _check(args: argparse.Namespace, settings: Settings) -> int:
    print(f"# {args.config}: configuration is valid; effective settings (secrets masked):")
    for line in dump(settings):
        print(line)
    for section, found in (
        ("proxy", settings.proxy.warnings()),
        ("forward_auth", settings.forward_auth.warnings(settings.proxy.trusted_proxies)),
        ("public", settings.public.warnings()),
        ("cors", settings.cors.warnings()),
        ("cache", settings.cache.warnings(settings.public_session.enabled)),
    ):
        for key, message in found:
            print(f"warning: {section}.{key}: {message}", file=sys.stderr)
    problem = _logo_problem(settings)
    if problem is not None:
        print(f"warning: login.login_logo: {problem}", file=sys.stderr)
    for key, message in _oidc_problems(settings):
        print(f"warning: {key}: {message}", file=sys.stderr)
    return EXIT_OK


def _oidc_problems(settings: Settings) -> list[tuple[str, str]]:
    """What a live provider's discovery document says porter cannot do with it."""
    import urllib.error
    import urllib.request

    from auth.oidc import NO_BACKCHANNEL, parse_discovery

    found: list[tuple[str, str]] = []
    for i, provider in enumerate(settings.oidc.providers):
        key = f"oidc.providers[{i}] ({provider.id})"
        url = provider.issuer.rstrip("/") + "/.well-known/openid-configuration"
        try:
            with urllib.request.urlopen(url, timeout=5) as resp:  # noqa: S310 (http(s) only)
                document = parse_discovery(resp.read(256 * 1024), provider.issuer)
        except (urllib.error.URLError, OSError, ValueError) as exc:
            reason = getattr(exc, "reason", None) or exc
            found.append((key, f"its discovery document cannot be had ({reason})"))
            continue
        if not document.backchannel_logout:
            found.append((key, NO_BACKCHANNEL))
        if document.end_session_endpoint is None and provider.end_session:
            found.append(
                (
                    key,
                    "it has no end_session_endpoint: logging out of porter leaves the "
                    'provider\'s session, and "Log in as someone else" can only ask it to '
                    "prompt for a login",
                )
            )
    return found


def _logo_problem(settings: Settings) -> str | None:
    """Why anonymous visitors will not see the login page's logo (None: they will)."""
    import urllib.error
    import urllib.request

    from filters.rules import decide
    from proxy.app import public_rules

    logo = settings.login.login_logo
    if not logo or settings.login.login_logo_file:
        return None
    if logo.startswith("/"):
        decision = decide("GET", logo.split("?", 1)[0], public_rules(settings))
        if decision.kind != "public":
            return (
                f"{logo} is a path on this site that porter does not serve to anonymous "
                "visitors: the login page shows it only if the front proxy serves it (as "
                "deploy/nginx-porter.conf serves /static/); or set login_logo_file"
            )
        return None
    try:
        with urllib.request.urlopen(logo, timeout=5) as resp:  # noqa: S310 (http(s) only)
            kind = resp.headers.get_content_type()
    except urllib.error.HTTPError as exc:
        return f"{logo} answered {exc.code}; the login page will show no logo"
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", None) or exc
        return f"{logo} cannot be fetched ({reason}); the login page will show no logo"
    if not kind.startswith("image/"):
        return f"{logo} is not an image ({kind})"
    return None


def _explain(args: argparse.Namespace, settings: Settings) -> int:
    """How porter decides on METHOD PATH: canonical path, the rule that matched, decision."""
    from filters.canonical import strip_prefix
    from filters.explain import explain
    from proxy.app import porter_page, public_rules

    prefix = settings.proxy.prefix
    relative = strip_prefix(args.path, prefix)
    if relative is None:
        print(f"request:   {args.method} {args.path}")
        print(f"decision:  not found: outside the mount prefix {prefix!r} (404)")
        return EXIT_OK
    if not _HTTP_METHOD.fullmatch(args.method):
        print(f"request:   {args.method} {args.path}")
        print("decision:  bad request: 400, HTTP methods are upper-case tokens (the parser)")
        return EXIT_OK
    page = porter_page(settings, args.method, args.path)
    if page is not None:
        print(f"request:   {args.method} {args.path}")
        print(f"decision:  {page}: answered by porter, never forwarded")
        return EXIT_OK
    if not (settings.public.enabled and settings.public_session.enabled):
        print("note:      public access is off ([public] enabled = false): nothing is public")
    print(explain(args.method, relative, public_rules(settings)))
    return EXIT_OK


# What aiohttp's (llhttp's) request-line parser accepts as a method.
_HTTP_METHOD = re.compile(r"[A-Z][A-Z0-9_-]*")


def _mail_test(args: argparse.Namespace, settings: Settings) -> int:
    import asyncio

    from mailer import send_test_mail

    result = asyncio.run(send_test_mail(settings.mail))
    print(("ok: " if result.ok else "failed: ") + result.message)
    return EXIT_OK if result.ok else EXIT_FAILURE


def _clearsessions(args: argparse.Namespace, settings: Settings) -> int:
    """Purge expired sessions once and close their OMERO sessions (OMERO.web's command never
    closed them). With the memory store there is nothing to share: only Redis is useful."""
    import asyncio

    if settings.session.store == "memory":
        print("clearsessions: the memory store lives inside each running porter, which purges it")
        print("itself every session.purge_interval seconds; nothing to do from outside.")
        return EXIT_OK
    return asyncio.run(_purge_once(settings))


async def _purge_once(settings: Settings) -> int:
    """One purge of the Redis store, as the purge job does it; the exit status."""
    import aiohttp

    from auth.lifecycle import purge_expired
    from auth.omero_backend import OmeroBackend
    from auth.session_store import SessionStoreUnavailable
    from auth.sessions import SessionRecord
    from auth.stores import create_store
    from proxy.forwarding.handoff import web_logout

    async with (
        OmeroBackend(settings.omero) as backend,
        aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as http,
    ):

        async def end_web(record: SessionRecord) -> bool:  # no Django session left behind
            return await web_logout(http, settings, record.cookies)

        store = create_store(
            settings.session, on_evict=backend.close, seal=settings.proxy.store_seal()
        )
        try:
            result = await purge_expired(
                store,
                backend.close,
                concurrency=settings.session.lifecycle_concurrency,
                end_web=end_web,
            )
        except SessionStoreUnavailable as exc:
            print(f"clearsessions: {exc}", file=sys.stderr)
            return EXIT_FAILURE
        finally:
            await store.close()
    print(
        f"clearsessions: removed {result.removed} expired session(s), closed "
        f"{result.closed} OMERO session(s), {result.failed} close(s) failed, "
        f"{result.lost} already dropped by Redis"
    )
    return EXIT_OK


def _cache(args: argparse.Namespace, settings: Settings) -> int:
    """Stats or purge of the public answer cache: through the running porter (its memory and
    disk tiers), else, with a disk tier, on the disk directly (running porters drop their
    memory copies of purged entries within seconds)."""
    import asyncio
    import json

    from filters.regex_guard import guarded

    try:
        pattern = guarded(args.path_regex) if args.path_regex else None
    except ValueError as exc:
        print(f"cache: --path-regex is refused: {exc}", file=sys.stderr)
        return EXIT_USAGE
    base, token = _cache_url(settings), settings.proxy.operator_token
    answer = asyncio.run(_ask_porter(args, base, token)) if token else None
    if answer is not None and answer[0] == 200:
        print(json.dumps(answer[1], indent=2, sort_keys=True))
        return EXIT_OK
    if answer is not None:
        print(
            f"cache: {base} answered {answer[0]}: porter there has no cache, has another "
            "proxy.operator_token, or does not list this address in proxy.status_detail_from",
            file=sys.stderr,
        )
        return EXIT_FAILURE
    reason = f"no porter answers at {base}" if token else "proxy.operator_token is unset"
    if not settings.cache.disk_dir:
        print(
            f"cache: {reason}; without a disk tier the cache lives only inside a running porter",
            file=sys.stderr,
        )
        return EXIT_FAILURE
    found = _cache_on_disk(args, settings, pattern)
    if found is None:
        return EXIT_FAILURE
    print(f"# {reason}: the disk tier only", file=sys.stderr)
    print(json.dumps(found, indent=2, sort_keys=True))
    return EXIT_OK


def _cache_url(settings: Settings) -> str:
    """The running porter's cache endpoint, on the address it listens on."""
    proxy = settings.proxy
    host = "127.0.0.1" if proxy.host in ("", "0.0.0.0", "::") else proxy.host
    host = f"[{host}]" if ":" in host else host
    return f"http://{host}:{proxy.port}{proxy.prefix}/porter/cache"


async def _ask_porter(args: argparse.Namespace, base: str, token: str) -> tuple[int, Any] | None:
    """The running porter's status and JSON answer to stats or purge; None: no answer."""
    import aiohttp

    timeout = aiohttp.ClientTimeout(total=30)
    headers = {"Authorization": f"Bearer {token}"}
    try:
        async with aiohttp.ClientSession(timeout=timeout, headers=headers) as http:
            if args.action == "stats":
                request = http.get(base)
            else:
                request = http.post(base + "/purge", json={"path_regex": args.path_regex or ""})
            async with request as resp:
                return resp.status, await resp.json() if resp.status == 200 else None
    except (aiohttp.ClientError, OSError, TimeoutError):
        return None


def _cache_on_disk(args: argparse.Namespace, settings: Settings, pattern: Any) -> Any:
    """Stats or purge of the disk tier itself; None (the failure said) when it fails."""
    import time

    from cache.disk import DiskError, DiskTier
    from cache.store import PURGE_BUDGET
    from filters.regex_guard import MatchTimeout

    try:
        disk = DiskTier(settings.cache.disk_dir, settings.cache.disk_bytes)
        try:
            if args.action == "stats":
                return {"disk": {**disk.stats(), "limit": settings.cache.disk_bytes}}
            return {"removed": disk.purge(pattern, time.monotonic() + PURGE_BUDGET)}
        finally:
            disk.close()
    except DiskError as exc:
        print(f"cache: the disk tier {settings.cache.disk_dir} failed: {exc}", file=sys.stderr)
    except MatchTimeout:
        print(
            f"cache: --path-regex took longer than {PURGE_BUDGET:g} s over the cached paths; "
            "entries matched by then were purged",
            file=sys.stderr,
        )
    return None


Command = Callable[[argparse.Namespace, Settings], int]


def parser() -> tuple[argparse.ArgumentParser, dict[str, Command]]:
    top = argparse.ArgumentParser(
        prog="run.py", description="omero-porter: a gateway in front of OMERO.web"
    )
    config = argparse.ArgumentParser(add_help=False)
    searched = " then ".join(str(p) for p in CONFIG_SEARCH)
    config.add_argument("--config", type=Path, help=f"config file (default: {searched})")
    sub = top.add_subparsers(dest="command", metavar="COMMAND")
    commands: dict[str, Command] = {}

    serve = sub.add_parser("serve", parents=[config], help="run the gateway (default)")
    serve.add_argument("--host", help="listen address (overrides proxy.host)")
    serve.add_argument("--port", type=int, help="listen port (overrides proxy.port)")
    serve.add_argument(
        "--workers", type=int, help="porter processes sharing the port (overrides proxy.workers)"
    )
    commands["serve"] = _serve

    sub.add_parser("check", parents=[config], help="validate the configuration and print it")
    commands["check"] = _check

    sub.add_parser("mail-test", parents=[config], help="send a test mail to the admins")
    commands["mail-test"] = _mail_test

    explain = sub.add_parser(
        "explain", parents=[config], help="show how porter decides on a request (public rules)"
    )
    explain.add_argument("method", metavar="METHOD", help="e.g. GET")
    explain.add_argument("path", metavar="PATH", help="the path as requested, e.g. /webgateway/x")
    commands["explain"] = _explain

    sub.add_parser(
        "clearsessions",
        parents=[config],
        help="purge expired sessions and close their OMERO sessions (Redis store)",
    )
    commands["clearsessions"] = _clearsessions

    demo = sub.add_parser(
        "demo", help="porter in front of a real OMERO.web and the OMERO test server (a checkout)"
    )
    demo.add_argument("--host", default="127.0.0.1", help="listen address")
    demo.add_argument("--port", type=int, default=8080, help="listen port")

    init = sub.add_parser("init-config", help="write the commented config.toml porter ships")
    init.add_argument("path", metavar="PATH", type=Path, help="where, e.g. ./config.toml")
    init.add_argument("--force", action="store_true", help="replace an existing file")

    cache = sub.add_parser("cache", parents=[config], help="public answer cache: stats or purge")
    cache.add_argument("action", choices=("stats", "purge"))
    cache.add_argument(
        "--path-regex", help="purge only entries whose path this regex finds (default: all)"
    )
    commands["cache"] = _cache
    return top, commands


def main(argv: Sequence[str] | None = None) -> int:
    top, commands = parser()
    argv = _with_command(list(sys.argv[1:] if argv is None else argv))
    try:
        args = top.parse_args(argv)
    except SystemExit as exc:  # argparse exits 2 on usage errors, 0 on --help
        return int(exc.code or 0)
    args.argv = argv
    if args.command == "init-config":
        return _init_config(args)
    if args.command == "demo":
        return _demo(args)
    if args.config is None:
        args.config = find_config()
        if args.config is None:
            looked = ", ".join(str(p.absolute()) for p in CONFIG_SEARCH)
            print(
                f"porter: no configuration file: looked for {looked}; give --config PATH, "
                "or write one with `omero-porter init-config PATH`",
                file=sys.stderr,
            )
            return EXIT_USAGE
    args.command_line = _command_line(args)
    try:
        settings = load_settings(args.config, command_line=args.command_line)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return EXIT_USAGE
    return commands[args.command](args, settings)


def _with_command(argv: list[str]) -> list[str]:
    """`argv` with its command first: `serve` when none is given, and a --config given
    before the command (`run.py --config X check`) moved after it."""
    before: list[str] = []
    while argv and argv[0].startswith("--config"):
        take = 1 if "=" in argv[0] else 2
        before += argv[:take]
        argv = argv[take:]
    if not argv or (argv[0].startswith("-") and argv[0] not in ("-h", "--help")):
        argv.insert(0, "serve")
    argv[1:1] = before
    return argv


def _command_line(args: argparse.Namespace) -> dict[str, tuple[str, Any]]:
    """The settings `serve`'s options override: "section.key" -> (the option, its value)."""
    options = {"proxy.host": "--host", "proxy.port": "--port", "proxy.workers": "--workers"}
    return {
        key: (option, value)
        for key, option in options.items()
        if (value := getattr(args, option[2:], None)) is not None
    }


def _demo(args: argparse.Namespace) -> int:
    """Serve porter in front of the test stack (tests/demo.py) until Ctrl-C."""
    try:
        import omeroweb  # noqa: F401

        from tests.demo import banner, running
    except ImportError as exc:
        print(
            f"demo: {exc}. The demo runs from a checkout of omero-porter, with omero-web "
            "installed: `./scripts/run demo` does both.",
            file=sys.stderr,
        )
        return EXIT_USAGE
    with running(args.host, args.port) as demo:
        try:
            settings = load_settings(demo.config)
        except ConfigError as exc:
            print(exc, file=sys.stderr)
            return EXIT_USAGE
        print(banner(demo, args.host, args.port), flush=True)
        serve_args = argparse.Namespace(
            host=None, port=None, workers=None, config=demo.config, argv=[]
        )
        return _serve(serve_args, settings)


def _init_config(args: argparse.Namespace) -> int:
    """Write the shipped, commented config.toml to PATH (never over a file, unless --force)."""
    target: Path = args.path
    if target.exists() and not args.force:
        print(f"init-config: {target} exists; give --force to replace it", file=sys.stderr)
        return EXIT_USAGE
    try:
        target.write_text(DEFAULT_CONFIG.read_text())
        target.chmod(0o640)  # it will hold paths to secrets, maybe secrets: not for everyone
    except OSError as exc:
        print(f"init-config: cannot write {target}: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_FAILURE
    print(f"wrote {target}: edit it, then `omero-porter check --config {target}`")
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
