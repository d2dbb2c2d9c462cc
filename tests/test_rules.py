"""Public URL rules: whole-path matching, lookaheads, methods, deny rules, time budget."""

from __future__ import annotations

import logging

import pytest

from filters.explain import explain
from filters.lint import lint_url_filter
from filters.regex_guard import check_pattern, check_patterns
from filters.rules import PublicRules, decide
from filters.settings import MethodRule, PublicRuleSettings


def rules(**kwargs: object) -> PublicRules:
    return PublicRules.from_settings(PublicRuleSettings(enabled=True, **kwargs))  # type: ignore[arg-type]


def kind(method: str, path: str, public_rules: PublicRules) -> str:
    return decide(method, path, public_rules).kind


def test_lookahead_filter_makes_everything_else_public() -> None:
    r = rules(url_filter=r"^/(?!webclient/).*")
    assert kind("GET", "/webgateway/render_image/1/", r) == "public"
    assert kind("GET", "/webclient/", r) == "login"
    assert kind("GET", "/webclient/img_detail/1/", r) == "login"


def test_deny_rules_win_over_a_filter_that_matches_everything() -> None:
    r = rules(url_filter=r"^/(?!webadmin).*|^/webadmin/.*")
    for path in (
        "/webadmin/",
        "/webadmin/forgottenpassword/",
        "/webclient/login/",
        "/webclient/logout/",
        "/api/v0/login/",
        "/porter/login",
        "/WEBADMIN/",
    ):
        decision = decide("GET", path, r)
        assert decision.kind == "deny", path
        assert decision.rule.startswith("built-in deny")


def test_configured_deny_rules_ignore_case_and_win() -> None:
    r = rules(url_filter=r"^/webgateway/.*", deny=(r"^/webgateway/archived_files/.*",))
    assert kind("GET", "/webgateway/archived_files/1/", r) == "deny"
    assert kind("GET", "/webgateway/Archived_Files/1/", r) == "deny"
    assert decide("GET", "/webgateway/archived_files/1/", r).rule.startswith("public.deny[0]")


def test_omero_web_prefix_filter_matches_only_the_exact_path_here() -> None:
    r = rules(url_filter=r"^/webgateway/")
    assert kind("GET", "/webgateway/", r) == "public"
    assert kind("GET", "/webgateway/render_image/1/", r) == "login"


def test_omero_web_default_filter_adapted_keeps_its_exclusions() -> None:
    r = rules(url_filter=r"^/webgateway/(?!(archived_files|download_as)).*")
    assert kind("GET", "/webgateway/render_thumbnail/1/", r) == "public"
    assert kind("GET", "/webgateway/archived_files/download/1/", r) == "login"
    assert kind("GET", "/webgateway/download_as/", r) == "login"


def test_public_filter_is_never_matched_against_the_query() -> None:
    r = rules(url_filter=r"^/webclient/\?show=.*|^/webgateway/.*")
    assert kind("GET", "/webclient/?show=image-1", r) == "login"
    assert kind("GET", "/webclient/?x=/webgateway/", r) == "login"


def test_get_only_limits_the_filter_to_get_and_head() -> None:
    r = rules(url_filter=r"^/webgateway/.*")
    assert kind("GET", "/webgateway/x/", r) == "public"
    assert kind("HEAD", "/webgateway/x/", r) == "public"
    decision = decide("POST", "/webgateway/x/", r)
    assert decision.kind == "login"
    assert "POST is not" in decision.reason


def test_without_get_only_the_filter_allows_every_method() -> None:
    r = rules(url_filter=r"^/webgateway/.*", get_only=False)
    assert kind("POST", "/webgateway/x/", r) == "public"
    assert kind("DELETE", "/webgateway/x/", r) == "public"


def test_method_rule_allows_only_its_methods_and_get_implies_head() -> None:
    r = rules(
        get_only=False,
        rules=(
            MethodRule(methods=("POST",), path=r"^/webgateway/table/[0-9]+/slice/"),
            MethodRule(methods=("GET",), path=r"^/webgateway/render_image/.*"),
        ),
    )
    assert kind("POST", "/webgateway/table/3/slice/", r) == "public"
    assert kind("GET", "/webgateway/table/3/slice/", r) == "login"
    assert kind("HEAD", "/webgateway/render_image/1/", r) == "public"
    assert kind("POST", "/webgateway/render_image/1/", r) == "login"


def test_get_only_also_limits_method_rules() -> None:
    r = rules(rules=(MethodRule(methods=("GET", "POST"), path=r"^/webgateway/.*"),))
    assert kind("GET", "/webgateway/x/", r) == "public"
    assert kind("POST", "/webgateway/x/", r) == "login"


