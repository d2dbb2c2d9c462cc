"""The bypass corpus against `decide`: every hostile target gets its expected decision."""

from __future__ import annotations

import pytest

from filters.canonical import canonical_path
from filters.rules import PublicRules, decide
from tests.bypass_corpus import CASES, CORPUS_RULES, Case

RULES = PublicRules.from_settings(CORPUS_RULES)


def test_corpus_has_at_least_sixty_distinct_targets() -> None:
    assert len({(c.method, c.target) for c in CASES}) >= 60


def test_corpus_targets_are_printable_ascii_so_they_can_be_sent_on_the_wire() -> None:
    assert all(c.target.isascii() and c.target.isprintable() and " " not in c.target for c in CASES)


@pytest.mark.parametrize("case", CASES, ids=[c.note + " " + c.target[:60] for c in CASES])
def test_corpus_case_gets_expected_decision_and_forwarded_path(case: Case) -> None:
    decision = decide(case.method, case.target, RULES)
    assert (decision.kind, decision.forward) == (case.kind, case.forwarded)


@pytest.mark.parametrize(
    "case", [c for c in CASES if c.forwarded is not None], ids=lambda c: c.target[:60]
)
def test_forwarded_path_decodes_to_the_path_that_was_matched(case: Case) -> None:
    decision = decide(case.method, case.target, RULES)
    assert decision.forward is not None
    assert canonical_path(decision.forward) == decision.canonical


def test_no_denied_or_bad_target_is_public_whatever_the_method() -> None:
    hostile = [c.target for c in CASES if c.kind in ("deny", "bad_request")]
    public = [
        (m, t)
        for t in hostile
        for m in ("GET", "HEAD", "POST")
        if decide(m, t, RULES).kind == "public"
    ]
    assert public == []
