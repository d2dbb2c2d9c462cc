"""Slow and greedy clients against porter's own listener (run.py serve, a real socket): a
request head must be complete within `[proxy] header_timeout`, on a new connection and on a
kept-alive one, and one process keeps at most `max_connections` open. A slowloris cannot hold
porter's file descriptors; a slow body upload is not a slow head and is left alone."""

from __future__ import annotations

import os
import socket
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

from tests.porter_fixtures import PorterProcess

HEAD_TIMEOUT = 1.0


def _connect(url: str) -> socket.socket:
    host, port = url.removeprefix("http://").split(":")
    return socket.create_connection((host, int(port)), timeout=10)


def _closed_within(sock: socket.socket, seconds: float) -> float | None:
    """Seconds until the server closed `sock` (None: still open after `seconds`)."""
    start = time.monotonic()
    sock.settimeout(seconds)
    try:
        while True:
            data = sock.recv(4096)
            if not data:
                return time.monotonic() - start
    except TimeoutError:
        return None
    except ConnectionResetError:
        return time.monotonic() - start


def _fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def _healthz(url: str) -> int:
    """healthz's status (the timeout only guards against a hang: no timing is asserted)."""
    with urllib.request.urlopen(url + "/porter/healthz", timeout=10) as resp:
        return int(resp.status)


def test_a_slowloris_is_cut_after_the_header_timeout_and_holds_no_descriptors(
    porter_process: Callable[..., PorterProcess],
) -> None:
    porter = porter_process(header_timeout=HEAD_TIMEOUT)
    before = _fds(porter.pid)
    stop = threading.Event()
    cut_after: list[float] = []

    def slowloris() -> None:  # one header line at a time, never the blank line
        sock = _connect(porter.url)
        start = time.monotonic()
        try:
            sock.sendall(b"GET /porter/healthz HTTP/1.1\r\nHost: x\r\n")
            while not stop.is_set():
                time.sleep(0.3)
                sock.sendall(b"X-Slow: 1\r\n")
        except OSError:
            cut_after.append(time.monotonic() - start)
        finally:
            sock.close()

    threads = [threading.Thread(target=slowloris) for _ in range(200)]
    for thread in threads:
        thread.start()
    time.sleep(0.5)
    assert _healthz(porter.url) == 200  # served while 200 heads trickle in
    time.sleep(HEAD_TIMEOUT + 2.0)
    stop.set()
    for thread in threads:
        thread.join(10)
    assert len(cut_after) == 200  # every one of them cut by porter
    assert max(cut_after) < HEAD_TIMEOUT + 2.5
    time.sleep(0.2)
    assert _fds(porter.pid) <= before + 5  # nothing held
    assert "closed client connections: " in porter.log()
    assert "header_timeout" in porter.log()


def test_the_next_head_on_a_kept_alive_connection_is_timed_too(
    porter_process: Callable[..., PorterProcess],
) -> None:
    porter = porter_process(header_timeout=HEAD_TIMEOUT)
    sock = _connect(porter.url)
    sock.sendall(b"GET /porter/healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    assert sock.recv(4096).startswith(b"HTTP/1.1 200")
    time.sleep(HEAD_TIMEOUT + 0.5)  # idle between requests: keep-alive's business, not cut
    sock.sendall(b"GET /porter/healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    assert sock.recv(4096).startswith(b"HTTP/1.1 200")
    sock.sendall(b"GET /porter/healthz HTTP/1.1\r\n")  # then a head that never ends
    closed = _closed_within(sock, HEAD_TIMEOUT + 3)
    assert closed is not None
    assert closed >= HEAD_TIMEOUT - 0.1  # cut by the head's clock, not at once
    sock.close()


def test_a_slow_body_is_not_a_slow_head(
    porter_process: Callable[..., PorterProcess], tmp_path: Path
) -> None:
    porter = porter_process(header_timeout=HEAD_TIMEOUT)
    sock = _connect(porter.url)
    body = b"username=alice&password=x&csrf_token=none"
    sock.sendall(
        b"POST /porter/login HTTP/1.1\r\nHost: x\r\nContent-Type: "
        b"application/x-www-form-urlencoded\r\nContent-Length: "
        + str(len(body)).encode()
        + b"\r\n\r\n"
    )
    for n in range(0, len(body), 10):  # the body over 2.4 s, past the header timeout
        time.sleep(0.6)
        sock.sendall(body[n : n + 10])
    answer = sock.recv(4096)
    assert answer.startswith(b"HTTP/1.1 "), answer[:40]  # porter answered (the form's verdict)
    sock.close()


def test_connections_past_max_connections_are_closed_at_once(
    porter_process: Callable[..., PorterProcess],
) -> None:
    porter = porter_process(header_timeout=HEAD_TIMEOUT, max_connections=5)
    held = [_connect(porter.url) for _ in range(5)]
    time.sleep(0.2)
    extra = _connect(porter.url)
    assert (_closed_within(extra, 2.0) or 99) < 1.0  # closed by porter at once
    extra.close()
    time.sleep(HEAD_TIMEOUT + 0.5)  # the held ones sent nothing: cut by the header timeout
    assert all(_closed_within(sock, 1.0) is not None for sock in held)
    for sock in held:
        sock.close()
    time.sleep(0.2)
    assert _healthz(porter.url) == 200  # room again
    assert "over_limit" in porter.log()
