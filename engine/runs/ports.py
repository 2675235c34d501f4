"""What the run service and the applier need from the outside world, as protocols.

The service (``engine.runs.service``) and the applier of plans and approvals
(``engine.runs.apply``) depend on these, never on httpx or SQLAlchemy; the wiring module
(``engine.bootstrap``) passes in the real client and store, the unit tests in-memory fakes
(``tests/unit/fakes.py``), and other tests the real ones pointed at the local simulator and a
temporary database. Everything they call is declared here.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from engine.policy.decision import Decision
from engine.runs.records import DecisionRecord, PlanRecord, PolicyVersionRecord, ReviewRecord, RunCounts
from engine.runs.states import ChangeState, RunMode, RunOutcome, Stage

__all__ = [
    "DecisionStore",
    "FlipApi",
    "Outcome",
    "PlannedChangeLike",
    "ProgramLockLike",
    "ProgressCallback",
    "ReviewStore",
]

# Told how far a stage has come: (stage, done, total; 0 when the total is not known).
ProgressCallback = Callable[[Stage, int, int], None]


@dataclass(frozen=True, slots=True)
class Outcome:
    """What became of one change (``record_outcomes``)."""

    decision_id: int
    state: ChangeState
    attempts: int | None = None
    http_status: int | None = None
    api_error_code: str | None = None
    api_error_locations: Sequence[Any] | None = None
    error_message: str | None = None


class GroupLike(Protocol):
    """A program's group as the API lists it."""

    @property
    def id(self) -> str | None: ...


class FlipApi(Protocol):
    def iter_enrollment_dicts(self, program_id: str) -> Iterator[dict[str, Any]]: ...

    def get_enrollment_dict(self, enrollment_id: str) -> dict[str, Any]: ...

    def update_enrollment(self, enrollment_id: str, body: Mapping[str, Any]) -> dict[str, Any]:
        """Send a PATCH body (``engine.runs.patch``); the enrollment as the API answered."""
        ...

    def list_groups(self, program_id: str) -> Sequence[GroupLike]: ...

    def ensure_group(self, program_id: str, group_id: str, name: str) -> tuple[GroupLike, bool]: ...

    @property
    def last_attempts(self) -> int:
        """HTTP attempts of the calling thread's last call (retries included; 0 if unknown)."""
        ...


class PlannedChangeLike(Protocol):
    @property
    def decision_id(self) -> int: ...
    @property
    def enrollment_id(self) -> str: ...
    @property
    def body(self) -> dict[str, Any]: ...
    @property
    def change_state(self) -> ChangeState: ...
    @property
    def facts_fingerprint(self) -> str | None: ...
    @property
    def enrollment_updated_at(self) -> str | None: ...


class ProgramLockLike(Protocol):
    @property
    def fencing_token(self) -> int: ...

    @property
    def expires_at(self) -> datetime | None:
        """When the lease runs out unless renewed (``None``: it does not expire)."""
        ...

    def renew(self) -> datetime | None:
        """Extend the lease; its new expiry."""
        ...


class DecisionStore(Protocol):
    def save_policy_version(
        self, program_id: str, name: str, version: str | None, content_hash: str, source_text: str
    ) -> int: ...

    def start_run(
        self,
        program_id: str,
        mode: RunMode,
        policy_version_id: int | None,
        now: datetime,
        *,
        holder: str | None = None,
        fencing_token: int | None = None,
        plan_id: int | None = None,
        applied_by: str | None = None,
    ) -> int: ...

    def add_decisions(
        self, run_id: int, program_id: str, decisions: Iterable[Decision], *, fencing_token: int | None = None
    ) -> None: ...

    def latest_digests(self, program_id: str) -> Mapping[str, int]: ...

    def planned_changes(self, run_id: int) -> Sequence[PlannedChangeLike]: ...

    def open_changes(
        self, program_id: str, *, before_run_id: int | None = None
    ) -> Sequence[PlannedChangeLike]: ...

    def interrupt_running_runs(
        self,
        program_id: str,
        *,
        except_run_id: int | None = None,
        message: str = ...,
        fencing_token: int | None = None,
    ) -> list[int]: ...

    def mark_in_flight_many(
        self, decision_ids: Sequence[int], *, fencing_token: int | None = None
    ) -> None: ...

    def release_in_flight(self, decision_ids: Sequence[int], *, fencing_token: int | None = None) -> None: ...

    def record_outcomes(self, outcomes: Sequence[Outcome], *, fencing_token: int | None = None) -> None: ...

    def record_outcome(
        self,
        decision_id: int,
        state: ChangeState,
        *,
        attempts: int | None = None,
        http_status: int | None = None,
        api_error_code: str | None = None,
        api_error_locations: Sequence[Any] | None = None,
        error_message: str | None = None,
        fencing_token: int | None = None,
    ) -> None: ...

    def supersede(
        self, decision_ids: Iterable[int], reason: str, *, fencing_token: int | None = None
    ) -> int: ...

    def finish_run(
        self,
        run_id: int,
        outcome: RunOutcome,
        counts: RunCounts,
        message: str | None = None,
        *,
        fencing_token: int | None = None,
    ) -> None: ...

    # -- saved plans and the review queue ----------------------------------------------

    def create_plan(self, program_id: str, run_id: int, api_url: str) -> int: ...

    def review_queue(
        self,
        program_id: str | None = None,
        *,
        states: Iterable[ChangeState] = ...,
        decision_ids: Sequence[int] | None = None,
    ) -> Sequence[ReviewRecord]: ...

    def refused_changes(self, program_id: str) -> Sequence[ReviewRecord]: ...

    def carry_approvals(self, pairs: Sequence[tuple[int, int]], *, fencing_token: int | None) -> None: ...


class ReviewStore(DecisionStore, Protocol):
    """What applying plans and approvals needs from the store, beyond a live run's needs."""

    def plan(self, plan_id: int) -> PlanRecord | None: ...
    def policy_version(self, policy_version_id: int) -> PolicyVersionRecord | None: ...
    def claim_plan(
        self, plan_id: int, apply_run_id: int, applied_by: str, *, fencing_token: int | None
    ) -> None: ...
    def finish_plan(self, plan_id: int, *, fencing_token: int | None) -> None: ...
    def run_changes(
        self, run_id: int, states: Iterable[ChangeState] | None = None
    ) -> Sequence[DecisionRecord]: ...
    def changes_by_id(self, decision_ids: Sequence[int]) -> Sequence[PlannedChangeLike]: ...
    def decision_by_id(self, decision_id: int) -> DecisionRecord | None: ...
    def approve(
        self, decision_ids: Sequence[int], reviewed_by: str, *, fencing_token: int | None
    ) -> None: ...
    def refuse(
        self, decision_ids: Sequence[int], reviewed_by: str, note: str | None, *, fencing_token: int | None
    ) -> None: ...
