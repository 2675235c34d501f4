"""Rule and condition coverage: what a set of enrollments exercised, with file positions."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from engine.policy.coverage import CoverageReport, CoverageSet, CoverageTracker, rule_hits
from engine.policy.document import Policy, load_policy
from engine.policy.evaluator import Evaluator
from engine.policy.testfile import run_test_file
from engine.render.coverage import NO_MATCH_FLAG, coverage_json, render_coverage, render_hits
from engine.sandbox.generator import generate_enrollments

ROOT = Path(__file__).resolve().parents[2]
NOW = datetime(2026, 11, 25, tzinfo=UTC)

POLICY = """\
program_id: p
applies_to: [SUBMITTED]
definitions:
  big: {">=": [{"var": ["totals.battery_capacity_wh", 0]}, 10000]}
rules:
  - id: reject-out
    when: {"or": [{"==": [{"var": "site.state_code"}, "OK"]}, {"==": [{"var": "site.state_code"}, "LA"]}]}
    status: REJECTED
    reason: out
  - id: approve
    when:
      and:
        - {"ref": "big"}
        - {"!": [{"var": "program.paused"}]}
    status: ACTIVE
    reason: ok
  - id: maybe
    when: {"if": [{"var": "site.vip"}, true, {"!!": [{"var": "site.zip_code"}]}]}
    status: PENDING
    reason: r
default: {status: NEEDS_ACTION, reason: d}
groups:
  - id: zone
    when: {"and": [{"==": [{"var": "decision.status"}, "ACTIVE"]},
                   {"some": [{"var": "devices"}, {"or": [{"==": [{"var": "type"}, "BATTERY"]},
                                                         {"==": [{"var": "type"}, "EV"]}]}]}]}
    add: [Z]
