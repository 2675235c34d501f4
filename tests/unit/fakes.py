"""In-memory fakes of the run service's ports (``engine.runs.ports``): the Flip API, the
decision store and the program lock, sharing one settable clock.

They keep the rules the real adapters keep where the service relies on them (a final change
state never moves again, writes with a stale fencing token or an expired lease are refused,
a second holder of a program's lock is refused), so a unit test fails when the service
breaks a promise, not only when it crashes. Every call (lease renewals included) is logged
in order in ``World.calls``, so a test can ask, for example, whether the lease was renewed
between the first and the last enrollment listed. Slow work is simulated by moving the
shared clock (``step_s``: per enrollment listed, per request, per decision stored).
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from engine.errors import LockHeldError, StoreError
from engine.policy.decision import Action, Decision
from engine.policy.document import Policy
from engine.runs.checkpoints import Checkpoint, no_checkpoint
from engine.runs.digest import decision_digest
from engine.runs.patch import planned_body
from engine.runs.ports import DecisionStore, FlipApi, Outcome, ProgramLockLike
from engine.runs.records import ReviewRecord, RunCounts
from engine.runs.report import RunReport
from engine.runs.service import RunService, RunSettings
from engine.runs.states import (
    FINAL_STATES,
    MOVABLE_STATES,
    OPEN_STATES,
    OUTCOME_STATES,
    ChangeState,
    RunMode,
    RunOutcome,
)

Hook = Callable[[str, str], None]  # (call, enrollment or program id), before the call acts


class FakeClock:
    """Monotonic seconds that only move when a test (or a fake doing slow work) says so."""

    def __init__(self) -> None:
        self.now = 0.0
        self._lock = threading.Lock()

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        with self._lock:
            self.now += seconds


@dataclass(frozen=True)
class FakeGroup:
    """A program's group as the fake API lists it."""

    id: str
    name: str


@dataclass
class World:
    """What the fakes share: the clock and the log of calls."""

    clock: FakeClock = field(default_factory=FakeClock)
    calls: list[tuple[str, str]] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def log(self, call: str, key: str) -> None:
        with self._lock:
            self.calls.append((call, key))

    def count(self, call: str) -> int:
        return sum(1 for name, _key in self.calls if name == call)

    def keys(self, call: str) -> list[str]:
        return [key for name, key in self.calls if name == call]

    def between(self, call: str, first: str, last: str) -> int:
        """How many ``call`` entries come after the first ``first`` and before the last ``last``."""
        names = [name for name, _key in self.calls]
        if first not in names or last not in names:
            return 0
        start = names.index(first)
        end = len(names) - 1 - names[::-1].index(last)
        return names[start:end].count(call)


# --- the Flip API -----------------------------------------------------------------------------


