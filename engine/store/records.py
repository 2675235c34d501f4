"""The frozen records the store hands to callers, and how they are read back from rows."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Row

from engine.policy.decision import Action, Decision, RuleTrace
from engine.store.schema import ChangeState, DecisionRow, PlanState, RunMode, RunOutcome, RunRow

# Enum lookups by value, without Enum.__call__ (measurably slow over 100,000 rows).
_CHANGE_STATES = {state.value: state for state in ChangeState}
_ACTIONS = {action.value: action for action in Action}


# -- Records handed to callers ---------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PolicyVersionRecord:
    """A policy text exactly as a run used it."""

    id: int
    program_id: str
    name: str
    version: str | None
    content_hash: str
    source_text: str
    first_seen_at: datetime


@dataclass(frozen=True, slots=True)
class RunRecord:
    """One run. ``now`` is the time the policy was evaluated at (kept for replays)."""

    id: int
    program_id: str
    mode: RunMode
    policy_version_id: int | None
    started_at: datetime
    finished_at: datetime | None
    now: datetime
    outcome: RunOutcome
    message: str | None
    counts: dict[str, Any]
    holder: str | None
    fencing_token: int | None
    plan_id: int | None = None  # the plan a ``plan`` run saved, or an ``apply`` run applies
    applied_by: str | None = None  # who applied the plan or approved the changes


@dataclass(frozen=True, slots=True)
class PlanRecord:
    """A saved plan, with what its plan run recorded."""

    id: int
    program_id: str
    run_id: int
    api_url: str
    created_at: datetime
    state: PlanState
    apply_run_id: int | None
    applied_by: str | None
    applied_at: datetime | None
    policy_version_id: int | None
    evaluation_now: datetime
    run_outcome: RunOutcome
    counts: dict[str, Any]


@dataclass(frozen=True, slots=True)
class ReviewRecord:
    """A change in the review queue (waiting, or refused by a person)."""

    decision_id: int
    run_id: int
    program_id: str
    enrollment_id: str
    change_state: ChangeState
    current_status: str | None
    status: str | None
    reason: str | None
    rule_id: str | None
    current_group_ids: list[str]
    group_ids: list[str]
    body: dict[str, Any]
    enrollment_updated_at: str | None
    facts_fingerprint: str | None
    policy_version_id: int | None
    policy_hash: str | None
    since: datetime
    reviewed_by: str | None
    reviewed_at: datetime | None
    review_note: str | None
    attempts: int
    trace: list[RuleTrace] = field(default_factory=list)  # what the rules read when it was decided


@dataclass(frozen=True, slots=True)
class DecisionRecord:
    """One stored decision, with its run and where its change stands in the outbox."""

    id: int
    run_id: int
    program_id: str
    decision: Decision
    run_mode: RunMode
    run_started_at: datetime
    run_now: datetime
    run_outcome: RunOutcome
    policy_version_id: int | None
    planned_patch: dict[str, Any] | None
    change_key: str | None
    change_state: ChangeState
    attempts: int
    http_status: int | None
    api_error_code: str | None
    api_error_locations: list[Any] | None
    error_message: str | None
    applied_at: datetime | None
    updated_at: datetime
    reviewed_by: str | None = None
    reviewed_at: datetime | None = None
    review_note: str | None = None
    run_plan_id: int | None = None
    run_applied_by: str | None = None


@dataclass(frozen=True, slots=True)
class PlannedChange:
    """A change to send: the PATCH body for one enrollment and what it was decided from."""

    decision_id: int
    run_id: int
    enrollment_id: str
    body: dict[str, Any]
    change_key: str | None
    change_state: ChangeState
    group_ids: list[str]
    status: str | None
    facts_fingerprint: str | None
    enrollment_updated_at: str | None
    attempts: int


def _trace_from_json(items: list[dict[str, Any]]) -> list[RuleTrace]:
    return [
        RuleTrace(
            rule_id=item["rule_id"],
            kind=item["kind"],
            matched=item["matched"],
            reads=item.get("reads") or {},
        )
        for item in items
    ]


def to_decision(row: DecisionRow) -> Decision:
    return Decision(
        enrollment_id=row.enrollment_id,
        current_status=row.current_status,
        status=row.status,
        reason=row.reason,
        rule_id=row.rule_id,
        group_ids=row.group_ids,
        current_group_ids=row.current_group_ids,
        groups_added=row.groups_added,
        groups_removed=row.groups_removed,
        action=_ACTIONS[row.action],
        warnings=row.warnings,
        trace=_trace_from_json(row.trace),
        error=row.error,
        updated_at=row.enrollment_updated_at,
        facts_fingerprint=row.facts_fingerprint,
    )


def to_run_record(row: RunRow) -> RunRecord:
    return RunRecord(
        id=row.id,
        program_id=row.program_id,
        mode=RunMode(row.mode),
        policy_version_id=row.policy_version_id,
        started_at=row.started_at,
        finished_at=row.finished_at,
        now=row.evaluation_now,
        outcome=RunOutcome(row.outcome),
        message=row.message,
        counts=row.counts,
        holder=row.holder,
        fencing_token=row.fencing_token,
        plan_id=row.plan_id,
        applied_by=row.applied_by,
    )


def to_review_record(
    row: DecisionRow, policy_version_id: int | None, policy_hash: str | None
) -> ReviewRecord:
    return ReviewRecord(
        decision_id=row.id,
        run_id=row.run_id,
        program_id=row.program_id,
        enrollment_id=row.enrollment_id or "",
        change_state=_CHANGE_STATES[row.change_state],
        current_status=row.current_status,
        status=row.status,
        reason=row.reason,
        rule_id=row.rule_id,
        current_group_ids=row.current_group_ids,
        group_ids=row.group_ids,
        body=row.planned_patch or {},
        enrollment_updated_at=row.enrollment_updated_at,
        facts_fingerprint=row.facts_fingerprint,
        policy_version_id=policy_version_id,
        policy_hash=policy_hash,
        since=row.updated_at,
        reviewed_by=row.reviewed_by,
        reviewed_at=row.reviewed_at,
        review_note=row.review_note,
        attempts=row.attempts,
        trace=_trace_from_json(row.trace),
    )


def to_decision_record(row: DecisionRow, run: RunRow) -> DecisionRecord:
    return DecisionRecord(
        id=row.id,
        run_id=row.run_id,
        program_id=row.program_id,
        decision=to_decision(row),
        run_mode=RunMode(run.mode),
        run_started_at=run.started_at,
        run_now=run.evaluation_now,
        run_outcome=RunOutcome(run.outcome),
        policy_version_id=run.policy_version_id,
        planned_patch=row.planned_patch,
        change_key=row.change_key,
        change_state=_CHANGE_STATES[row.change_state],
        attempts=row.attempts,
        http_status=row.http_status,
        api_error_code=row.api_error_code,
        api_error_locations=row.api_error_locations,
        error_message=row.error_message,
        applied_at=row.applied_at,
        updated_at=row.updated_at,
        reviewed_by=row.reviewed_by,
        reviewed_at=row.reviewed_at,
        review_note=row.review_note,
        run_plan_id=run.plan_id,
        run_applied_by=run.applied_by,
    )


PLANNED_COLUMNS = (
    DecisionRow.id,
    DecisionRow.run_id,
    DecisionRow.enrollment_id,
    DecisionRow.planned_patch,
    DecisionRow.change_key,
    DecisionRow.change_state,
    DecisionRow.group_ids,
    DecisionRow.status,
    DecisionRow.facts_fingerprint,
    DecisionRow.enrollment_updated_at,
    DecisionRow.attempts,
)


def to_planned_change(row: Row[Any]) -> PlannedChange:
    return PlannedChange(
        decision_id=row.id,
        run_id=row.run_id,
        enrollment_id=row.enrollment_id or "",
        body=row.planned_patch or {},
        change_key=row.change_key,
        change_state=_CHANGE_STATES[row.change_state],
        group_ids=row.group_ids,
        status=row.status,
        facts_fingerprint=row.facts_fingerprint,
        enrollment_updated_at=row.enrollment_updated_at,
        attempts=row.attempts,
    )
