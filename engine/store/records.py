"""How the records the store hands to callers (``engine.runs.records``) are read from rows."""

from __future__ import annotations

from typing import Any, cast

from sqlalchemy import Row

from engine.policy.decision import Action, Decision, RuleTrace
from engine.runs.records import DecisionRecord, PlannedChange, ReviewRecord, RunCounts, RunRecord
from engine.runs.states import ChangeState, RunMode, RunOutcome
from engine.store.schema import DecisionRow, RunRow

# Enum lookups by value, without Enum.__call__ (measurably slow over 100,000 rows).
_CHANGE_STATES = {state.value: state for state in ChangeState}
_ACTIONS = {action.value: action for action in Action}


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
        counts=cast(RunCounts, row.counts),
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
