"""``run.py explain METHOD PATH``: why porter would serve a path publicly or not."""

from __future__ import annotations

from filters.canonical import split_target
from filters.rules import CREDENTIALS_RULE, Decision, PublicRules, decide, with_query

_MEANING = {
    "public": "public: anonymous callers are served as the shared public user",
    "login": "login required: anonymous callers are sent to log in (AJAX: 403)",
    "deny": "deny: never public; anonymous callers are sent to log in (AJAX: 403)",
    "bad_request": "bad request: 400 for everyone, nothing is forwarded",
}


def explain(method: str, raw_path: str, rules: PublicRules) -> str:
    """A short report: canonical path, path forwarded, rule that decided, decision."""
    path, query = split_target(raw_path)
    decision = with_query(decide(method, raw_path, rules), query or "")
    lines = [
        f"request:   {method} {_printable(path)}",
        f"query:     {_query(query, decision)}",
        f"canonical: {_printable(decision.canonical) if decision.canonical else '(none)'}",
        f"forwarded: {decision.forward or '(nothing)'}",
        f"rule:      {decision.rule}",
        f"decision:  {_MEANING[decision.kind]}",
        f"reason:    {decision.reason}",
    ]
    return "\n".join(lines)


def _query(query: str | None, decision: Decision) -> str:
    if query is None:
        return "(none)"
    if decision.rule == CREDENTIALS_RULE:
        return "refused: it carries OMERO credentials"
    return "ignored by the rules, forwarded as sent"


def _printable(text: str) -> str:
    # Control characters would garble the admin's terminal; show them escaped.
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