"""


def battery(wh: int, kind: str = "BATTERY") -> dict[str, Any]:
    return {"type": kind, "attributes": {"battery_capacity_wh": wh}}


def enrollment(**fields: Any) -> dict[str, Any]:
    return {"id": "e", "status": "SUBMITTED", **fields}


def covered(policy: Policy, enrollments: list[dict[str, Any]]) -> tuple[CoverageReport, dict[str, Any]]:
    tracker = CoverageTracker(policy)
    evaluator = Evaluator(policy, NOW)
    for raw in enrollments:
        tracker.add(raw, evaluator.evaluate(raw), NOW)
    report = tracker.report()
    return report, {c.pointer: (c.true, c.false) for c in report.conditions}


@pytest.fixture
def policy(policy_from_text: Callable[..., Policy]) -> Policy:
    return policy_from_text(POLICY)


def test_every_tracked_sub_condition_is_listed_with_its_position(policy: Policy) -> None:
    report, _ = covered(policy, [])
    where = {c.pointer: (c.line, c.column) for c in report.conditions}
    assert where == {
        "/rules/0/when/or/0": (7, 19),
        "/rules/0/when/or/1": (7, 63),
        "/rules/1/when/and/0": (13, 11),  # block style: the "- " item
        "/rules/1/when/and/1": (14, 11),
        "/rules/1/when/and/1/!/0": (14, 18),
        "/rules/2/when/if/0": (18, 19),  # the condition of the if; its values are not tracked
        "/rules/2/when/if/2/!!/0": (18, 54),
        "/groups/0/when/and/0": (24, 20),
        "/groups/0/when/and/1": (25, 20),
        "/groups/0/when/and/1/some/1/or/0": (25, 58),
        "/groups/0/when/and/1/some/1/or/1": (26, 58),
    }
    assert {c.file for c in report.conditions} == {policy.source}
    assert report.percent == 0.0
    assert [(r.id, r.kind, r.line, r.hits) for r in report.rules] == [
        ("reject-out", "rule", 6, 0), ("approve", "rule", 10, 0), ("maybe", "rule", 17, 0),
        ("default", "default", 21, 0), ("zone", "group", 23, 0),
    ]  # fmt: skip


def test_short_circuited_operands_are_not_evaluated(policy: Policy) -> None:
    _, outcomes = covered(policy, [enrollment(site={"state_code": "OK"})])
    assert outcomes["/rules/0/when/or/0"] == (True, False)
    assert outcomes["/rules/0/when/or/1"] == (False, False)  # or stopped at the first truthy
    assert outcomes["/rules/1/when/and/0"] == (False, False)  # a later rule: never reached
    assert outcomes["/groups/0/when/and/0"] == (False, True)  # groups always run
    assert outcomes["/groups/0/when/and/1"] == (False, False)


def test_and_stops_at_the_first_falsy_operand_and_if_takes_one_branch(policy: Policy) -> None:
    small = enrollment(site={"state_code": "TX", "zip_code": "77002"}, devices=[battery(5000)])
    _, outcomes = covered(policy, [small])
    assert outcomes["/rules/0/when/or/0"] == (False, True)
    assert outcomes["/rules/0/when/or/1"] == (False, True)
    assert outcomes["/rules/1/when/and/0"] == (False, True)
    assert outcomes["/rules/1/when/and/1"] == (False, False)
    assert outcomes["/rules/2/when/if/0"] == (False, True)
    assert outcomes["/rules/2/when/if/2/!!/0"] == (True, False)


def test_group_conditions_see_the_decision_and_quantifier_bodies_each_element(policy: Policy) -> None:
    approved = enrollment(site={"state_code": "TX"}, devices=[battery(6000, "EV"), battery(6000)])
    report, outcomes = covered(policy, [approved])
    assert outcomes["/rules/1/when/and/1"] == (True, False)
    assert outcomes["/groups/0/when/and/0"] == (True, False)
    assert outcomes["/groups/0/when/and/1"] == (True, False)
    # "some" stops at the first element whose body holds: the EV charger.
    assert outcomes["/groups/0/when/and/1/some/1/or/0"] == (False, True)
    assert outcomes["/groups/0/when/and/1/some/1/or/1"] == (True, False)
    hits = {rule.id: rule.hits for rule in report.rules}
    assert hits == {"reject-out": 0, "approve": 1, "maybe": 0, "default": 0, "zone": 1}


def test_percent_counts_rule_items_once_and_conditions_twice(policy: Policy) -> None:
    cases = [
        enrollment(site={"state_code": "OK"}),
        enrollment(site={"state_code": "TX", "zip_code": "77002"}, devices=[battery(5000)]),
        enrollment(site={"state_code": "TX"}, devices=[battery(6000, "EV"), battery(6000)]),
    ]
    report, outcomes = covered(policy, cases)
    rules_covered = sum(r.hits > 0 for r in report.rules)
    outcomes_covered = sum(t + f for t, f in outcomes.values())
    assert rules_covered == 4  # default never
    assert report.total == 5 + 2 * 11
    assert report.covered == rules_covered + outcomes_covered
    assert report.percent == round(100 * report.covered / report.total, 1)
    assert [r.id for r in report.unmatched] == ["default"]
    assert len(report.uncovered) == sum(1 for t, f in outcomes.values() if not (t and f))


def test_sub_conditions_in_definitions_are_reported_where_they_are_written(tx_policy: Policy) -> None:
    report, outcomes = covered(tx_policy, [])
    inside = [c for c in report.conditions if c.pointer.startswith("/definitions/old_battery/")]
    assert [(c.pointer, c.line, c.column) for c in inside] == [
        ("/definitions/old_battery/some/1/and/0", 14, 7),
        ("/definitions/old_battery/some/1/and/1", 15, 7),
    ]
    # the ref operand itself is tracked where the ref is written
    assert "/rules/4/when/and/0" in outcomes


def test_an_evaluation_error_stops_the_trace_like_the_evaluator(
    policy_from_text: Callable[..., Policy],
) -> None:
    erroring = policy_from_text(
        "program_id: p\napplies_to: [SUBMITTED]\nrules:\n"
        "  - {id: a, status: ACTIVE, reason: r,\n"
        '     when: {"or": [{"<": [{"var": "site.n"}, 5]}, {"var": "site.x"}]}}\n'
        '  - {id: b, status: REJECTED, reason: r, when: {"!": [{"var": "site.x"}]}}\n',
        name="erroring.yaml",
    )
    raw = enrollment(site={"n": "abc", "x": True})
    decision = Evaluator(erroring, NOW).evaluate(raw)
    assert decision.action.value == "error"
    tracker = CoverageTracker(erroring)
    assert tracker.add(raw, decision, NOW) is None
    outcomes = {c.pointer: (c.true, c.false) for c in tracker.report().conditions}
    assert outcomes == {"/rules/0/when/or/0": (False, False), "/rules/0/when/or/1": (False, False),
                        "/rules/1/when/!/0": (False, False)}  # fmt: skip
    fine = enrollment(site={"n": 9, "x": False})
    tracker.add(fine, Evaluator(erroring, NOW).evaluate(fine), NOW)
    outcomes = {c.pointer: (c.true, c.false) for c in tracker.report().conditions}
    assert outcomes["/rules/1/when/!/0"] == (False, True)


def test_the_trace_finds_the_same_first_rule_as_the_evaluator(
    sample_policy_path: Path, generated_program: str
) -> None:
    policy = load_policy(sample_policy_path)
    tracker = CoverageTracker(policy)
    evaluator = Evaluator(policy, NOW)
    compared = 0
    for raw in generate_enrollments(generated_program, 300, seed=4, now=NOW):
        decision = evaluator.evaluate(raw)
        traced = tracker.add(raw, decision, NOW)
        if decision.action.value in ("skip", "error"):
            continue
        expected = None if decision.rule_id == "default" else decision.rule_id
        assert traced == expected, raw.get("id")
        compared += 1
    assert compared > 80
    assert tracker.report().covered > 0


def test_hits_count_rules_the_default_and_groups(tx_policy: Policy, tx_enrollment: Any) -> None:
    evaluator = Evaluator(tx_policy, NOW)
    decisions = [
        evaluator.evaluate(tx_enrollment()),
        evaluator.evaluate(tx_enrollment(id="e2")),
        evaluator.evaluate(tx_enrollment(id="e3", site={"state_code": "OK"})),
        evaluator.evaluate(tx_enrollment(id="e4", status="ACTIVE")),
    ]
    hits = {(r.kind, r.id): r.hits for r in rule_hits(tx_policy, decisions)}
    assert hits[("rule", "approve")] == 2
    assert hits[("rule", "reject-out-of-territory")] == 1
    assert hits[("group", "houston-load-zone")] == 2
    assert hits[("group", "leave-groups-when-rejected")] == 1
    assert hits[("default", "default")] == 0
    assert sum(hits.values()) == 6


def test_example_test_files_share_one_tracker_per_policy() -> None:
    coverage = CoverageSet()
    for path in sorted((ROOT / "rules").glob("*.test.yaml")):
        result = run_test_file(path, coverage)
        assert result.failed == 0
    report = coverage.report()
    assert {Path(r.file).name for r in report.rules} == {"ca_ev_charging.yaml", "tx_residential_battery.yaml"}
    assert len([r for r in report.rules if r.id == "default"]) == 2
    assert 0 < report.percent <= 100


def test_text_lists_unmatched_rules_and_uncovered_conditions_then_the_percent_last(policy: Policy) -> None:
    report, _ = covered(policy, [enrollment(site={"state_code": "OK"})])
    text = render_coverage(report)
    lines = text.splitlines()
    assert f"{policy.source}:10: rule approve never matched by a case" in lines
    assert f"{policy.source}:23: rule zone never matched by a case (group)" in lines
    assert f"{policy.source}:7:19: condition /rules/0/when/or/0 never false" in lines
    assert f"{policy.source}:7:63: condition /rules/0/when/or/1 never evaluated by a case" in lines
    assert f"{policy.source}:24:20: condition /groups/0/when/and/0 never true" in lines
    assert lines[-1] == f"coverage: {report.percent:.1f}% ({report.covered} of 27: 1 of 5 rules matched, " + (
        f"{report.covered - 1} of 22 condition outcomes)"
    )


def test_json_has_the_documented_shape(policy: Policy) -> None:
    report, _ = covered(policy, [enrollment(site={"state_code": "OK"})])
    data = coverage_json(report)
    assert set(data) == {"percent", "rules", "conditions"}
    assert data["rules"][0] == {
        "id": "reject-out",
        "kind": "rule",
        "file": policy.source,
        "line": 6,
        "hits": 1,
    }
    assert data["conditions"][0] == {
        "file": policy.source, "line": 7, "column": 19, "pointer": "/rules/0/when/or/0",
        "true": True, "false": False,
    }  # fmt: skip


def test_hit_counts_flag_status_rules_that_matched_nothing(tx_policy: Policy, tx_enrollment: Any) -> None:
    decisions = [Evaluator(tx_policy, NOW).evaluate(tx_enrollment())]
    text = render_hits(rule_hits(tx_policy, decisions))
    flagged = [line.split()[1] for line in text.splitlines() if line.endswith(NO_MATCH_FLAG)]
    assert "approve" not in flagged
    assert flagged == [r.id for r in tx_policy.rules if r.id != "approve"]  # groups and default never flagged


def test_without_a_trace_group_hits_are_left_out_not_counted_as_zero(
    tx_policy: Policy, tx_enrollment: Any
) -> None:
    decisions = [Evaluator(tx_policy, NOW, trace=False).evaluate(tx_enrollment())]
    hits = rule_hits(tx_policy, decisions)
    assert {h.kind for h in hits} == {"rule", "default"}
    assert {h.id: h.hits for h in hits}["approve"] == 1
