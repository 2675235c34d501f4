"""Explanations: each evaluated rule, what it read, and the sub-condition that decided it."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime
from typing import Any

from engine.policy.decision import Action
from engine.policy.document import Policy, load_policy_text
from engine.policy.evaluator import Evaluator
from engine.policy.explain import Step, explain
from engine.render.text import render_explanation

POLICY = {
    "program_id": "p",
    "applies_to": ["SUBMITTED"],
    "definitions": {"texas": {"==": [{"var": "site.state_code"}, "TX"]}},
    "rules": [
        {
            "id": "reject-out-of-state",
            "when": {"and": [{"!!": [{"var": "site.state_code"}]}, {"!": {"ref": "texas"}}]},
            "status": "REJECTED",
            "reason": "Site is in {site.state_code}",
        },
        {
            "id": "needs-account",
            "when": {"!!": [{"missing": ["program.account"]}]},
            "status": "NEEDS_ACTION",
            "reason": "account please",
        },
        {
            "id": "approve",
            "when": {"or": [{">=": [{"var": ["totals.cap", 0]}, 10]}, {"==": [{"var": "site.vip"}, True]}]},
            "status": "ACTIVE",
            "reason": "ok",
        },
        {"id": "too-small", "when": True, "status": "REJECTED", "reason": "small"},
    ],
    "groups": [
        {"id": "active-zone", "when": {"==": [{"var": "decision.status"}, "ACTIVE"]}, "add": ["ZONE"]},
        {"id": "zip", "when": {"==": [{"var": "site.zip_code"}, "77002"]}, "add": ["HOUSTON"]},
    ],
}


def policy() -> Policy:
    return load_policy_text(json.dumps(POLICY), "explain.yaml")


def raw(**site: Any) -> dict[str, Any]:
    return {
        "id": "e1",
        "status": "SUBMITTED",
        "site": {"state_code": "TX", "zip_code": "77002", **site},
        "program_specific_attributes": [{"name": "account", "value": "A-1"}],
        "devices": [{"attributes": {"cap": 12}}],
    }


def test_explanation_lists_rules_until_the_match_then_every_group(now: datetime) -> None:
    explanation = explain(policy(), raw(), now)
    assert [(r.kind, r.rule_id, r.matched) for r in explanation.rules] == [
        ("rule", "reject-out-of-state", False),
        ("rule", "needs-account", False),
        ("rule", "approve", True),
        ("group", "active-zone", True),
        ("group", "zip", True),
    ]
    assert explanation.enrollment_id == "e1"
    assert explanation.decision == Evaluator(policy(), now).evaluate(raw())


def test_explanation_shows_reads_and_missing_values(now: datetime) -> None:
    enrollment = raw()
    enrollment["program_specific_attributes"] = [{"name": "account", "value": ""}]
    explanation = explain(policy(), enrollment, now)
    needs = explanation.rules[1]
    assert needs.rule_id == "needs-account"
    assert needs.matched
    assert needs.reads == {"program.account": ""}
    assert needs.missing == ["program.account"]
    assert explanation.decision.status == "NEEDS_ACTION"
    assert [r.kind for r in explanation.rules[2:]] == ["group", "group"]


def test_deciding_steps_follow_and_or_not(now: datetime) -> None:
    explanation = explain(policy(), raw(), now)
    first, _, approve = explanation.rules[:3]
    texas = {"==": [{"var": "site.state_code"}, "TX"]}
    assert first.decided_by == [
        Step({"and": [{"!!": [{"var": "site.state_code"}]}, {"!": texas}]}, False),
        Step({"!": texas}, False),
        Step(texas, True),
    ]
    assert approve.decided_by[0].value is True
    assert approve.decided_by[1] == Step({">=": [{"var": ["totals.cap", 0]}, 10]}, True)
    assert approve.reads == {"totals.cap": 12, "site.vip": None}
    assert approve.missing == ["site.vip"]


def test_groups_show_the_decision_they_saw(now: datetime) -> None:
    explanation = explain(policy(), raw(), now)
    zone = explanation.rules[3]
    assert zone.reads["decision.status"] == "ACTIVE"
    assert zone.reads["decision.rule_id"] == "approve"
    assert "decision.status" not in explanation.rules[4].reads


def test_or_is_decided_by_its_first_true_operand_and_an_error_stops(now: datetime) -> None:
    enrollment = raw()
    enrollment["devices"] = [{"attributes": {"cap": 1}}]
    enrollment["site"]["vip"] = True
    explanation = explain(policy(), enrollment, now)
    status_rules = [r for r in explanation.rules if r.kind == "rule"]
    assert status_rules[-1].rule_id == "approve"
    assert status_rules[-1].matched
    assert status_rules[-1].decided_by[1] == Step({"==": [{"var": "site.vip"}, True]}, True)

    compare = {"id": "cmp", "when": {">": [{"var": "site.x"}, 1]}, "status": "ACTIVE", "reason": "r"}
    broken = load_policy_text(json.dumps({**POLICY, "rules": [compare, *POLICY["rules"]]}), "broken.yaml")
    bad = raw(x="abc")
    explanation = explain(broken, bad, now)
    assert explanation.decision.action is Action.ERROR
    assert [r.rule_id for r in explanation.rules] == ["cmp"]
    assert explanation.rules[0].error is not None
    assert not explanation.rules[0].matched


def test_skipped_and_non_object_enrollments_have_no_rules(now: datetime) -> None:
    skipped = explain(policy(), {**raw(), "status": "ACTIVE"}, now)
    assert skipped.decision.action is Action.SKIP
    assert skipped.rules == []
    not_an_object = explain(policy(), ["x"], now)
    assert not_an_object.decision.action is Action.ERROR
    assert not_an_object.rules == []


def test_explanation_carries_data_warnings(now: datetime) -> None:
    enrollment = raw()
    enrollment["program_specific_attributes"].append({"name": "n", "type": "integer", "value": "x"})
    assert explain(policy(), enrollment, now).warnings == [
        "program.n: 'x' is not a valid integer; treated as null"
    ]


def test_rendered_explanation_names_each_rule_and_the_decision(now: datetime) -> None:
    text = render_explanation(explain(policy(), raw(), now))
    lines = text.splitlines()
    assert lines[0] == "Enrollment e1 (status SUBMITTED)"
    for expected in (
        "  rule reject-out-of-state: no match",
        "  rule needs-account: no match",
        "  rule approve: MATCH",
        "  group active-zone: MATCH",
        "  group zip: MATCH",
        '      read site.state_code = "TX"',
        "      read site.vip = null  (missing)",
    ):
        assert expected in lines
    assert "too-small" not in text
    assert lines[-1] == "  => ACTIVE by approve; reason 'ok'; groups ['ZONE', 'HOUSTON']; action update"


def test_rendered_explanation_of_a_skip(now: datetime) -> None:
    text = render_explanation(explain(policy(), {**raw(), "status": "ACTIVE"}, now))
    assert text.splitlines() == [
        "Enrollment e1 (status ACTIVE)",
        "  skipped: its status is not in the policy's applies_to",
    ]


def test_explaining_the_example_policies(
    tx_policy: Policy, ca_policy: Policy, now: datetime, tx_enrollment: Callable[..., Any]
) -> None:
    explanation = explain(tx_policy, tx_enrollment(), now)
    assert [r.rule_id for r in explanation.rules if r.kind == "rule"] == [
        "reject-out-of-territory",
        "needs-account-number",
        "reject-no-battery",
        "review-old-battery",
        "approve",
    ]
    assert [r.rule_id for r in explanation.rules if r.kind == "group"] == [g.id for g in tx_policy.groups]
    ca = explain(ca_policy, {"id": "c", "status": "SUBMITTED", "site": {"state_code": "NV"}}, now)
    assert [r.rule_id for r in ca.rules if r.kind == "rule"] == ["reject-out-of-state"]
