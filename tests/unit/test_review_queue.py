"""Sorting a live run's decisions against the review queue (pure: no store, no API)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

import pytest

from engine.policy.decision import Decision
from engine.policy.document import Policy, load_policy_text
from engine.policy.evaluator import Evaluator
from engine.runs.review import decision_body, sort_for_review

POLICY = """\
program_id: prog-test
applies_to: [SUBMITTED]
rules:
  - id: reject-out-of-state
    when: {"!=": [{"var": "site.state_code"}, "TX"]}
    status: REJECTED
    reason: "Outside the territory ({site.state_code})"
  - id: approve
    when: true
    status: ACTIVE
    reason: Approved
review:
  require_approval: [REJECTED]
"""


@dataclass(frozen=True)
class Stored:
    decision_id: int
    enrollment_id: str
    body: dict[str, Any]
    rule_id: str | None
    enrollment_updated_at: str | None
    facts_fingerprint: str | None
    policy_hash: str | None
    reviewed_by: str | None = None
    reviewed_at: datetime | None = None


@pytest.fixture
def policy() -> Policy:
    return load_policy_text(POLICY)


def decide(policy: Policy, enrollment_id: str, state: str = "CA", updated: str = "t1") -> Decision:
    raw = {"id": enrollment_id, "status": "SUBMITTED", "updated_at": updated, "site": {"state_code": state}}
    return Evaluator(policy, datetime(2026, 11, 25, tzinfo=UTC)).evaluate(raw)


def stored(decision_id: int, decision: Decision, policy: Policy, **changes: Any) -> Stored:
    record = Stored(
        decision_id, decision.enrollment_id or "", decision_body(decision), decision.rule_id,
        decision.updated_at, decision.facts_fingerprint, policy.content_hash,
    )  # fmt: skip
    return replace(record, **changes)


def test_new_changes_that_need_approval_are_queued_the_rest_not(policy: Policy) -> None:
    decisions = [decide(policy, "e-1"), decide(policy, "e-2", state="TX")]
    result = sort_for_review(policy, decisions, [], [])
    assert result.queued == {"e-1"}
    assert (result.kept, result.blocked, result.superseded) == ({}, {}, [])
    assert result.waiting == 1


def test_an_unchanged_waiting_change_is_kept_not_queued_twice(policy: Policy) -> None:
    first = decide(policy, "e-1")
    result = sort_for_review(policy, [decide(policy, "e-1")], [stored(7, first, policy)], [])
    assert (result.queued, result.kept, result.superseded) == (set(), {"e-1": 7}, [])
    assert result.not_sent() == {"e-1"}


@pytest.mark.parametrize(
    ("now", "why"),
    [
        ({"updated": "t2"}, "the enrollment changed"),
        ({"state": "NM"}, "the decision changed (another reason)"),
    ],
)
def test_a_waiting_change_is_superseded_and_requeued_when_either_changed(
    policy: Policy, now: dict[str, str], why: str
) -> None:
    waiting = stored(7, decide(policy, "e-1"), policy)
    result = sort_for_review(policy, [decide(policy, "e-1", **now)], [waiting], [])
    assert result.superseded == [7], why
    assert result.queued == {"e-1"}, why


def test_a_waiting_change_that_no_longer_needs_approval_is_superseded(policy: Policy) -> None:
    waiting = stored(7, decide(policy, "e-1"), policy)
    result = sort_for_review(policy, [decide(policy, "e-1", state="TX", updated="t2")], [waiting], [])
    assert (result.superseded, result.queued) == ([7], set())
    gone = sort_for_review(policy, [], [waiting], [])  # no longer listed at all
    assert gone.superseded == [7]


def test_a_refused_change_is_not_proposed_again_until_facts_or_policy_change(policy: Policy) -> None:
    refusal = stored(5, decide(policy, "e-1"), policy, reviewed_by="alice")
    same = sort_for_review(policy, [decide(policy, "e-1", updated="t2")], [], [refusal])
    assert same.blocked == {"e-1": refusal}
    assert same.queued == set()
    facts_changed = sort_for_review(policy, [decide(policy, "e-1", state="NM")], [], [refusal])
    assert facts_changed.queued == {"e-1"}
    edited = load_policy_text(POLICY + "# reworded\n")
    policy_changed = sort_for_review(edited, [decide(edited, "e-1")], [], [refusal])
    assert policy_changed.queued == {"e-1"}


def test_an_approved_change_left_unsent_is_carried_when_decided_the_same_again(policy: Policy) -> None:
    first = decide(policy, "e-1")
    approval = stored(7, first, policy, reviewed_by="bob", reviewed_at=datetime(2026, 11, 25, tzinfo=UTC))
    result = sort_for_review(policy, [decide(policy, "e-1")], [], [], [approval])
    assert result.carried == {"e-1": approval}
    assert (result.queued, result.withdrawn, result.waiting) == (set(), [], 0)
    assert result.not_sent() == set(), "the run sends it under the approval"


@pytest.mark.parametrize(
    ("again", "queued"),
    [
        ({"updated": "t2"}, {"e-1"}),  # the enrollment changed: a new question
        ({"state": "TX"}, set()),  # no longer a change that needs a person
    ],
)
def test_an_approval_whose_change_no_longer_stands_is_withdrawn(
    policy: Policy, again: dict[str, str], queued: set[str]
) -> None:
    approval = stored(7, decide(policy, "e-1"), policy, reviewed_by="bob")
    result = sort_for_review(policy, [decide(policy, "e-1", **again)], [], [], [approval])
    assert (result.carried, result.withdrawn, result.queued) == ({}, [7], queued)
