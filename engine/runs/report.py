"""What a run did: its counts, the changes a live run must apply, how it ended.

The report keeps counts and (in a live run) the decisions it must apply; ``decisions``
holds every decision only when the run was given no decision sink (small runs, tests), so
memory stays flat for a run of any size. ``ApplyReport`` is the same for an ``apply`` or
``review approve`` run.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime

from engine.clock import utc_now
from engine.policy.decision import Action, Decision
from engine.runs.records import RunCounts
from engine.runs.states import FAILED_STATES, ChangeState, RunOutcome

__all__ = ["ApplyReport", "HeldChange", "RunReport"]


@dataclass(frozen=True)
class HeldChange:
    """A planned move out of ACTIVE that the policy's ``allow_leaving_active`` kept back."""

    enrollment_id: str
    status: str | None


@dataclass
class RunReport:
    """What a run did, for the preview and the exit code.

    It keeps counts, and the decisions a live run must apply (``changes``); ``decisions``
    holds every decision only when the run was given no decision sink (small runs, tests).
    """

    run_id: int
    program_id: str
    live: bool
    decisions: list[Decision] = field(default_factory=list)
    outcome: RunOutcome = RunOutcome.COMPLETED
    message: str | None = None
    change_states: Counter[ChangeState] = field(default_factory=Counter)
    missing_groups: list[str] = field(default_factory=list)
    created_groups: list[str] = field(default_factory=list)
    recovered: int = 0
    held: list[HeldChange] = field(default_factory=list)  # moves out of ACTIVE the policy does not allow
    awaiting_approval: int = 0  # changes waiting in the review queue after this run
    plan_id: int | None = None  # the plan a ``plan`` run saved
    started_at: datetime = field(default_factory=utc_now)
    duration_s: float = 0.0
    transitions: Counter[str] = field(default_factory=Counter)
    action_counts: Counter[str] = field(default_factory=Counter)
    changes: list[Decision] = field(default_factory=list)  # UPDATE decisions of a live run
    groups_wanted: set[str] = field(default_factory=set)  # groups the changes add
    rejects: int = 0  # evaluated enrollments the policy would move to REJECTED
    unchanged: int = 0  # decided as their latest stored decision: no new row
    needs_approval: int = 0  # changes the policy wants a person to confirm

    def tally(self, decision: Decision) -> None:
        """Count one decision; keep it when a live run must apply it."""
        self.transitions[decision.transition] += 1
        self.action_counts[decision.action.value] += 1
        if decision.action is Action.UPDATE:
            self.groups_wanted.update(decision.groups_added)
            if self.live:
                self.changes.append(decision)
        if decision.status == "REJECTED" and decision.status_changes and decision.action is Action.UPDATE:
            self.rejects += 1

    def clear_tally(self) -> None:
        self.transitions.clear()
        self.action_counts.clear()
        self.changes.clear()
        self.groups_wanted.clear()
        self.decisions.clear()
        self.rejects = self.unchanged = self.needs_approval = 0

    @property
    def evaluated(self) -> int:
        """Enrollments the policy decided (not skipped, no error)."""
        return self.action_counts[Action.UPDATE.value] + self.action_counts[Action.NONE.value]

    @property
    def needed(self) -> int:
        """Enrollments that need a change."""
        return self.action_counts[Action.UPDATE.value]

    @property
    def failed(self) -> int:
        return _failed(self.change_states)

    def counts(self) -> RunCounts:
        """What the store keeps of the run's counts."""
        return RunCounts(
            transitions=dict(self.transitions),
            actions=dict(self.action_counts),
            changes=_by_state(self.change_states),
            recovered=self.recovered,
            unchanged=self.unchanged,
        )


@dataclass
class ApplyReport:
    """What an ``apply`` or ``review approve`` did, for the summary and the exit code."""

    run_id: int
    program_id: str
    by: str
    plan_id: int | None = None
    outcome: RunOutcome = RunOutcome.COMPLETED
    message: str | None = None
    change_states: Counter[ChangeState] = field(default_factory=Counter)
    stale: list[tuple[str, str]] = field(default_factory=list)  # enrollment id, what changed
    created_groups: list[str] = field(default_factory=list)

    @property
    def failed(self) -> int:
        return _failed(self.change_states)

    def counts(self) -> RunCounts:
        """What the store keeps of the run's counts."""
        return RunCounts(changes=_by_state(self.change_states), stale=len(self.stale))


def _failed(states: Counter[ChangeState]) -> int:
    """Changes not applied and left for a later run or a person (the exit code's "failed")."""
    return sum(states[state] for state in FAILED_STATES)


def _by_state(states: Counter[ChangeState]) -> dict[str, int]:
    return {state.value: count for state, count in states.items()}
