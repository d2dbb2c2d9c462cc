"""The files for a host, each run as shipped: deploy/omero-porter.service (systemd-analyze,
then its ExecStart, ExecReload and stop on porter itself) and deploy/nginx-porter.conf (real
nginx with TLS, a certificate made here with `cryptography`, in front of porter, the real
OMERO.web and the OMERO test server)."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import ssl
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from yarl import URL

from auth.omero_settings import OmeroSettings
from auth.public_settings import PublicSessionSettings
from filters.settings import PublicRuleSettings
from proxy.settings import LoginSettings
from tests.gateway_fixtures import form_token
from tests.nginx_fixture import Nginx, free_port
from tests.omero_sim.fixture import OmeroSim
from tests.porter_fixtures import PorterProcess, _wait_listening, write_config
from tests.smtp_fixture import make_cert
from tests.web_fixture import OmeroWeb

ROOT = Path(__file__).resolve().parent.parent
UNIT = ROOT / "deploy" / "omero-porter.service"
NGINX = ROOT / "deploy" / "nginx-porter.conf"
DEPLOYMENT = ROOT / "docs" / "deployment.md"
CREDENTIALS = "/run/credentials/omero-porter.service"
THUMBNAIL = "/webgateway/render_thumbnail/{}/"


# ~ systemd


def unit_entries(text: str) -> list[tuple[str, str, str]]:
    """(section, key, value) of every assignment, in order (keys repeat in systemd units)."""
    entries: list[tuple[str, str, str]] = []
    section = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        entries.append((section, key, value))
    return entries


def unit_values(key: str) -> list[str]:
    return [v for _, k, v in unit_entries(UNIT.read_text()) if k == key]


def test_the_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed here")
    # ExecStart must be executable for verify: the suite's own omero-porter command
    command = Path(os.environ.get("VIRTUAL_ENV", ROOT / ".venv")) / "bin" / "omero-porter"
    if not command.exists():
        command = ROOT / ".venv" / "bin" / "omero-porter"
    unit = tmp_path / "omero-porter.service"
    unit.write_text(UNIT.read_text().replace("/opt/omero-porter/bin/omero-porter", str(command)))
    verified = subprocess.run(
        [analyze, "verify", str(unit)], capture_output=True, text=True, timeout=60
    )
    # verify exits 0 on an unknown key or a bad value, and says so on stderr: none allowed
    assert (verified.returncode, verified.stderr) == (0, "")


def test_the_unit_runs_a_dedicated_user_hardened_with_credentials_and_reload() -> None:
    values = {k: v for _, k, v in unit_entries(UNIT.read_text())}
    assert values["User"] == values["Group"] == "omero-porter"
    assert values["ExecReload"] == "/bin/kill -HUP $MAINPID"
    assert values["RestartPreventExitStatus"] == "2"  # a configuration error: no restart loop
    for hardening in ("NoNewPrivileges", "ProtectHome", "PrivateTmp", "RestrictSUIDSGID"):
        assert values[hardening] == "yes", hardening
    assert values["ProtectSystem"] == "strict"
    assert values["CapabilityBoundingSet"] == ""  # no capability at all (port 8080, not 80)
    ids = [c.split(":", 1)[0] for c in unit_values("LoadCredential")]
    assert ids == ["public-password", "secret-key", "operator-token"]
    # every credential path the docs tell admins to write into config.toml is one it loads
    named = set(re.findall(re.escape(CREDENTIALS) + r"/([\w-]+)", DEPLOYMENT.read_text()))
    assert named == set(ids)


def test_the_units_commands_start_reload_and_stop_porter(tmp_path: Path) -> None:
    """ExecStart as written (paths moved into the test's directory), then ExecReload, then
    KillSignal: one process logs that a reload needs a restart and serves on (SIGHUP's
    default action would have ended it); SIGTERM ends it with 0, so Restart= does nothing."""
    credentials = tmp_path / "credentials"  # what systemd makes of LoadCredential=
    credentials.mkdir(mode=0o700)
    secrets = {
        "public-password": "public-pass",
        "secret-key": "k" * 48,
        "operator-token": "t" * 40,
    }
    for name, value in secrets.items():
        (credentials / name).write_text(value)
    port = free_port()
    config = write_config(
        tmp_path / "config.toml",
        {
            "proxy": {
                "host": "127.0.0.1",
                "port": port,
                "secret_key_file": f"{CREDENTIALS}/secret-key",
                "operator_token_file": f"{CREDENTIALS}/operator-token",
            },
            "public": {
                "enabled": True,
                "url_filter": "/webgateway/render_thumbnail/[0-9]+/.*",
                "user": "public",
                "password_file": f"{CREDENTIALS}/public-password",
            },
        },
    )
    config.write_text(config.read_text().replace(CREDENTIALS, str(credentials)))
    [start] = unit_values("ExecStart")
    argv = shlex.split(start)
    assert argv[0] == "/opt/omero-porter/bin/omero-porter"
    argv[0] = str(ROOT / ".venv" / "bin" / "omero-porter")
    argv = [str(config) if a == "/etc/omero-porter/config.toml" else a for a in argv]
    log_path = tmp_path / "porter.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(argv, cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT)
    handle = PorterProcess(process, f"http://127.0.0.1:{port}", log_path)
    try:
        _wait_listening(handle, port)
        [reload] = unit_values("ExecReload")
        reload_argv = [str(process.pid) if a == "$MAINPID" else a for a in shlex.split(reload)]
        assert subprocess.run(reload_argv, timeout=10).returncode == 0
        deadline = time.monotonic() + 10
        while "SIGHUP" not in handle.log() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert "one porter process does not reload its configuration" in handle.log()
        assert process.poll() is None
        _wait_listening(handle, port)  # still serving
        [kill] = unit_values("KillSignal")
        process.send_signal(getattr(signal, kill))
        assert process.wait(timeout=30) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert all(value not in handle.log() for value in secrets.values())


# ~ nginx with TLS


def collect_static(directory: Path) -> Path:
    """OMERO.web's `collectstatic` into `directory`/var/static (its STATIC_ROOT there)."""
    (directory / "etc" / "grid").mkdir(parents=True)
    env = {
        **os.environ,
        "OMERODIR": str(directory),
        "DJANGO_SETTINGS_MODULE": "omeroweb.settings",
        "PYTHONWARNINGS": "ignore",
    }
    done = subprocess.run(
        [sys.executable, "-m", "django", "collectstatic", "--noinput", "-v0"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return directory / "var" / "static"


def nginx_site(
    porter_port: int, http_port: int, https_port: int, directory: Path
) -> tuple[str, Path]:
    """deploy/nginx-porter.conf with this test's ports, certificate (made here, self-signed
    for localhost and 127.0.0.1) and STATIC_ROOT; and the certificate, for the clients."""
    made = make_cert(directory)
    cert, key = made.cert, made.key
    static = collect_static(directory / "omerodir")
    site = NGINX.read_text()
    replacements = {
        "server 127.0.0.1:8080;": f"server 127.0.0.1:{porter_port};",
        "    listen [::]:80;\n": "",
        "    listen [::]:443 ssl http2;\n": "",
        "listen 80;": f"listen 127.0.0.1:{http_port};",
        "listen 443 ssl http2;": f"listen 127.0.0.1:{https_port} ssl http2;",
        "/etc/ssl/certs/omero.example.org.pem": str(cert),
        "/etc/ssl/private/omero.example.org.key": str(key),
        "/opt/omero/web/OMERO.web/var/static/": f"{static}/",
    }
    for old, new in replacements.items():
        assert old in site, f"deploy/nginx-porter.conf no longer holds {old!r}"
        site = site.replace(old, new)
    return site, cert


GatewayClient = Callable[..., Awaitable[Any]]


LOGO = "/static/webgateway/img/logo_login2.png"  # OMERO.web's own, as login_logo


async def tls_front(
    gateway: GatewayClient, sim: OmeroSim, tmp_path: Path, trusted: tuple[str, ...]
) -> tuple[Nginx, str]:
    entry = sim.server_list_entry()
    porter = await gateway(
        trusted_proxies=trusted,
        sections={
            "login": LoginSettings(login_logo=LOGO),
            "omero": OmeroSettings(server_list=((entry[0], entry[1], entry[2]),)),
            "public": PublicRuleSettings(
                enabled=True, url_filter="/webgateway/render_thumbnail/[0-9]+/.*"
            ),
            "public_session": PublicSessionSettings(
                enabled=True, user="public", password=sim.users["public"]
            ),
        },
    )
    http_port, https_port = free_port(), free_port()
    directory = tmp_path / "nginx"
    directory.mkdir()
    site, cert = nginx_site(porter.server.port, http_port, https_port, directory)
    return Nginx(directory, site, https_port), str(cert)


async def log_in_over_https(
    session: aiohttp.ClientSession, base: str, user: str, password: str, url: str
) -> aiohttp.ClientResponse:
    async with session.get(base + "/porter/login") as page:
        assert page.status == 200
        token = form_token(await page.text())
    return await session.post(
        base + "/porter/login",
        data={"csrf_token": token, "username": user, "password": password, "url": url},
        allow_redirects=False,
    )


async def test_tls_nginx_in_front_of_porter_logs_in_over_https_with_secure_cookies(
    gateway: GatewayClient, omero_sim: OmeroSim, omero_web: OmeroWeb, tmp_path: Path
) -> None:
    nginx, cert = await tls_front(gateway, omero_sim, tmp_path, ("127.0.0.1/32",))
    https_port = nginx.port
    http_port = int(re.findall(r"listen 127\.0\.0\.1:(\d+);", nginx_conf(nginx))[0])
    base = f"https://127.0.0.1:{https_port}"
    tls = ssl.create_default_context(cafile=cert)
    try:
        async with aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=tls), cookie_jar=aiohttp.CookieJar(unsafe=True)
        ) as browser:
            # plain http: sent to https
            async with browser.get(
                f"http://127.0.0.1:{http_port}/porter/login", allow_redirects=False
            ) as plain:
                assert plain.status == 301
                assert plain.headers["Location"].startswith("https://127.0.0.1/porter/login")

            # a public image, anonymous, over https: through porter's public session
            async with browser.get(base + THUMBNAIL.format(1)) as image:
                assert (image.status, image.content_type) == (200, "image/jpeg")
                assert (await image.read())[:2] == b"\xff\xd8"
                assert "X-Request-Id" in image.headers  # porter answered it
                assert "max-age" in image.headers["Strict-Transport-Security"]

            # OMERO.web's static files: nginx answers them from STATIC_ROOT, porter never sees
            static_root = tmp_path / "nginx" / "omerodir" / "var" / "static"
            css = next(static_root.glob("webgateway/css/*.css"))
            path = "/static/" + css.relative_to(static_root).as_posix()
            async with browser.get(base + path) as static:
                assert static.status == 200
                assert await static.read() == css.read_bytes()
                assert static.headers["Server"] == "nginx"  # server_tokens off: no version
                assert "X-Request-Id" not in static.headers  # porter stamps every answer
                assert static.headers.getall("Cache-Control") == ["max-age=604800"]  # 7d

            # login_logo under /static/: on porter's login page, and served by nginx to anyone
            async with browser.get(base + "/porter/login") as page:
                assert f'src="{LOGO}"' in await page.text()
            async with browser.get(base + LOGO) as logo:
                assert (logo.status, logo.content_type) == (200, "image/png")
                assert "X-Request-Id" not in logo.headers

            # alice logs in on porter's page over https: every cookie Secure
            login = await log_in_over_https(
                browser, base, "alice", omero_sim.users["alice"], THUMBNAIL.format(3)
            )
            assert login.status == 303
            assert login.headers["Location"] == THUMBNAIL.format(3)
            cookies = login.headers.getall("Set-Cookie")
            assert cookies
            for cookie in cookies:
                attributes = [a.strip().lower() for a in cookie.split(";")]
                assert "secure" in attributes, cookie
                assert "httponly" in attributes, cookie
            async with browser.get(base + THUMBNAIL.format(3)) as mine:
                assert (mine.status, mine.content_type) == (200, "image/jpeg")
            jar = browser.cookie_jar.filter_cookies(URL(base))
            assert "sessionid" not in jar  # OMERO.web's session stays with porter
            assert jar  # porter's cookie (its Secure flag: the Set-Cookie lines above)
    finally:
        nginx.stop()
    assert "[error]" not in nginx.error_log(), nginx.error_log()


def nginx_conf(nginx: Nginx) -> str:
    return (nginx.directory / "omero-porter.conf").read_text()


async def test_without_trusted_proxies_porter_does_not_believe_nginx_and_cookies_are_not_secure(
    gateway: GatewayClient, omero_sim: OmeroSim, omero_web: OmeroWeb, tmp_path: Path
) -> None:
    """The other half of the pairing docs/deployment.md asks for: trusted_proxies left empty,
    porter takes the hop from nginx for plain http, and says so in the cookie."""
    nginx, cert = await tls_front(gateway, omero_sim, tmp_path, ())
    base = f"https://127.0.0.1:{nginx.port}"
    try:
        async with aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=ssl.create_default_context(cafile=cert)),
            cookie_jar=aiohttp.CookieJar(unsafe=True),
        ) as browser:
            login = await log_in_over_https(
                browser, base, "alice", omero_sim.users["alice"], THUMBNAIL.format(3)
            )
            assert login.status == 303
            cookies = login.headers.getall("Set-Cookie")
            assert cookies
            assert all("secure" not in cookie.lower() for cookie in cookies)
    finally:
        nginx.stop()
