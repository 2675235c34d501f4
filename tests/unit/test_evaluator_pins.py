"""Details of the evaluator that mutation testing found no test pinning (TESTING.md)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from engine.policy.decision import Action, Decision, RuleTrace
from engine.policy.document import load_policy_text
from engine.policy.evaluator import Evaluator
from engine.policy.facts import FactsPlan, fingerprint

NOW = datetime(2026, 11, 25, tzinfo=UTC)
POLICY = """program_id: p
applies_to: [SUBMITTED]
rules:
  - id: has-battery
    when: {"some": [{"var": "devices"}, {"==": [{"var": "type"}, "BATTERY"]}]}
    status: ACTIVE
    reason: ok
groups:
  - id: big
    when: {">": [{"var": "site.size"}, 10]}
    add: [BIG]
"""


def test_an_error_decision_is_exactly_an_error_with_nothing_decided() -> None:
    evaluator = Evaluator(load_policy_text(POLICY), NOW)
    raw = {
        "id": "e1",
        "status": "SUBMITTED",
        "updated_at": "t1",
        "site": {"size": "huge", "groups": [{"id": "A"}]},
    }

    decision = evaluator.evaluate(raw)

    assert decision == Decision(
        "e1", "SUBMITTED", None, None, None, ["A"], ["A"], [], [], Action.ERROR,
        error=decision.error, updated_at="t1",
    )  # fmt: skip
    assert decision.to_dict()["groups_added"] == []
    assert decision.error is not None
    assert decision.error.startswith("rule 'big': ")
    assert "None" not in decision.error  # the logic error is described, not dropped


def test_the_trace_shows_what_a_rule_read_but_not_the_device_list() -> None:
    evaluator = Evaluator(load_policy_text(POLICY), NOW)
    raw = {"id": "e1", "status": "SUBMITTED", "devices": [{"type": "BATTERY"}], "site": {"size": 3}}

    decision = evaluator.evaluate(raw)

    assert decision.trace == [
        RuleTrace("has-battery", "rule", True, {}),  # "devices" is read, but not copied into the trace
        RuleTrace("big", "group", False, {"site.size": 3}),
    ]


def test_the_default_now_is_this_second_in_utc() -> None:
    evaluator = Evaluator(load_policy_text(POLICY))
    assert evaluator.now.tzinfo is UTC
    assert evaluator.now.microsecond == 0
    assert abs(datetime.now(UTC) - evaluator.now) < timedelta(minutes=5)


def test_a_skipped_enrollment_is_exactly_a_skip() -> None:
    evaluator = Evaluator(load_policy_text(POLICY), NOW)
    raw = {"id": "e2", "status": "ACTIVE", "updated_at": "t2", "site": {"groups": [{"id": "A"}]}}

    assert evaluator.evaluate(raw) == Decision(
        "e2", "ACTIVE", None, None, None, ["A"], ["A"], [], [], Action.SKIP, updated_at="t2"
    )


def test_something_that_is_not_an_object_is_an_error_with_empty_lists() -> None:
    decision = Evaluator(load_policy_text(POLICY), NOW).evaluate(["not", "an", "object"])

    assert decision == Decision(
        None,
        None,
        None,
        None,
        None,
        [],
        [],
        [],
        [],
        Action.ERROR,
        error="enrollment is a list, not an object",
    )


def test_ids_and_statuses_are_text_whatever_the_api_sent() -> None:
    evaluator = Evaluator(load_policy_text(POLICY), NOW)

    numeric = evaluator.evaluate({"id": 123, "status": 7, "updated_at": 5})
    missing = evaluator.evaluate({"status": None})
    text = evaluator.evaluate({"id": "e3", "status": "PAUSED"})

    assert (numeric.enrollment_id, numeric.current_status, numeric.updated_at) == ("123", "7", "5")
    assert (missing.enrollment_id, missing.current_status, missing.updated_at) == (None, None, None)
    assert (text.enrollment_id, text.current_status) == ("e3", "PAUSED")


class _Unprintable:
    """A value no JSON payload holds: turning it into text fails."""

    def __str__(self) -> str:
        raise RuntimeError("no text")


def test_unexpected_data_is_an_error_decision_not_an_exception() -> None:
    policy = load_policy_text(POLICY.replace("site.size", "program.size"))
    raw = {
        "id": "e1",
        "status": "SUBMITTED",
        "updated_at": "t1",
        "site": {"groups": [{"id": "A"}]},
        "program_specific_attributes": [{"name": "size", "type": _Unprintable(), "value": "3"}],
    }

    decision = Evaluator(policy, NOW).evaluate(raw)

    assert decision == Decision(
        "e1", "SUBMITTED", None, None, None, ["A"], ["A"], [], [], Action.ERROR,
        error="unexpected data: RuntimeError: no text", updated_at="t1",
    )  # fmt: skip


def test_trace_reads_off_keeps_the_hits_without_the_values() -> None:
    evaluator = Evaluator(load_policy_text(POLICY), NOW, trace_reads=False)
    raw = {"id": "e1", "status": "SUBMITTED", "devices": [{"type": "BATTERY"}], "site": {"size": 30}}

    assert evaluator.evaluate(raw).trace == [
        RuleTrace("has-battery", "rule", True, {}),
        RuleTrace("big", "group", True, {}),
    ]


def test_full_facts_fingerprint_every_input() -> None:
    planned = Evaluator(load_policy_text(POLICY), NOW)
    full = Evaluator(load_policy_text(POLICY), NOW, full_facts=True)
    raw = {"id": "e1", "status": "SUBMITTED", "site": {"size": 3, "city": "Austin"}}
    moved = {**raw, "site": {"size": 3, "city": "Houston"}}  # a field the policy does not read

    assert planned.evaluate(raw).facts_fingerprint == planned.evaluate(moved).facts_fingerprint
    assert full.evaluate(raw).facts_fingerprint == fingerprint(raw, FactsPlan())
    assert full.evaluate(raw).facts_fingerprint != full.evaluate(moved).facts_fingerprint
