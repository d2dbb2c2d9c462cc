"""Log floods: a warning repeated by every failed request during an outage is written once,
then summarised per interval with its count, then cleared with its total, so an outage
writes tens of lines and the counts add up. Unit tests of the gate with a fake clock, then
porter itself (run.py serve) through an outage of the OMERO test server."""

from __future__ import annotations

import json
import logging
import re
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

from proxy.log import FloodGate
from tests.omero_sim.fixture import OmeroSim
from tests.porter_fixtures import PorterProcess


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def warning(msg: str, *args: Any, name: str = "porter.proxy") -> logging.LogRecord:
    return logging.LogRecord(name, logging.WARNING, "", 0, msg, args, None)


def test_the_first_line_passes_repeats_are_counted_and_the_counts_add_up() -> None:
    clock = Clock()
    gate = FloodGate(interval=10.0, clock=clock)
    written: list[int | str] = []
    for n in range(5000):  # 25 s of an outage at 200 failures a second
        clock.now = n * 0.005
        if gate.admit(warning("OMERO server %d unavailable", 1)):
            written.append(n)
        written.extend(r.getMessage() for r in gate.due())
    assert written[0] == 0  # the first one, as it came
    summaries = [w for w in written if isinstance(w, str)]
    assert summaries == [
        "OMERO server 1 unavailable: 2000 more in the last 10 s",
        "OMERO server 1 unavailable: 2000 more in the last 10 s",
    ]
    clock.now = 35.0
    tail = [r.getMessage() for r in gate.due()]
    assert tail == ["OMERO server 1 unavailable: 999 more in the last 15 s"]
    clock.now = 46.0  # quiet for a whole interval: cleared, with the total
    cleared = gate.due()
    assert [r.levelno for r in cleared] == [logging.INFO]
    assert cleared[0].getMessage() == "cleared: OMERO server 1 unavailable (5000 in all over 25 s)"
    assert 1 + 2000 + 2000 + 999 == 5000  # the first line and the summaries: every one
    assert gate.admit(warning("OMERO server %d unavailable", 1))  # a new burst starts afresh


def test_causes_are_counted_apart_and_info_and_access_lines_pass() -> None:
    clock = Clock()
    gate = FloodGate(interval=10.0, clock=clock)
    assert gate.admit(warning("cache fetch failed: %s", "x"))
    assert gate.admit(warning("OMERO server %d unavailable", 1))  # another cause
    assert gate.admit(warning("cache fetch failed: %s", "x", name="porter.cache"))  # logger
    assert not gate.admit(warning("cache fetch failed: %s", "y"))  # same template: same cause
    info = logging.LogRecord("porter.access", logging.INFO, "", 0, "GET /", (), None)
    assert all(gate.admit(info) for _ in range(100))
    critical = logging.LogRecord("porter.proxy", logging.CRITICAL, "", 0, "down", (), None)
    assert all(gate.admit(critical) for _ in range(3))
    assert [r.getMessage() for r in gate.due(everything=True)] == [
        "cache fetch failed: x: 1 more in the last 0 s"
    ]


def _get(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def test_an_omero_outage_writes_tens_of_lines_and_says_how_many(
    porter_process: Callable[..., PorterProcess], omero_sim: OmeroSim
) -> None:
    entry = omero_sim.server_list_entry()
    porter = porter_process(
        {
            "log": {"format": "json"},
            "omero": {"server_list": [entry], "call_timeout": 1.0},
            "public": {
                "enabled": True,
                "url_filter": "/webgateway/.*",
                "user": "public",
                "password": omero_sim.users["public"],
                "failure_backoff": 0.0,
            },
            "limits": {"enabled": False},
        },
        upstream="http://127.0.0.1:9",
    )
    omero_sim.down()
    statuses = []
    try:
        deadline = time.monotonic() + 4.0
        n = 0
        while time.monotonic() < deadline:
            n += 1
            statuses.append(_get(f"{porter.url}/webgateway/img/{n}"))
    finally:
        omero_sim.up()
    failed = sum(1 for s in statuses if s == 503)
    assert failed >= 50, statuses[:10]
    porter.process.terminate()
    porter.process.wait(timeout=30)  # at stop, the repeats not yet told are written
    lines = [json.loads(x) for x in porter.log().splitlines() if x.startswith("{")]
    warnings = [
        x
        for x in lines
        if x["level"] == "WARNING" and x["message"].startswith("public session unavailable")
    ]
    told = 0
    for w in warnings:
        more = re.search(r": (\d+) more in the last", w["message"])
        told += int(more.group(1)) if more else 1
    assert told == failed  # one warning per 503, each written or counted: none lost
    assert len(warnings) <= 3  # the first line and a summary or two, not 1,000 lines
