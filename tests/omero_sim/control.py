"""The test server's control channel: HTTP with JSON bodies, on loopback only.

GET  /stats            counters (see SessionRegistry.snapshot)
GET  /sessions         live sessions (key, user, group, refcount, joins, ...)
POST /down | /up | /hang | /reset
POST /slow             {"seconds": 2.5}   delay every call (0 = off)
POST /kill             {"key": "..."}     end a session now
POST /idle-timeout     {"seconds": 1.0}   time-to-idle of sessions created from now on
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from tests.omero_sim.server import HOST, SimServer


def _routes(sim: SimServer) -> dict[tuple[str, str], Callable[[dict[str, Any]], Any]]:
    def slow(body: dict[str, Any]) -> None:
        sim.faults.delay = float(body.get("seconds", 0))

    def idle(body: dict[str, Any]) -> None:
        sim.registry.idle_timeout = float(body["seconds"])

    return {
        ("GET", "/stats"): lambda _: sim.registry.snapshot(),
        ("GET", "/sessions"): lambda _: sim.registry.describe(),
        ("POST", "/down"): lambda _: sim.down(),
        ("POST", "/up"): lambda _: sim.up(),
        ("POST", "/hang"): lambda _: sim.hang(),
        ("POST", "/reset"): lambda _: sim.reset(),
        ("POST", "/slow"): slow,
        ("POST", "/kill"): lambda body: {"killed": sim.kill_session(str(body["key"]))},
        ("POST", "/idle-timeout"): idle,
    }


def start_control(sim: SimServer, port: int = 0) -> ThreadingHTTPServer:
    """Serve the control channel in a daemon thread; returns the server (for its port)."""
    routes = _routes(sim)

    class Handler(BaseHTTPRequestHandler):
        def _answer(self, method: str) -> None:
            route = routes.get((method, self.path))
            if route is None:
                self._send(404, {"error": f"no route {method} {self.path}"})
                return
            length = int(self.headers.get("Content-Length") or 0)
            body = json.loads(self.rfile.read(length) or b"{}")
            try:
                result = route(body)
            except Exception as exc:  # reported to the test that asked
                self._send(500, {"error": repr(exc)})
                return
            self._send(200, {"ok": True} if result is None else result)

        def _send(self, status: int, payload: Any) -> None:
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            self._answer("GET")

        def do_POST(self) -> None:
            self._answer("POST")

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer((HOST, port), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="sim-control", daemon=True).start()
    return server
