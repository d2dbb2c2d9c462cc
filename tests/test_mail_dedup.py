"""One mail per failure per window, repeats summed into one digest, a global hourly cap."""

from __future__ import annotations

from dataclasses import replace

from mailer import MailSender, Report
from mailer.dedup import Decision, Deduplicator, HourlyCap, fingerprint
from mailer.settings import MailSettings
from tests.smtp_fixture import SmtpServer, settings_for


class FakeClock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def crash(n: int = 0) -> Report:
    def handler() -> None:
        raise KeyError("image")

    try:
        handler()
    except KeyError as exc:
        return Report.for_exception(exc, f"req-{n}", method="GET", path=f"/webclient/{n}/")
    raise AssertionError("unreachable")


def view(n: int) -> str:
    """A distinct view name for each n (digits would be folded as an object id)."""
    letters = ""
    while True:
        n, rest = divmod(n, 26)
        letters += chr(ord("a") + rest)
        if n == 0:
            return f"/{letters}/"


def upstream(path: str, status: int = 500, n: int = 0) -> Report:
    return Report(kind="upstream_error", request_id=f"req-{n}", path=path, status=status)


ADMINS = (("Ada", "ada@example.org"),)


async def test_thousand_identical_failures_make_one_mail_and_one_digest_of_999(
    smtp_server: SmtpServer,
) -> None:
    clock = FakeClock()
    settings = settings_for(smtp_server, dedup_window=600.0)
    async with MailSender(settings, clock=clock, tick=0.02) as sender:
        for n in range(1000):
            assert sender.submit(crash(n))
        [first] = await smtp_server.inbox.wait_for(1)
        clock.now += 601  # the window closes; the sender's timer mails the digest
        mails = await smtp_server.inbox.wait_for(2)
    assert len(mails) == 2
    digest = mails[1]
    assert digest.message["Subject"].startswith("[omero-porter] Digest: 999 more x Porter error")
    assert "999 more occurrence(s)" in digest.text
    assert "req-999" in digest.text  # the latest request ids are listed
    assert "req-0" in first.message["Subject"]
    counters = sender.counters()
    assert (counters.sent, counters.digests_sent, counters.folded) == (2, 1, 999)


async def test_open_digests_are_mailed_when_the_sender_stops(smtp_server: SmtpServer) -> None:
    sender = MailSender(settings_for(smtp_server), clock=FakeClock(), tick=0.02)
    await sender.start()
    for n in range(5):
        sender.submit(upstream("/webclient/api/", n=n))
    await smtp_server.inbox.wait_for(1)
    await sender.stop(drain_timeout=30)
    mails = smtp_server.inbox.messages
    assert len(mails) == 2
    assert "Digest: 4 more x OMERO.web error 500" in mails[1].message["Subject"]


def test_same_exception_from_different_paths_shares_one_fingerprint() -> None:
    assert fingerprint(crash(1)) == fingerprint(crash(2))
    assert "KeyError@" in fingerprint(crash(1))
    assert "test_mail_dedup.py:handler" in fingerprint(crash(1))


def test_upstream_errors_are_keyed_by_status_and_path() -> None:
    assert fingerprint(upstream("/a/")) != fingerprint(upstream("/b/"))
    assert fingerprint(upstream("/a/", 500)) != fingerprint(upstream("/a/", 502))
    assert fingerprint(upstream("/a/", n=1)) == fingerprint(upstream("/a/", n=2))


def test_repeat_after_the_window_is_mailed_again() -> None:
    clock = FakeClock()
    dedup = Deduplicator(MailSettings(admins=ADMINS, dedup_window=60), clock)
    assert dedup.observe(upstream("/a/")) is Decision.SEND
    assert dedup.observe(upstream("/a/")) is Decision.FOLDED
    assert dedup.due() == []
    clock.now += 61
    [digest] = dedup.due()
    assert digest.count == 1
    assert dedup.observe(upstream("/a/")) is Decision.SEND


def test_window_without_repeats_closes_without_a_digest() -> None:
    clock = FakeClock()
    dedup = Deduplicator(MailSettings(admins=ADMINS, dedup_window=60), clock)
    dedup.observe(upstream("/a/"))
    clock.now += 61
    assert dedup.due() == []
    assert dedup.open_windows == 0


