"""The review queue: which of a live run's changes wait for a person, and which already do.

A policy names the changes a person must confirm (``review.require_approval`` and rules
with ``approval: required``). A live run sends everything else and records these as
``awaiting_approval``. This module decides, for one run, without any I/O:

* a change already waiting for the same enrollment, decided the same way (same PATCH body
  and rule) on an enrollment that has not changed since (same ``updated_at``), is *kept*:
  it is not queued a second time, and keeps its id and the time it has waited since;
* a waiting change that no longer stands (the enrollment or the decision changed, or the
  policy no longer asks for approval) is *superseded*;
* a change a person refused is not proposed again while the enrollment's facts (the
  fingerprint of what the policy reads) and the policy text are the same: it is *blocked*;
* a change a person approved whose sending was cut short (a killed ``review approve``) is
  *carried*: when the run decides the same change again, the run sends it under that
  approval instead of asking again; an approval whose change no longer stands is
  *withdrawn*;
* every other change that needs approval is *queued*.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from engine.policy.decision import Decision
from engine.policy.document import Policy
from engine.runs.patch import comparable_body, patch_body

__all__ = ["QueueSort", "ReviewedChangeLike", "decision_body", "sort_for_review"]


class ReviewedChangeLike(Protocol):
    """A stored change waiting for approval, or one a person refused."""

    @property
    def decision_id(self) -> int: ...
    @property
    def enrollment_id(self) -> str: ...
    @property
    def body(self) -> Mapping[str, Any]: ...
    @property
    def rule_id(self) -> str | None: ...
    @property
    def enrollment_updated_at(self) -> str | None: ...
    @property
    def facts_fingerprint(self) -> str | None: ...
    @property
    def policy_hash(self) -> str | None: ...
    @property
    def reviewed_by(self) -> str | None: ...
    @property
    def reviewed_at(self) -> datetime | None: ...


@dataclass
class QueueSort:
    """What one live run does with the changes its policy wants a person to confirm."""

    queued: set[str] = field(default_factory=set)  # enrollment ids: recorded awaiting_approval
    kept: dict[str, int] = field(default_factory=dict)  # enrollment id -> the change already waiting
    blocked: dict[str, ReviewedChangeLike] = field(default_factory=dict)  # -> the refusal that blocks it
    superseded: list[int] = field(default_factory=list)  # waiting changes that no longer stand
    carried: dict[str, ReviewedChangeLike] = field(default_factory=dict)  # -> the approval it is sent under
    withdrawn: list[int] = field(default_factory=list)  # approved, unsent changes that no longer stand

    @property
    def waiting(self) -> int:
        """How many changes wait for approval once the run has recorded this."""
        return len(self.queued) + len(self.kept)

    def not_sent(self) -> set[str]:
        """The enrollments whose change this run must not send."""
        return {*self.queued, *self.kept, *self.blocked}


def decision_body(decision: Decision) -> dict[str, Any]:
    """The PATCH body a decision asks for, group ids sorted (empty when it asks for none or
    for one the API would refuse: that change is recorded as failed, never queued)."""
    body, _problem = patch_body(decision)
    return comparable_body(body)


def sort_for_review(
    policy: Policy,
    decisions: Iterable[Decision],
    waiting: Sequence[ReviewedChangeLike],
    refused: Sequence[ReviewedChangeLike],
    approved: Sequence[ReviewedChangeLike] = (),
) -> QueueSort:
    """Sort a live run's decisions against the queue as it stands (see the module docstring).

    ``approved``: changes a person approved that were never settled, oldest first.
    """
    waiting_by_enrollment = {change.enrollment_id: change for change in waiting}
    refused_by_enrollment = {change.enrollment_id: change for change in refused}
    approved_by_enrollment = {change.enrollment_id: change for change in approved}
    result = QueueSort()
    for decision in decisions:
        enrollment_id = decision.enrollment_id
        if enrollment_id is None or not policy.requires_approval(decision):
            continue
        body = decision_body(decision)
        approval = approved_by_enrollment.get(enrollment_id)
        if approval is not None and _same_change(approval, decision, body):
            result.carried[enrollment_id] = approval
            continue
        refusal = refused_by_enrollment.get(enrollment_id)
        if refusal is not None and _still_refused(refusal, decision, policy, body):
            result.blocked[enrollment_id] = refusal
            continue
        queued = waiting_by_enrollment.get(enrollment_id)
        if queued is not None and _same_change(queued, decision, body):
            result.kept[enrollment_id] = queued.decision_id
        else:
            result.queued.add(enrollment_id)
    result.superseded = sorted(
        change.decision_id for change in waiting if change.enrollment_id not in result.kept
    )
    carried = {change.decision_id for change in result.carried.values()}
    result.withdrawn = sorted(change.decision_id for change in approved if change.decision_id not in carried)
    return result


def _same_change(queued: ReviewedChangeLike, decision: Decision, body: Mapping[str, Any]) -> bool:
    return (
        queued.enrollment_updated_at == decision.updated_at
        and queued.rule_id == decision.rule_id
        and comparable_body(queued.body) == body
    )


def _still_refused(
    refusal: ReviewedChangeLike, decision: Decision, policy: Policy, body: Mapping[str, Any]
) -> bool:
    """A refusal stands while the facts and the policy are the ones it was refused under,
    and for the change that was refused (a different change is a new question)."""
    return (
        refusal.facts_fingerprint == decision.facts_fingerprint
        and refusal.policy_hash == policy.content_hash
        and comparable_body(refusal.body) == body
    )