class FakeFlipApi:
    """The Flip API as a dict of enrollments; ``fail`` scripts errors, ``hooks`` react to calls.

    A PATCH sets the status (and reason) and the group list and moves ``updated_at``, as the
    real API does. ``step_s`` is how long each listed enrollment "takes" on the
    shared clock, ``request_step_s`` each other request (apply threads move the clock too: keep
    it small enough that a few of them cannot outrun the lease between two renewals).
    """

    def __init__(
        self,
        world: World,
        enrollments: Iterable[dict[str, Any]],
        *,
        step_s: float = 0.0,
        request_step_s: float | None = None,
    ) -> None:
        self.world = world
        self.enrollments = {e["id"]: copy.deepcopy(e) for e in enrollments}
        self.groups: dict[str, list[str]] = {}  # program -> group ids that exist
        self.step_s = step_s  # per enrollment listed
        self.request_step_s = step_s if request_step_s is None else request_step_s
        self.hooks: list[Hook] = []
        self.failures: dict[tuple[str, str], list[BaseException]] = {}
        self.patches: list[tuple[str, dict[str, Any]]] = []
        self.attempts: dict[str, int] = {}  # HTTP attempts a PATCH "took" (retries, failed or not)
        self.group_names: dict[tuple[str, str], str] = {}  # (program, group id) -> name it was created with
        self._lock = threading.Lock()
        self._local = threading.local()
        self._revision = 0

    # scripting

    def fail(self, call: str, key: str, *errors: BaseException) -> None:
        """The next calls ``call`` for ``key`` (an enrollment or program id) raise ``errors``."""
        self.failures.setdefault((call, key), []).extend(errors)

    def _enter(self, call: str, key: str) -> None:
        self.world.log(call, key)
        self._local.attempts = self.attempts.get(key, 1) if call == "patch" else 1
        for hook in list(self.hooks):
            hook(call, key)
        self.world.clock.advance(self.step_s if call == "list_item" else self.request_step_s)
        with self._lock:
            queue = self.failures.get((call, key))
            error = queue.pop(0) if queue else None
        if error is not None:
            raise error

    @property
    def last_attempts(self) -> int:
        """Like ``FlipClient.last_attempts``: HTTP attempts of this thread's last call."""
        return int(getattr(self._local, "attempts", 0))

    # the port

    def iter_enrollment_dicts(self, program_id: str) -> Iterator[dict[str, Any]]:
        self._enter("list", program_id)
        for enrollment_id in list(self.enrollments):
            self._enter("list_item", enrollment_id)
            yield copy.deepcopy(self.enrollments[enrollment_id])

    def get_enrollment_dict(self, enrollment_id: str) -> dict[str, Any]:
        self._enter("get", enrollment_id)
        return copy.deepcopy(self.enrollments[enrollment_id])

    def update_enrollment(self, enrollment_id: str, body: Mapping[str, Any]) -> dict[str, Any]:
        self._enter("patch", enrollment_id)
        body = dict(body)
        with self._lock:
            self.patches.append((enrollment_id, body))
            self.apply(enrollment_id, body)
            return copy.deepcopy(self.enrollments[enrollment_id])

    def apply(self, enrollment_id: str, body: dict[str, Any]) -> None:
        """What a PATCH (or a person in the dashboard) does to an enrollment."""
        enrollment = self.enrollments[enrollment_id]
        if "status" in body:
            enrollment["status"] = body["status"]
            enrollment["status_reason"] = body.get("status_reason")
        if "group_ids" in body:
            site = enrollment.setdefault("site", {})
            site["groups"] = [{"id": g, "name": g} for g in body["group_ids"]]
        self._revision += 1
        enrollment["updated_at"] = f"2026-11-25T01:00:{self._revision:02d}Z"

    def list_groups(self, program_id: str) -> list[FakeGroup]:
        self._enter("list_groups", program_id)
        return [FakeGroup(g, g) for g in self.groups.get(program_id, [])]

    def ensure_group(self, program_id: str, group_id: str, name: str) -> tuple[FakeGroup, bool]:
        self._enter("ensure_group", group_id)
        existing = self.groups.setdefault(program_id, [])
        created = group_id not in existing
        if created:
            existing.append(group_id)
            self.group_names[program_id, group_id] = name
        return FakeGroup(group_id, name), created


# --- the program lock -------------------------------------------------------------------------


class FakeLock:
    """A SQLite-style lease: a fencing token and an expiry on the shared clock."""

    def __init__(self, locks: FakeLocks, program_id: str, holder: str, token: int) -> None:
        self.locks = locks
        self.program_id = program_id
        self.holder = holder
        self.fencing_token = token
        self.deadline = locks.world.clock() + locks.ttl_s
        self.expires_at = datetime.now(UTC) + timedelta(seconds=locks.ttl_s)
        self.renewals = 0
        self.released = False

    def renew(self) -> datetime:
        self.check()
        self.deadline = self.locks.world.clock() + self.locks.ttl_s
        self.expires_at = datetime.now(UTC) + timedelta(seconds=self.locks.ttl_s)
        self.renewals += 1
        self.locks.world.log("renew", self.program_id)
        return self.expires_at

    def alive(self) -> bool:
        return not self.released and self.locks.world.clock() < self.deadline

    def check(self) -> None:
        if not self.alive():
            raise LockHeldError(f"the lease on {self.program_id} ran out at {self.deadline:g} s")


