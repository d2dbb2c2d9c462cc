"""`[log] file`: porter's log in a file that logrotate moves away (a new file within a
second, nothing lost), and a log that cannot be written (a full disk: /dev/full) never stops
requests being served. Porter as run.py serve."""

from __future__ import annotations

import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

from tests.porter_fixtures import ROOT, PorterProcess, _wait_listening, free_port, write_config


def _get(url: str) -> int:
    with urllib.request.urlopen(url, timeout=10) as resp:
        return int(resp.status)


def test_a_rotated_log_file_is_reopened_and_no_line_is_lost(
    porter_process: Callable[..., PorterProcess], tmp_path: Path
) -> None:
    log = tmp_path / "porter.log"
    porter = porter_process({"log": {"file": str(log), "exclude_paths": []}})
    for n in range(5):
        assert _get(f"{porter.url}/porter/healthz?before={n}") == 200
    time.sleep(0.3)
    rotated = tmp_path / "porter.log.1"
    log.rename(rotated)  # logrotate's default: move, then the program writes a new file
    deadline = time.monotonic() + 10
    n = 0
    while not log.exists():
        n += 1
        assert _get(f"{porter.url}/porter/healthz?after={n}") == 200
        assert time.monotonic() < deadline, "porter never reopened its log file"
        time.sleep(0.1)
    for _ in range(3):
        n += 1
        assert _get(f"{porter.url}/porter/healthz?after={n}") == 200
    time.sleep(1.5)
    porter.process.terminate()
    porter.process.wait(timeout=30)
    old, new = rotated.read_text(), log.read_text()
    assert old.count("GET /porter/healthz") >= 5
    assert "GET /porter/healthz" in new  # the new file gets the new lines
    assert old.count("GET /porter/healthz") + new.count("GET /porter/healthz") == 5 + n


def test_a_log_that_cannot_be_written_never_stops_requests(tmp_path: Path) -> None:
    port = free_port()
    config = write_config(
        tmp_path / "porter.toml",
        {"proxy": {"host": "127.0.0.1", "port": port}, "log": {"file": "/dev/full"}},
    )
    stderr = tmp_path / "stderr.log"
    with stderr.open("wb") as errors:
        process = subprocess.Popen(
            [sys.executable, str(ROOT / "run.py"), "serve", "--config", str(config)],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=errors,
        )
    handle = PorterProcess(process, f"http://127.0.0.1:{port}", stderr)
    try:
        _wait_listening(handle, port)
        for _ in range(200):  # every write of the log fails with ENOSPC
            assert _get(f"{handle.url}/porter/healthz") == 200
        time.sleep(0.5)
        assert process.poll() is None
        assert _get(f"{handle.url}/porter/healthz") == 200
    finally:
        process.terminate()
        assert process.wait(timeout=30) == 0
    assert "No space left on device" in stderr.read_text()  # said where it can be