def test_public_disabled_means_login_for_every_path_and_deny_still_reported() -> None:
    r = PublicRules.from_settings(PublicRuleSettings(url_filter=r"^/.*"))
    decision = decide("GET", "/webgateway/x/", r)
    assert (decision.kind, decision.rule) == ("login", "public.enabled = false")
    assert kind("GET", "/webadmin/", r) == "deny"


def test_default_settings_make_nothing_public() -> None:
    r = PublicRules.from_settings(PublicRuleSettings(enabled=True))
    assert kind("GET", "/webgateway/render_image/1/", r) == "login"


def test_bad_path_is_bad_request_with_nothing_to_forward() -> None:
    decision = decide("GET", "/webgateway/%2e%2e/webadmin/", rules(url_filter=r"^/.*"))
    assert decision.kind == "bad_request"
    assert decision.canonical is None
    assert decision.forward is None


def test_catastrophic_pattern_times_out_as_deny_and_logs_no_path(
    caplog: pytest.LogCaptureFixture,
) -> None:
    r = rules(url_filter=r"^/(a|a)+$")
    path = "/" + "a" * 40 + "SECRET!"
    with caplog.at_level(logging.WARNING, logger="porter.filters"):
        decision = decide("GET", path, r)
    assert decision.kind == "deny"
    assert "time" in decision.reason
    assert "timed out" in caplog.text
    assert "SECRET" not in caplog.text
    assert "SECRET" not in decision.rule + decision.reason


def test_nested_quantifier_that_stalls_python_re_finishes_on_the_guarded_engine() -> None:
    r = rules(url_filter=r"^/(a+)+$")
    assert kind("GET", "/" + "a" * 40 + "!", r) == "login"
    assert kind("GET", "/" + "a" * 40, r) == "public"


def test_timeout_in_a_deny_rule_also_fails_closed() -> None:
    r = rules(url_filter=r"^/.*", deny=(r"^/(x|x)+y",))
    decision = decide("GET", "/" + "x" * 40, r)
    assert decision.kind == "deny"
    assert "out of time" in decision.reason


def test_check_pattern_reports_the_regex_error() -> None:
    with pytest.raises(ValueError, match="missing \\)"):
        check_pattern("^/webgateway/(")
    with pytest.raises(ValueError, match="item 1"):
        check_patterns(("^/a.*", "[", "^/b.*"))
    check_pattern(r"^/(?!webadmin).*")


@pytest.mark.parametrize(
    ("pattern", "warnings"),
    [
        ("", 0),
        (r"^/webgateway/.*", 0),
        (r"^/webgateway/(?!(archived_files|download_as)).*", 0),
        (r"^/webclient/$", 0),
        (r"^/webadmin(/.*)?", 0),
        (r"^/(render_image|render_thumbnail)/.+", 0),
        (r"^/webgateway/", 1),
        (r"^/webgateway/(?!(archived_files|download_as))", 1),
        (r"webgateway/.*", 1),
        (r"webgateway", 2),
        (r"^/webgateway/\.*", 1),
        (r"^/webclient/\?show=.*", 1),
    ],
)
def test_lint_warns_about_patterns_written_for_prefix_search(pattern: str, warnings: int) -> None:
    assert len(lint_url_filter(pattern)) == warnings


def test_settings_problems_flag_write_methods_under_get_only() -> None:
    settings = PublicRuleSettings(rules=(MethodRule(methods=("GET", "POST"), path="^/a/.*"),))
    assert [name for name, _ in settings.problems()] == ["rules[0].methods"]
    assert PublicRuleSettings(get_only=False, rules=settings.rules).problems() == []


def test_settings_warnings_include_lint_of_filter_and_rules() -> None:
    settings = PublicRuleSettings(
        enabled=True, url_filter="^/webgateway/", rules=(MethodRule(path="^/api/"),)
    )
    assert [name for name, _ in settings.warnings()] == ["url_filter", "rules[0].path"]
    assert [n for n, _ in PublicRuleSettings(enabled=True).warnings()] == ["enabled"]


def test_explain_reports_canonical_path_rule_and_decision() -> None:
    r = rules(url_filter=r"^/webgateway/.*")
    report = explain("GET", "/webgateway/render_%69mage/1/?c=1", r)
    assert "canonical: /webgateway/render_image/1/" in report
    assert "forwarded: /webgateway/render_image/1/" in report
    assert "rule:      public.url_filter ^/webgateway/.*" in report
    assert "decision:  public" in report
    assert "query:     ignored by the rules" in report


def test_explain_names_bad_requests_and_escapes_control_characters() -> None:
    report = explain("GET", "/a\x1b[31m/%00", rules())
    assert "decision:  bad request" in report
    assert "\x1b" not in report