def test_unavailable_events_use_their_own_window() -> None:
    clock = FakeClock()
    settings = MailSettings(admins=ADMINS, dedup_window=60, unavailable_window=3600)
    dedup = Deduplicator(settings, clock)
    down = Report(kind="unavailable", request_id="r", path="/x/", status=503)
    assert dedup.observe(down) is Decision.SEND
    assert dedup.observe(upstream("/a/")) is Decision.SEND
    clock.now += 61
    assert dedup.observe(upstream("/a/")) is Decision.SEND  # its 60 s window ended
    elsewhere = Report(kind="unavailable", request_id="r2", path="/y/", status=503)
    assert dedup.observe(elsewhere) is Decision.FOLDED  # keyed on status only


def test_hourly_cap_folds_first_occurrences_into_a_digest() -> None:
    clock = FakeClock()
    dedup = Deduplicator(MailSettings(admins=ADMINS, max_per_hour=2, dedup_window=60), clock)
    decisions = [dedup.observe(upstream(view(n))) for n in range(3)]
    assert decisions == [Decision.SEND, Decision.SEND, Decision.CAPPED]
    clock.now += 61
    [digest] = dedup.due()
    assert digest.count == 1
    assert digest.first_sent is False


def test_hourly_cap_frees_slots_after_an_hour() -> None:
    clock = FakeClock()
    cap = HourlyCap(2, clock)
    assert [cap.take(), cap.take(), cap.take()] == [True, True, False]
    clock.now += 3600
    assert cap.take()


def test_zero_window_mails_every_occurrence() -> None:
    dedup = Deduplicator(MailSettings(admins=ADMINS, dedup_window=0), FakeClock())
    assert [dedup.observe(upstream("/a/")) for _ in range(3)] == [Decision.SEND] * 3


def test_distinct_failures_beyond_the_limit_share_one_overflow_window() -> None:
    from mailer.dedup import MAX_WINDOWS

    dedup = Deduplicator(MailSettings(admins=ADMINS, max_per_hour=0), FakeClock())
    for n in range(MAX_WINDOWS + 50):
        dedup.observe(upstream(f"/random{view(n)}"))
    assert dedup.open_windows == MAX_WINDOWS + 1
    digests = dedup.due(everything=True)
    assert [d.count for d in digests if d.fingerprint.startswith("overflow:")] == [49]


def test_upstream_errors_are_one_failure_per_view_and_exception() -> None:
    def failing(path: str, excerpt: str = "") -> str:
        report = Report(kind="upstream_error", request_id="r", path=path, status=500)
        return fingerprint(replace(report, excerpt=excerpt))

    assert failing("/webgateway/render_image/1/0/0/") == failing("/webgateway/render_image/22/3/4/")
    assert failing("/webgateway/img_detail/image-12/") == failing("/webgateway/img_detail/im-34/")
    assert failing("/webclient/img_detail/12/") != failing("/webclient/load_data/12/")
    django = "<th>Exception Type:</th><td>ValueError</td>"
    trace = 'Traceback (most recent call last):\n  File "x.py"\nomero.SecurityViolation: no'
    assert failing("/a/", django) != failing("/a/", trace)
    assert failing("/a/", trace) == failing("/a/", trace + "\nmore text")
    assert "omero.SecurityViolation" in failing("/a/", trace)


def test_porter_exceptions_have_a_cap_of_their_own() -> None:
    dedup = Deduplicator(MailSettings(max_per_hour=2, dedup_window=600), clock=lambda: 0.0)
    upstream_decisions = [dedup.observe(upstream(view(n))) for n in range(5)]
    assert upstream_decisions.count(Decision.SEND) == 2
    own = Report(kind="exception", request_id="r", path="/x/", trace_key="Boom@x.py:1")
    assert dedup.observe(own) is Decision.SEND


def test_a_report_holding_undecodable_bytes_is_still_composed_and_encodable() -> None:
    from mailer.compose import report_message

    report = Report.for_exception(
        ValueError("bad \udcff byte"),
        "req-\udcfe",
        method="GET",
        path="/webclient/\udcff/",
        query="q=\udcfa",
        headers=(("User-Agent", "agent \udcff"), ("Authorization", "Bearer ey\udcff")),
    )
    message = report_message(report, MailSettings(admins=(("Ada", "ada@example.org"),)))
    raw = message.as_bytes()
    assert b"\\udcff" in raw  # the byte is shown, escaped
    assert b"ey\\udcff" not in raw  # and the credential header still is not
