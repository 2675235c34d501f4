"""What the run service needs from the outside world, as protocols.

The service (``engine.runs.service``) depends on these, never on httpx or SQLAlchemy; the
wiring module (``engine.bootstrap``) passes in the real client and store, and tests can pass
the same real ones pointed at the local simulator and a temporary database.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from engine.flip.models import EnrollmentPatch, Group
from engine.policy.decision import Decision
from engine.runs.review import ReviewedChangeLike


@dataclass(frozen=True, slots=True)
class Outcome:
    """What became of one change (``record_outcomes``); ``state`` is a ChangeState value."""

    decision_id: int
    state: str
    attempts: int | None = None
    http_status: int | None = None
    api_error_code: str | None = None
    api_error_locations: Sequence[Any] | None = None
    error_message: str | None = None


class FlipApi(Protocol):
    def iter_enrollment_dicts(self, program_id: str) -> Iterator[dict[str, Any]]: ...

    def get_enrollment_dict(self, enrollment_id: str) -> dict[str, Any]: ...

    def update_enrollment(self, enrollment_id: str, patch: EnrollmentPatch) -> dict[str, Any]: ...

    def list_groups(self, program_id: str) -> list[Group]: ...

    def ensure_group(self, program_id: str, group_id: str, name: str) -> tuple[Group, bool]: ...


class PlannedChangeLike(Protocol):
    @property
    def decision_id(self) -> int: ...
    @property
    def enrollment_id(self) -> str: ...
    @property
    def body(self) -> dict[str, Any]: ...
    @property
    def change_state(self) -> str: ...
    @property
    def facts_fingerprint(self) -> str | None: ...
    @property
    def enrollment_updated_at(self) -> str | None: ...


class ProgramLockLike(Protocol):
    @property
    def fencing_token(self) -> int: ...

    def renew(self) -> Any: ...

    def check(self) -> None: ...


class DecisionStore(Protocol):
    def save_policy_version(
        self, program_id: str, name: str, version: str | None, content_hash: str, source_text: str
    ) -> int: ...

    def start_run(
        self,
        program_id: str,
        mode: str,
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

    def open_changes(self, program_id: str, *, before_run_id: int | None = None) -> Sequence[Any]: ...

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
        state: Any,
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
        outcome: str,
        counts: dict[str, Any],
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
        states: Iterable[Any] = ...,
        decision_ids: Sequence[int] | None = None,
    ) -> Sequence[ReviewedChangeLike]: ...

    def refused_changes(self, program_id: str) -> Sequence[ReviewedChangeLike]: ...