class FakeLocks:
    """The lock factory: one live lease per program; a lease that ran out can be taken over."""

    def __init__(self, world: World, ttl_s: float = 300.0) -> None:
        self.world = world
        self.ttl_s = ttl_s
        self.held: dict[str, FakeLock] = {}
        self.taken: list[FakeLock] = []
        self._tokens = 0

    @contextmanager
    def __call__(self, program_id: str, holder: str) -> Iterator[FakeLock]:
        current = self.held.get(program_id)
        if current is not None and current.alive():
            raise LockHeldError(f"program {program_id} is locked by {current.holder}")
        self._tokens += 1
        lock = FakeLock(self, program_id, holder, self._tokens)
        self.held[program_id] = lock
        self.taken.append(lock)
        try:
            yield lock
        finally:
            lock.released = True

    def check(self, program_id: str, token: int | None) -> None:
        """What the real store's fencing does: refuse writes of a lease that is not current.

        Stricter than the real store in one way: while a program is locked, a write must
        carry the token (the real store would fall back to the run's own token; the service
        is meant to fence every write of a live run itself)."""
        current = self.held.get(program_id)
        if token is None:
            if current is not None and not current.released and current.alive():
                raise LockHeldError(f"a write to locked program {program_id} without its fencing token")
            return
        if current is None or current.fencing_token != token:
            raise LockHeldError(f"fencing token {token} of {program_id} is no longer current")
        current.check()


class StillLock:
    """A program lock on its own, for the lease keeper: its lease ends at ``expires_at`` (``None``:
    never, like PostgreSQL's advisory lock) and stays put when renewed; it counts renewals."""

    def __init__(self, expires_at: datetime | None, token: int = 1) -> None:
        self.fencing_token = token
        self.expires_at = expires_at
        self.renewals = 0

    def renew(self) -> datetime | None:
        self.renewals += 1
        return self.expires_at


# --- the decision store -----------------------------------------------------------------------


@dataclass
class StoredRun:
    program_id: str
    mode: RunMode
    fencing_token: int | None
    holder: str | None = None
    policy_version_id: int | None = None
    outcome: RunOutcome = RunOutcome.RUNNING
    counts: dict[str, Any] = field(default_factory=dict)
    message: str | None = None
    started_at: datetime | None = None  # the run's ``now``


@dataclass
class StoredChange:
    """One stored decision and where its change stands."""

    decision_id: int
    run_id: int
    program_id: str
    decision: Decision
    body: dict[str, Any]
    change_state: ChangeState
    attempts: int = 0
    http_status: int | None = None
    api_error_code: str | None = None
    api_error_locations: Sequence[Any] | None = None
    error_message: str | None = None
    reviewed_by: str | None = None
    reviewed_at: datetime | None = None

    @property
    def enrollment_id(self) -> str:
        return self.decision.enrollment_id or ""

    @property
    def facts_fingerprint(self) -> str | None:
        return self.decision.facts_fingerprint

    @property
    def enrollment_updated_at(self) -> str | None:
        return self.decision.updated_at


@dataclass(frozen=True)
class ChangeView:
    """What ``planned_changes`` and ``open_changes`` hand out: a snapshot, like a row."""

    decision_id: int
    enrollment_id: str
    body: dict[str, Any]
    change_state: ChangeState
    facts_fingerprint: str | None
    enrollment_updated_at: str | None


