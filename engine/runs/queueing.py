"""Recording which of a live run's changes wait for a person (the rules are in ``review``).

Before a live run sends anything, the changes its policy wants a person to confirm are
recorded ``awaiting_approval`` (or kept, when the same change already waits), a change a
person refused stays ``held`` while nothing changed, and a waiting change that no longer
stands is superseded. A change a person approved that an interrupted ``review approve``
never sent is sent by the run when it decides the same change again: the new change takes
the approval and the old one is superseded (withdrawn when the change no longer stands).
The run sends only the changes that need no person, or have one's approval.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from engine.policy.document import Policy
from engine.runs.ports import DecisionStore, Outcome, PlannedChangeLike
from engine.runs.report import RunReport
from engine.runs.review import QueueSort, sort_for_review
from engine.runs.states import OPEN_STATES, ChangeState

__all__ = ["ReviewQueueing", "queue_for_review"]


@dataclass(frozen=True)
class ReviewQueueing:
    """What the review queue left a live run to send."""

    to_send: list[PlannedChangeLike]
    for_review: frozenset[str]  # enrollments whose change waits for (or was refused by) a person


def queue_for_review(
    policy: Policy,
    store: DecisionStore,
    report: RunReport,
    planned: Sequence[PlannedChangeLike],
    token: int | None,
) -> ReviewQueueing:
    """Record the changes a person must approve as waiting; the ones to send."""
    program = report.program_id
    waiting, refused = store.review_queue(program), store.refused_changes(program)
    approved = [r for r in store.review_queue(program, states=OPEN_STATES) if r.reviewed_by is not None]
    queue = sort_for_review(policy, report.changes, waiting, refused, approved)
    _carry_approvals(store, report.run_id, queue, planned, token)
    outcomes = [outcome for change in planned if (outcome := _queued_outcome(queue, change)) is not None]
    if blocked := sum(1 for outcome in outcomes if outcome.state is ChangeState.HELD):
        report.change_states[ChangeState.HELD] += blocked
    if outcomes:
        store.record_outcomes(outcomes, fencing_token=token)
    if queue.superseded:
        reason = f"the enrollment or the decision changed since it was queued (run {report.run_id})"
        store.supersede(queue.superseded, reason, fencing_token=token)
    report.awaiting_approval = queue.waiting
    if queue.waiting:
        report.change_states[ChangeState.AWAITING_APPROVAL] += queue.waiting
    for_review = frozenset(queue.not_sent())
    return ReviewQueueing([c for c in planned if c.enrollment_id not in for_review], for_review)


def _carry_approvals(
    store: DecisionStore,
    run_id: int,
    queue: QueueSort,
    planned: Sequence[PlannedChangeLike],
    token: int | None,
) -> None:
    """Approvals an interrupted ``review approve`` left unsent: to the same change planned
    again, or withdrawn."""
    pairs = [
        (queue.carried[change.enrollment_id].decision_id, change.decision_id)
        for change in planned
        if change.enrollment_id in queue.carried
    ]
    if pairs:
        store.carry_approvals(pairs, fencing_token=token)
        reason = f"re-planned by run {run_id}, which sends it under this approval"
        store.supersede([old for old, _new in pairs], reason, fencing_token=token)
    if queue.withdrawn:
        reason = f"the enrollment or the decision changed since it was approved (run {run_id})"
        store.supersede(queue.withdrawn, reason, fencing_token=token)


def _queued_outcome(queue: QueueSort, change: PlannedChangeLike) -> Outcome | None:
    """What the queue records for one planned change, or None when the run may send it."""
    enrollment_id = change.enrollment_id
    if enrollment_id in queue.queued:
        return Outcome(change.decision_id, ChangeState.AWAITING_APPROVAL)
    if enrollment_id in queue.kept:
        waiting = queue.kept[enrollment_id]
        return Outcome(change.decision_id, ChangeState.SUPERSEDED, error_message=(
            f"the same change already waits for approval as change {waiting}"))  # fmt: skip
    if enrollment_id in queue.blocked:
        refusal = queue.blocked[enrollment_id]
        when = f"{refusal.reviewed_at:%Y-%m-%d %H:%M}" if refusal.reviewed_at else "earlier"
        return Outcome(change.decision_id, ChangeState.HELD, error_message=(
            f"refused by {refusal.reviewed_by} on {when} (change {refusal.decision_id}); not "
            "proposed again until the enrollment's facts or the policy change"))  # fmt: skip
    return None
