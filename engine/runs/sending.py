"""Sending planned changes through the outbox, and the rules that keep changes back.

A live run (``engine.runs.service``) and an ``apply`` or ``review approve``
(``engine.runs.apply``) send their changes the same way, through a :class:`ChangeSender`:
every change is already recorded ``planned``; a batch is marked ``in_flight`` in one
transaction right before its PATCHes, and each outcome is recorded right after (record, then
act, then record; no transaction is open across an HTTP call). Right before each PATCH the
caller's :data:`ChangeCheck` re-reads the enrollment and may record another outcome instead.

Before anything is sent the same rules apply to both: a move out of ``ACTIVE`` the policy's
``limits.allow_leaving_active`` does not name is ``held`` (:func:`leaving_active_reason`),
and the :class:`CircuitBreakers` (``--max-changes`` or ``limits.max_changes``, and
``limits.max_reject_ratio``) stop the whole run.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from itertools import islice

from engine.errors import ApiAuthError, ApiError, ApiRetryableError
from engine.policy.decision import Decision
from engine.policy.document import Policy, PolicyLimits
from engine.policy.evaluator import Evaluator
from engine.runs.checkpoints import Checkpoint, Step, no_checkpoint
from engine.runs.lease import LeaseKeeper
from engine.runs.patch import patch_body
from engine.runs.ports import DecisionStore, FlipApi, Outcome, PlannedChangeLike, ProgressCallback
from engine.runs.report import HeldChange
from engine.runs.states import ChangeState, Stage

__all__ = [
    "FOUND_APPLIED",
    "ChangeCheck",
    "ChangeSender",
    "CircuitBreakers",
    "failure_state",
    "leaving_active_reason",
    "missing_groups",
    "safe_message",
    "send_as_planned",
    "superseded_when_stale",
]

# Why a change left in flight (or failed ambiguously) is ``recovered``: the enrollment shows it.
FOUND_APPLIED = "found applied when re-checked after an interrupted or failed attempt"
# Right before a PATCH: the outcome to record instead of sending (stale, superseded...), or None.
ChangeCheck = Callable[[PlannedChangeLike], Outcome | None]


def send_as_planned(_change: PlannedChangeLike) -> Outcome | None:
    """The check of a run that does not re-read (``--no-recheck``): every change is sent."""
    return None


def leaving_active_reason(policy: Policy, decision: Decision | None) -> str | None:
    """Why a change must be held: a move out of ACTIVE the policy does not allow; None otherwise."""
    if decision is None or decision.current_status != "ACTIVE" or not decision.status_changes:
        return None
    allowed = {status.value for status in policy.document.limits.allow_leaving_active}
    if decision.status in allowed:
        return None
    return f"ACTIVE -> {decision.status} is not in the policy's allow_leaving_active"


@dataclass(frozen=True)
class CircuitBreakers:
    """The limits that stop a run before anything is sent: the number of changes
    (``--max-changes``, else the policy's ``limits.max_changes``) and the share of the
    evaluated enrollments the changes reject (``limits.max_reject_ratio``)."""

    limits: PolicyLimits
    max_changes_flag: int | None = None

    @property
    def max_changes(self) -> int | None:
        return self.max_changes_flag if self.max_changes_flag is not None else self.limits.max_changes

    def tripped(self, changes: int, rejects: int, evaluated: int, *, plan: bool = False) -> str | None:
        """Why ``changes`` changes (``rejects`` of them rejections, of ``evaluated`` enrollments)
        must not be sent, or None. ``plan``: the changes are a saved plan's."""
        limit = self.max_changes
        if limit is not None and changes > limit:
            return f"{changes} changes planned, more than the limit of {limit}"
        most = self.limits.max_reject_ratio
        if most is None or not evaluated or rejects / evaluated <= most:
            return None
        ratio = rejects / evaluated
        if plan:
            return (
                f"the plan rejects {rejects} of {evaluated} evaluated enrollments ({ratio:.0%}), "
                f"above the policy's max_reject_ratio of {most:.0%}"
            )
        return (
            f"the policy would reject {rejects} of {evaluated} evaluated enrollments "
            f"({ratio:.0%}), above its max_reject_ratio of {most:.0%}"
        )


def missing_groups(api: FlipApi, program: str, wanted: Iterable[str]) -> list[str]:
    """The groups of ``wanted`` the program does not have yet, sorted (one list call; none
    when nothing is wanted)."""
    wanted = sorted(set(wanted))
    if not wanted:
        return []
    existing = {group.id for group in api.list_groups(program)}
    return [group_id for group_id in wanted if group_id not in existing]


def superseded_when_stale(
    api: FlipApi, policy: Policy, evaluator: Evaluator, planned: Mapping[str | None, Decision]
) -> ChangeCheck:
    """A live run's check: each enrollment read again right before its PATCH; a change that no
    longer stands is recorded ``superseded`` instead of sent."""

    def check(change: PlannedChangeLike) -> Outcome | None:
        stale = stale_reason(api, policy, evaluator, change, planned.get(change.enrollment_id))
        if stale is None:
            return None
        return Outcome(change.decision_id, ChangeState.SUPERSEDED, error_message=stale)

    return check


def stale_reason(
    api: FlipApi, policy: Policy, evaluator: Evaluator, change: PlannedChangeLike, planned: Decision | None
) -> str | None:
    """Why the planned change must not be sent now, or None when it still stands."""
    fresh = api.get_enrollment_dict(change.enrollment_id)
    if planned is not None and fresh.get("updated_at") == planned.updated_at:
        return None
    status = fresh.get("status")
    if status not in policy.applies_to:
        return f"status changed to {status} since it was listed (a person's decision is kept)"
    body, problem = patch_body(evaluator.evaluate(fresh))
    if problem is not None or body != change.body:
        return "the enrollment changed since it was listed; re-planned on the next run"
    return None


class ChangeSender:
    """Sends one run's changes through the outbox, counting their final states in ``states``.

    The run (a live run, an ``apply`` or a ``review approve``) holds the program's lock;
    ``token`` is its fencing token and ``lease`` keeps it alive while the changes go out.
    """

    def __init__(
        self,
        api: FlipApi,
        store: DecisionStore,
        *,
        token: int | None,
        states: Counter[ChangeState],
        lease: LeaseKeeper,
        concurrency: int,
        stop: threading.Event,
        progress: ProgressCallback | None = None,
        checkpoint: Checkpoint = no_checkpoint,
    ) -> None:
        self.api = api
        self.store = store
        self.token = token
        self.states = states
        self.lease = lease
        self.workers = max(1, concurrency)
        self.stop = stop
        self.progress = progress or (lambda _stage, _done, _total: None)
        self.checkpoint = checkpoint

    def hold(self, changes: Sequence[PlannedChangeLike], reason: str) -> None:
        """Record ``changes`` as ``held`` (kept back for a person) with ``reason``."""
        for change in changes:
            self.lease.keep()
            self.store.record_outcome(
                change.decision_id, ChangeState.HELD, fencing_token=self.token, error_message=reason
            )
        self.states[ChangeState.HELD] += len(changes)

    def hold_leaving_active(
        self,
        policy: Policy,
        changes: Iterable[PlannedChangeLike],
        decision_of: Callable[[PlannedChangeLike], Decision | None],
        held: list[HeldChange] | None = None,
    ) -> list[PlannedChangeLike]:
        """Hold the moves out of ACTIVE the policy does not allow (adding them to ``held``);
        the changes still to send."""
        to_send: list[PlannedChangeLike] = []
        for change in changes:
            decision = decision_of(change)
            reason = leaving_active_reason(policy, decision)
            if reason is None or decision is None:
                to_send.append(change)
                continue
            self.hold([change], reason)
            if held is not None:
                held.append(HeldChange(change.enrollment_id, decision.status))
        return to_send

    def create_groups(self, program: str, group_ids: Iterable[str], created: list[str]) -> None:
        """Create the program's groups ``group_ids`` (once the circuit breakers let the run
        through), adding to ``created`` the ones this call made."""
        for group_id in group_ids:
            _group, made = self.api.ensure_group(program, group_id, group_id)
            self.checkpoint(Step.AFTER_GROUP_CREATE)
            if made:
                created.append(group_id)

    def send(self, changes: Sequence[PlannedChangeLike], check: ChangeCheck) -> None:
        """Send ``changes`` (record, then act, then record). ``check`` re-reads each one right
        before its PATCH and returns the outcome to record instead, or None to send it."""
        pool = _PatchPool(self, check)
        total = len(changes)
        for done, state in enumerate(pool.send(changes), start=1):
            self.states[state] += 1
            self.progress(Stage.APPLYING, done, total)
        if pool.auth_error is not None:
            raise pool.auth_error


class _PatchPool:
    """Sends planned changes on a thread pool: record, then act, then record.

    Store writes are batched so a run is not limited by one transaction per change: a batch
    of changes is marked ``in_flight`` in one transaction before any of them is sent, and
    outcomes are recorded together within a fraction of a second after their requests. A
    crash in between leaves changes ``in_flight``, which the next run reconciles.
    """

    FLUSH_EVERY = 32  # outcomes
    FLUSH_AFTER_S = 0.25

    def __init__(self, sender: ChangeSender, check: ChangeCheck) -> None:
        self.sender = sender
        self.api = sender.api
        self.store = sender.store
        self.token = sender.token
        self.check = check
        self.auth_error: ApiAuthError | None = None
        self.workers = sender.workers
        self.outcomes: list[Outcome] = []
        self.not_sent: list[int] = []
        self.flushed_at = time.monotonic()

    def halted(self) -> bool:
        return self.sender.stop.is_set() or self.auth_error is not None

    def send(self, changes: Iterable[PlannedChangeLike]) -> Iterator[ChangeState]:
        """Yield each change's final state as it completes; stop early on a signal or a 401."""
        queue = iter(changes)
        window = self.workers * 4  # bounded look-ahead: memory stays flat for any number of changes
        try:
            with ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="applier") as pool:
                pending: set[Future[Outcome | None]] = set()
                while True:
                    if len(pending) <= window // 2 and not self.halted():
                        batch = list(islice(queue, window - len(pending)))
                        if batch:
                            self.store.mark_in_flight_many(
                                [c.decision_id for c in batch], fencing_token=self.token
                            )
                            pending |= {pool.submit(self.send_one, change) for change in batch}
                    if not pending:
                        return
                    finished, pending = wait(pending, timeout=self.FLUSH_AFTER_S, return_when=FIRST_COMPLETED)
                    self.sender.lease.keep()  # also while a slow request holds every worker
                    for future in finished:
                        outcome = future.result()
                        if outcome is not None:
                            self.outcomes.append(outcome)
                            yield outcome.state
                    self.flush(force=False)
        finally:
            self.flush(force=True)
            if self.not_sent:
                # Marked in flight but never sent (a signal or a 401 stopped the run): planned again.
                self.store.release_in_flight(self.not_sent, fencing_token=self.token)

    def flush(self, *, force: bool) -> None:
        due = (
            len(self.outcomes) >= self.FLUSH_EVERY or time.monotonic() - self.flushed_at >= self.FLUSH_AFTER_S
        )
        if self.outcomes and (force or due):
            self.store.record_outcomes(self.outcomes, fencing_token=self.token)
            self.outcomes = []
            self.flushed_at = time.monotonic()

    def send_one(self, change: PlannedChangeLike) -> Outcome | None:
        if self.halted():
            self.not_sent.append(change.decision_id)
            return None
        try:
            instead = self.check(change)
        except ApiAuthError as exc:
            self.auth_error = exc
            self.not_sent.append(change.decision_id)
            return None
        except ApiError as exc:
            return self.failure(change, exc, ChangeState.FAILED_RETRYABLE)
        if instead is not None:
            return instead
        return self.patch(change)

    def patch(self, change: PlannedChangeLike) -> Outcome:
        self.sender.checkpoint(Step.IN_FLIGHT)  # the step right before its PATCH
        try:
            self.api.update_enrollment(change.enrollment_id, change.body)
        except ApiAuthError as exc:
            self.auth_error = exc
            return self.failure(change, exc, ChangeState.FAILED_RETRYABLE, self.http_attempts())
        except ApiError as exc:
            return self.failure(change, exc, failure_state(exc), self.http_attempts())
        self.sender.checkpoint(Step.AFTER_PATCH)
        return Outcome(change.decision_id, ChangeState.APPLIED, attempts=self.http_attempts())

    def http_attempts(self) -> int | None:
        """The HTTP attempts of this thread's last API call, when the client counts them.

        mark_in_flight counts one attempt per send; the client's retries (dropped
        connections, 5xx, 429) are attempts too, and the history must show them. Read in
        the thread that made the call: ``FlipClient.last_attempts`` is per thread.
        """
        attempts = self.api.last_attempts
        return attempts if attempts > 0 else None

    def failure(
        self, change: PlannedChangeLike, exc: ApiError, state: ChangeState, attempts: int | None = None
    ) -> Outcome:
        return Outcome(
            change.decision_id,
            state,
            attempts=attempts,
            http_status=exc.status_code,
            api_error_code=exc.code,
            api_error_locations=exc.locations(),
            error_message=safe_message(exc),
        )


def failure_state(exc: ApiError) -> ChangeState:
    """The state a failed PATCH leaves its change in: deferred (a long ``Retry-After``),
    failed_retryable (no answer, 5xx, 429) or failed_permanent (any other 4xx)."""
    if isinstance(exc, ApiRetryableError):
        return ChangeState.DEFERRED if exc.retry_after is not None else ChangeState.FAILED_RETRYABLE
    if exc.status_code is None or exc.status_code >= 500 or exc.status_code == 429:
        return ChangeState.FAILED_RETRYABLE
    return ChangeState.FAILED_PERMANENT


def safe_message(exc: ApiError) -> str:
    """Our own description of a failure: the API's text may quote personal data.

    Errors with no HTTP status (connection, timeout, malformed answer) carry only the
    client's own words, so those are kept.
    """
    if exc.status_code is None:
        return str(exc)
    code = f" {exc.code}" if exc.code else ""
    return f"HTTP {exc.status_code}{code}"
