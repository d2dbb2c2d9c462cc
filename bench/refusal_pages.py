"""What a [limits] refusal costs porter's CPU, by who asks: a script (plain text), a browser
(porter's error page, rendered once and kept: RefusalPages), and the same page rendered by
its template for each refusal (what error_response does), in the same run.

In-process, no sockets: each figure is the median over 5 rounds of N calls, microseconds per
refusal. Interleaved rounds, so the machine's noise falls on all three alike.

    .venv/bin/python bench/refusal_pages.py [--calls 20000]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: import from the project, not from bench/
    sys.path[0] = str(Path(__file__).resolve().parent.parent)

from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from proxy.answers import error_response
from proxy.app import create_app
from proxy.keys import SCOPE
from proxy.limits import refuse
from proxy.settings import ProxySettings, Settings

MESSAGE = "Too many requests from your network."


class _Notes:
    refusal: str | None = None


class _Scope:  # what refuse() reads of porter's per-request scope
    notes = _Notes()
    request_id = "0123456789abcdef"


def _requests(app: web.Application, accept: str, n: int) -> list[web.Request]:
    made = []
    for _ in range(n):
        request = make_mocked_request("GET", "/busy/x", headers={"Accept": accept}, app=app)
        request[SCOPE] = _Scope()  # type: ignore[misc]
        made.append(request)
    return made


def _per_call(app: web.Application, accept: str, answer: Callable[[Any], Any], n: int) -> float:
    requests = _requests(app, accept, n)
    start = time.perf_counter()
    for request in requests:
        answer(request)
    return (time.perf_counter() - start) / n * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=20000)
    args = parser.parse_args()
    app = create_app(Settings(proxy=ProxySettings(upstream="http://127.0.0.1:9")))

    def refused(request: Any) -> Any:
        return refuse(request, 429, "rate", 3.0, MESSAGE)

    def rendered(request: Any) -> Any:
        return error_response(request, 429, MESSAGE, headers={"Retry-After": "3"})

    kinds = {
        "script: plain text": ("*/*", refused),
        "browser: kept page": ("text/html", refused),
        "browser: template each time": ("text/html", rendered),
    }
    rounds: dict[str, list[float]] = {k: [] for k in kinds}
    for _ in range(5):
        for name, (accept, answer) in kinds.items():
            rounds[name].append(_per_call(app, accept, answer, args.calls))
    plain = statistics.median(rounds["script: plain text"])
    print(f"{'refusal (429)':30s} {'µs median':>10s} {'vs plain':>9s}")
    for name, figures in rounds.items():
        median = statistics.median(figures)
        print(f"{name:30s} {median:10.1f} {median / plain:8.2f}x")


if __name__ == "__main__":
    main()