class FakeStore:
    """The decision store in dicts, with the real store's state rules and fencing."""

    def __init__(self, world: World, locks: FakeLocks, *, step_s: float = 0.0) -> None:
        self.world = world
        self.locks = locks
        self.step_s = step_s  # how long storing one decision "takes"
        self.versions: dict[str, int] = {}
        self.version_texts: dict[str, tuple[str, str, str | None, str]] = {}
        self.runs: dict[int, StoredRun] = {}
        self.changes: dict[int, StoredChange] = {}
        self.plans: dict[int, tuple[str, int, str]] = {}  # plan id -> program, run id, API address
        self._lock = threading.Lock()

    # helpers for tests

    def states(self, run_id: int | None = None) -> dict[str, ChangeState]:
        """enrollment id -> change state, of one run (default: the newest)."""
        run_id = run_id if run_id is not None else max(self.runs)
        return {c.enrollment_id: c.change_state for c in self.changes.values() if c.run_id == run_id}

    def change_of(self, enrollment_id: str, run_id: int | None = None) -> StoredChange:
        run_id = run_id if run_id is not None else max(self.runs)
        (found,) = [
            c for c in self.changes.values() if c.run_id == run_id and c.enrollment_id == enrollment_id
        ]
        return found

    def _write(self, call: str, program_id: str, token: int | None) -> None:
        self.world.log(call, program_id)
        self.locks.check(program_id, token)

    def _program_of(self, decision_ids: Iterable[int]) -> str:
        programs = {self.changes[i].program_id for i in decision_ids}
        return programs.pop() if len(programs) == 1 else ""

    def _move(self, decision_id: int, target: ChangeState) -> StoredChange:
        change = self.changes.get(decision_id)
        if change is None:
            raise StoreError(f"no decision {decision_id}")
        if change.change_state not in MOVABLE_STATES and change.change_state != target:
            raise StoreError(
                f"decision {decision_id} is '{change.change_state}': it cannot become '{target}'"
            )
        return change

    # the port

    def save_policy_version(
        self, program_id: str, name: str, version: str | None, content_hash: str, source_text: str
    ) -> int:
        self.world.log("save_policy_version", program_id)
        self.version_texts[content_hash] = (program_id, name, version, source_text)
        return self.versions.setdefault(content_hash, len(self.versions) + 1)

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
    ) -> int:
        self._write("start_run", program_id, fencing_token)
        run_id = len(self.runs) + 1
        self.runs[run_id] = StoredRun(
            program_id, RunMode(mode), fencing_token, holder, policy_version_id, started_at=now
        )
        return run_id

    def add_decisions(
        self, run_id: int, program_id: str, decisions: Iterable[Decision], *, fencing_token: int | None = None
    ) -> None:
        run = self.runs[run_id]
        if run.outcome != RunOutcome.RUNNING:
            raise StoreError(f"run {run_id} has already ended ({run.outcome})")
        for decision in decisions:
            self.world.clock.advance(self.step_s)
            self._write("add_decision", program_id, fencing_token)
            # A plan's changes wait to be applied, like a live run's.
            body, state, problem = self._planned(decision, live=run.mode in (RunMode.LIVE, RunMode.PLAN))
            decision_id = len(self.changes) + 1
            self.changes[decision_id] = StoredChange(
                decision_id, run_id, program_id, decision, body, state, error_message=problem
            )

    @staticmethod
    def _planned(decision: Decision, *, live: bool) -> tuple[dict[str, Any], ChangeState, str | None]:
        body, problem = planned_body(decision)
        if not live:
            return body or {}, ChangeState.NONE, problem
        if problem is not None:
            return {}, ChangeState.FAILED_PERMANENT, problem
        return (body, ChangeState.PLANNED, None) if body is not None else ({}, ChangeState.NONE, None)

    # The review queue: the stored changes in its states, as the real store reads them. Saved
    # plans are covered against the real store (tests/pipeline/test_plans_and_review.py);
    # here a plan is its program, run and API address.
    def review_queue(
        self,
        program_id: str | None = None,
        *,
        states: Iterable[ChangeState] = (ChangeState.AWAITING_APPROVAL,),
        decision_ids: Sequence[int] | None = None,
    ) -> list[ReviewRecord]:
        wanted = set(states)
        return [
            self._review_record(c)
            for c in self.changes.values()  # oldest first
            if c.change_state in wanted
            and self.runs[c.run_id].mode is not RunMode.PLAN
            and (program_id is None or c.program_id == program_id)
            and (decision_ids is None or c.decision_id in decision_ids)
        ]

    def refused_changes(self, program_id: str) -> list[ReviewRecord]:
        newest = {r.enrollment_id: r for r in self.review_queue(program_id, states=(ChangeState.REFUSED,))}
        return list(newest.values())

    def refuse(self, decision_ids: Iterable[int], reviewed_by: str, at: datetime | None) -> None:
        """A person's refusal in the review queue (the real store's ``refuse``)."""
        for decision_id in decision_ids:
            change = self.changes[decision_id]
            if change.change_state is not ChangeState.AWAITING_APPROVAL:
                raise StoreError(f"decision {decision_id} is not waiting for approval")
            change.change_state, change.reviewed_by, change.reviewed_at = ChangeState.REFUSED, reviewed_by, at

    def _review_record(self, change: StoredChange) -> ReviewRecord:
        run = self.runs[change.run_id]
        hashes = {version: content_hash for content_hash, version in self.versions.items()}
        decision = change.decision
        return ReviewRecord(
            change.decision_id, change.run_id, change.program_id, change.enrollment_id,
            change.change_state, decision.current_status, decision.status, decision.reason,
            decision.rule_id, list(decision.current_group_ids), list(decision.group_ids),
            copy.deepcopy(change.body), decision.updated_at, decision.facts_fingerprint,
            run.policy_version_id, hashes.get(run.policy_version_id or 0), datetime(2026, 11, 25, tzinfo=UTC),
            change.reviewed_by, change.reviewed_at, None, change.attempts,
        )  # fmt: skip

    def approve(self, decision_ids: Iterable[int], reviewed_by: str, at: datetime | None) -> None:
        """A person's approval in the review queue (the real store's ``approve``): planned
        again, to be sent by ``review approve``."""
        for decision_id in decision_ids:
            change = self.changes[decision_id]
            if change.change_state is not ChangeState.AWAITING_APPROVAL:
                raise StoreError(f"decision {decision_id} is not waiting for approval")
            change.change_state, change.reviewed_by, change.reviewed_at = ChangeState.PLANNED, reviewed_by, at

    def carry_approvals(self, pairs: Sequence[tuple[int, int]], *, fencing_token: int | None) -> None:
        self._write("carry_approvals", self._program_of(new for _old, new in pairs), fencing_token)
        for old, new in pairs:
            approval, replacement = self.changes[old], self.changes[new]
            replacement.reviewed_by, replacement.reviewed_at = approval.reviewed_by, approval.reviewed_at

    def create_plan(self, program_id: str, run_id: int, api_url: str) -> int:
        plan_id = len(self.plans) + 1
        self.plans[plan_id] = (program_id, run_id, api_url)
        return plan_id

    def latest_digests(self, program_id: str) -> dict[str, int]:
        latest: dict[str, int] = {}
        for change in self.changes.values():  # in the order they were stored
            if change.program_id == program_id and change.enrollment_id:
                version = self.runs[change.run_id].policy_version_id
                latest[change.enrollment_id] = decision_digest(change.decision, version)
        return latest

    def planned_changes(self, run_id: int) -> list[ChangeView]:
        self.world.log("planned_changes", str(run_id))
        return [
            _view(c)
            for c in self.changes.values()
            if c.run_id == run_id and c.change_state == ChangeState.PLANNED
        ]

    def open_changes(self, program_id: str, *, before_run_id: int | None = None) -> list[ChangeView]:
        self.world.log("open_changes", program_id)
        live = {
            run_id
            for run_id, run in self.runs.items()
            if run.program_id == program_id
            and run.mode == RunMode.LIVE
            and (before_run_id is None or run_id < before_run_id)
        }
        newest: dict[str, StoredChange] = {}
        for change in self.changes.values():
            # An approved change is finished by ``review approve``, never re-planned.
            if (
                change.run_id in live
                and change.decision.action is Action.UPDATE
                and change.reviewed_by is None
            ):
                newest[change.enrollment_id] = change
        return [_view(c) for c in newest.values() if c.change_state in OPEN_STATES]

    def interrupt_running_runs(
        self,
        program_id: str,
        *,
        except_run_id: int | None = None,
        message: str = "interrupted: the run ended without finishing",
        fencing_token: int | None = None,
    ) -> list[int]:
        self._write("interrupt_running_runs", program_id, fencing_token)
        found = []
        for run_id, run in self.runs.items():
            if run.program_id == program_id and run.outcome == RunOutcome.RUNNING and run_id != except_run_id:
                run.outcome, run.message = RunOutcome.INTERRUPTED, message
                found.append(run_id)
        return found

    def mark_in_flight_many(self, decision_ids: Sequence[int], *, fencing_token: int | None = None) -> None:
        if not decision_ids:
            return
        with self._lock:
            self._write("mark_in_flight", self._program_of(decision_ids), fencing_token)
            moving = [self._move(i, ChangeState.IN_FLIGHT) for i in decision_ids]
            for change in moving:
                change.change_state = ChangeState.IN_FLIGHT
                change.attempts += 1

    def release_in_flight(self, decision_ids: Sequence[int], *, fencing_token: int | None = None) -> None:
        if not decision_ids:
            return
        with self._lock:
            self._write("release_in_flight", self._program_of(decision_ids), fencing_token)
            for decision_id in decision_ids:
                change = self.changes[decision_id]
                if change.change_state == ChangeState.IN_FLIGHT:
                    change.change_state = ChangeState.PLANNED
                    change.attempts -= 1

    def record_outcomes(self, outcomes: Sequence[Outcome], *, fencing_token: int | None = None) -> None:
        if not outcomes:
            return
        with self._lock:
            self._write("record_outcomes", self._program_of(o.decision_id for o in outcomes), fencing_token)
            moves = [(self._move(o.decision_id, ChangeState(o.state)), o) for o in outcomes]
            for change, outcome in moves:
                _set_outcome(change, outcome)

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
    ) -> None:
        outcome = Outcome(
            decision_id,
            ChangeState(state),
            attempts,
            http_status,
            api_error_code,
            api_error_locations,
            error_message,
        )
        self.record_outcomes([outcome], fencing_token=fencing_token)

    def supersede(self, decision_ids: Iterable[int], reason: str, *, fencing_token: int | None = None) -> int:
        ids = sorted(set(decision_ids))
        if not ids:
            return 0
        with self._lock:
            self._write("supersede", self._program_of(ids), fencing_token)
            moved = 0
            for decision_id in ids:
                change = self.changes[decision_id]
                if change.change_state in MOVABLE_STATES:
                    change.change_state, change.error_message = ChangeState.SUPERSEDED, reason
                    moved += 1
            return moved

    def finish_run(
        self,
        run_id: int,
        outcome: RunOutcome,
        counts: RunCounts,
        message: str | None = None,
        *,
        fencing_token: int | None = None,
    ) -> None:
        run = self.runs[run_id]
        self._write("finish_run", run.program_id, fencing_token)
        run.outcome, run.counts, run.message = RunOutcome(outcome), dict(counts), message


