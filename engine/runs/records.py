"""The frozen records the decision store hands back: runs, plans, stored decisions, changes.

They are the application layer's own types (the store's ports return them, the renderers
show them); ``engine.store.records`` reads them from rows.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypedDict

from engine.policy.decision import Decision, RuleTrace
from engine.runs.states import ChangeState, PlanState, RunMode, RunOutcome

__all__ = [
    "DecisionRecord",
    "PlanRecord",
    "PlannedChange",
    "PolicyVersionRecord",
    "ReviewRecord",
    "RunCounts",
    "RunRecord",
]


class RunCounts(TypedDict, total=False):
    """A run's counts as stored with it (JSON): a run fills the first five, an apply or
    approve run ``changes`` and ``stale``."""

    transitions: dict[str, int]  # "CURRENT -> STATUS" -> decisions
    actions: dict[str, int]  # Action value -> decisions
    changes: dict[str, int]  # ChangeState value -> changes
    recovered: int  # changes an earlier run left in flight, found applied
    unchanged: int  # decisions the same as the enrollment's latest stored one
    stale: int  # changes found drifted since they were planned or approved


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
    counts: RunCounts
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
    counts: RunCounts


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
