"""run.py: exit codes, check output, defaults."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import run

ROOT = Path(__file__).resolve().parent.parent


def test_check_on_shipped_config_exits_0_and_prints_settings(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert run.main(["check"]) == 0
    out = capsys.readouterr().out
    assert "configuration is valid" in out
    assert 'upstream = "http://127.0.0.1:4080"' in out


def test_check_on_broken_config_lists_every_problem_and_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "bad.toml"
    config.write_text("[proxy]\nport = 0\ndebug = 1\nsurprise = true\n")
    assert run.main(["check", "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert "3 problem(s)" in err
    assert "proxy.port: 0 is too small: the minimum is 1" in err
    assert "proxy.debug: 1 is not a boolean" in err
    assert "proxy.surprise: unknown setting" in err
    assert "Traceback" not in err


def test_broken_config_as_a_real_process_exits_2_without_traceback(tmp_path: Path) -> None:
    config = tmp_path / "bad.toml"
    config.write_text("[proxy]\nport = 'eighty'\n")
    result = subprocess.run(
        [sys.executable, str(ROOT / "run.py"), "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "proxy.port: 'eighty' is not an integer" in result.stderr
    assert "Traceback" not in result.stderr


def test_usage_error_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert run.main(["no-such-command"]) == 2
    assert run.main(["serve", "--port", "x"]) == 2


def test_help_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    assert run.main(["--help"]) == 0
    assert "check" in capsys.readouterr().out


def test_serve_on_a_taken_port_exits_1(tmp_path: Path) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [sys.executable, str(ROOT / "run.py"), "serve", "--port", str(port)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert result.returncode == 1
    assert f"cannot serve on 127.0.0.1:{port}" in result.stderr


PUBLIC_CONFIG = """
[public]
enabled = true
url_filter = "^/webgateway/(?!(archived_files|download_as)).*"
user = "public"
password = "public-pass"
"""


def test_explain_prints_canonical_path_rule_and_decision(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "public.toml"
    config.write_text(PUBLIC_CONFIG)
    cases = {
        ("GET", "/webgateway/render_image/1/0/0/?q=1"): "decision:  public",
        ("POST", "/webgateway/render_image/1/0/0/"): "decision:  login required",
        ("GET", "/webgateway/archived_files/download/1/"): "decision:  login required",
        ("GET", "/webadmin/"): "decision:  deny",
        ("GET", "/webgateway/%2e%2e/webadmin/"): "decision:  bad request",
    }
    for (method, path), expected in cases.items():
        assert run.main(["explain", method, path, "--config", str(config)]) == 0
        out = capsys.readouterr().out
        assert expected in out, out
        assert "canonical:" in out
        assert "rule:" in out


def test_check_warns_about_a_prefix_style_url_filter(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "public.toml"
    config.write_text(PUBLIC_CONFIG.replace("download_as)).*", "download_as))"))
    assert run.main(["check", "--config", str(config)]) == 0
    err = capsys.readouterr().err
    assert "warning: public.url_filter: does not end with .* or $" in err


@pytest.mark.parametrize("command", ["check", "serve"])
def test_a_directory_another_user_may_write_is_refused_at_start(
    tmp_path: Path, command: str
) -> None:
    """A mail planted in a 0777 spool would be mailed to the admins; an entry planted in the
    cache's directory served to visitors. Such a directory is named, and porter exits 2."""
    spool, cache = tmp_path / "spool", tmp_path / "cache"
    spool.mkdir(mode=0o700)
    cache.mkdir(mode=0o700)
    config = tmp_path / "c.toml"
    config.write_text(
        "[public]\nenabled = true\nuser = 'public'\npassword = 'x'\n"
        f"[cache]\nenabled = true\ndisk_dir = '{cache}'\n"
        f"[mail]\nspool_dir = '{spool}'\n"
    )
    mine = subprocess.run(
        [sys.executable, str(ROOT / "run.py"), "check", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert mine.returncode == 0, mine.stderr  # 0700 and porter's own: fine
    spool.chmod(0o777)
    root = os.geteuid() == 0
    if root:
        os.chown(cache, 65534, 65534)  # another user's (only root may give it away)
    port = ["--port", "1"] if command == "serve" else []  # never reached: refused before
    found = subprocess.run(
        [sys.executable, str(ROOT / "run.py"), command, "--config", str(config), *port],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert found.returncode == 2
    assert "mail.spool_dir: is writable by its group or by others (mode 777)" in found.stderr
    assert ("cache.disk_dir: is owned by uid 65534" in found.stderr) is root
    assert "Traceback" not in found.stderr