def _view(change: StoredChange) -> ChangeView:
    return ChangeView(
        change.decision_id,
        change.enrollment_id,
        copy.deepcopy(change.body),
        change.change_state,
        change.facts_fingerprint,
        change.enrollment_updated_at,
    )


def _set_outcome(change: StoredChange, outcome: Outcome) -> None:
    state = ChangeState(outcome.state)
    if state not in OUTCOME_STATES:
        raise StoreError(f"record_outcome takes an outcome, not '{state}'")
    if change.change_state in FINAL_STATES:
        return  # the same final state again: a no-op, as in the real store
    change.change_state = state
    if outcome.attempts is not None:
        change.attempts = outcome.attempts
    change.http_status = outcome.http_status
    change.api_error_code = outcome.api_error_code
    change.api_error_locations = outcome.api_error_locations
    change.error_message = outcome.error_message


# --- everything at once -----------------------------------------------------------------------


@dataclass
class Fakes:
    """One program's world on fakes: build a ``RunService`` with ``service(policy, ...)``."""

    world: World
    api: FakeFlipApi
    store: FakeStore
    locks: FakeLocks

    @classmethod
    def of(
        cls,
        enrollments: Iterable[dict[str, Any]],
        *,
        ttl_s: float = 300.0,
        step_s: float = 0.0,
        request_step_s: float | None = None,
    ) -> Fakes:
        """Fakes over ``enrollments``; every listed enrollment, request and stored decision
        takes ``step_s`` seconds of the shared clock."""
        world = World()
        locks = FakeLocks(world, ttl_s)
        api = FakeFlipApi(world, enrollments, step_s=step_s, request_step_s=request_step_s)
        return cls(world, api, FakeStore(world, locks, step_s=step_s), locks)

    def service(
        self,
        policy: Policy,
        *,
        stop: threading.Event | None = None,
        progress: Callable[[str, int, int], None] | None = None,
        checkpoint: Checkpoint = no_checkpoint,
        on_finish: Callable[[RunReport], None] | None = None,
        on_decision: Callable[[Decision], None] | None = None,
        on_evaluated: Callable[[dict[str, Any], Decision], None] | None = None,
        **settings: Any,
    ) -> RunService:
        settings.setdefault("now", datetime(2026, 11, 25, tzinfo=UTC))
        settings.setdefault("holder", "unit-test:1")
        return RunService(
            policy,
            self.api,
            self.store,
            RunSettings(**settings),
            lock_factory=self.locks,
            stop=stop,
            progress=progress,
            clock=self.world.clock,
            checkpoint=checkpoint,
            on_finish=on_finish,
            on_decision=on_decision,
            on_evaluated=on_evaluated,
        )


if TYPE_CHECKING:
    # mypy (pyproject.toml lists this file) checks that the fakes implement the ports.
    def _implements_the_ports(
        world: World, locks: FakeLocks
    ) -> tuple[FlipApi, DecisionStore, ProgramLockLike, ProgramLockLike]:
        return FakeFlipApi(world, []), FakeStore(world, locks), FakeLock(locks, "", "", 0), StillLock(None)
