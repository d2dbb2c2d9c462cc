"""mailer/spool.py with the sender: no admin mail is lost to a long SMTP outage, or to a
restart during one. A real SMTP server (aiosmtpd) comes up on the port that was dead."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from mailer import MailSender
from tests.smtp_fixture import SmtpServer, free_port, settings_for
from tests.test_mail_sender import failure


def spooled(port: int, directory: Path, **overrides: Any) -> Any:
    values: dict[str, Any] = {
        "retries": 1,
        "backoff": 0.01,
        "backoff_max": 0.01,
        "spool_dir": str(directory),
        "spool_retry_interval": 0.1,
        **overrides,
    }
    return settings_for(port, **values)


async def wait_until(check: Callable[[], bool], timeout: float = 15.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not check():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.02)


async def test_mail_outlives_an_smtp_outage_past_its_retries(
    start_smtp: Callable[..., SmtpServer], tmp_path: Path
) -> None:
    port = free_port()
    sender = MailSender(spooled(port, tmp_path), tick=0.02)
    async with sender:
        for n in range(5):
            sender.submit(failure(n))
        await wait_until(lambda: sender.counters().spooled == 5)
        spooled_files = list(tmp_path.glob("*.eml"))
        assert len(spooled_files) == 5
        assert {f.stat().st_mode & 0o777 for f in spooled_files} == {0o600}
        server = start_smtp(port=port)  # the SMTP server is back
        received = await server.inbox.wait_for(5)
        await wait_until(lambda: sender.counters().spool_delivered == 5)
    counters = sender.counters()
    assert counters.spool_delivered == 5
    assert counters.lost == 0
    assert sorted(m.message["X-Porter-Request-Id"] for m in received) == [
        f"req-{n}" for n in range(5)
    ]
    assert list(tmp_path.glob("*.eml")) == []


async def test_a_restart_during_the_outage_loses_nothing(
    start_smtp: Callable[..., SmtpServer], tmp_path: Path
) -> None:
    port = free_port()
    before = MailSender(spooled(port, tmp_path, drain_timeout=0.2), tick=0.02)
    async with before:
        for n in range(3):
            before.submit(failure(n))
        await wait_until(lambda: before.counters().spooled >= 1)
    # stopped with mail still queued: spooled too, not lost
    assert before.counters().spooled == 3
    assert before.counters().lost == 0
    server = start_smtp(port=port)
    after = MailSender(spooled(port, tmp_path), tick=0.02)  # a new porter process
    async with after:
        await server.inbox.wait_for(3)
        await wait_until(lambda: after.counters().spool_delivered == 3)
    assert after.counters().spool_delivered == 3


async def test_the_spool_is_bounded_and_says_what_it_drops(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    sender = MailSender(spooled(free_port(), tmp_path, spool_max_files=2), tick=0.02)
    with caplog.at_level(logging.ERROR, logger="porter.mailer"):
        async with sender:
            for n in range(4):
                sender.submit(failure(n))
            await wait_until(lambda: sender.counters().spooled + sender.counters().lost >= 4)
    counters = sender.counters()
    assert (counters.spooled, counters.lost_spool_full) == (2, 2)
    assert len(list(tmp_path.glob("*.eml"))) == 2
    assert caplog.text.count("the spool") == 2


async def test_a_crashed_claimers_mail_goes_back_to_the_queue_and_a_live_ones_stays(
    start_smtp: Callable[..., SmtpServer], tmp_path: Path
) -> None:
    """A process that claimed a mail (renamed it `.sending-<pid>`) and died: another sender
    delivers it. A live process's fresh claim is left alone, until CLAIM_TIMEOUT."""
    import os
    import subprocess
    import time
    from email.message import EmailMessage

    from mailer.spool import CLAIM_TIMEOUT, CLAIMED, MailSpool

    spool = MailSpool(tmp_path, max_files=10, max_bytes=1_000_000)
    for n in range(3):
        message = EmailMessage()
        message["From"], message["To"] = "porter@example.org", "ada@example.org"
        message["Subject"] = f"spooled {n}"
        message.set_content("x")
        assert spool.put(message)
        time.sleep(0.001)  # names sort by time
    gone_pid = subprocess.Popen(["true"])  # a pid that has exited
    gone_pid.wait()
    first, second, third = spool.files()
    crashed = first.rename(first.with_name(f"{first.name}{CLAIMED}{gone_pid.pid}"))
    live = second.rename(second.with_name(f"{second.name}{CLAIMED}1"))  # init: alive
    old = third.rename(third.with_name(f"{third.name}{CLAIMED}1"))
    long_ago = time.time() - CLAIM_TIMEOUT - 1
    os.utime(old, (long_ago, long_ago))
    server = start_smtp()
    sender = MailSender(spooled(server.port, tmp_path), tick=0.02)
    async with sender:
        await server.inbox.wait_for(2)
        await asyncio.sleep(0.3)
    assert len(server.inbox.messages) == 2  # the crashed claimer's and the stale one
    assert not crashed.exists()
    assert not old.exists()
    assert live.exists()  # still another process's to deliver
