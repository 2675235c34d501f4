"""One run of a policy over a Flip program: list, evaluate, store, then preview or apply.

The store is the outbox. A live run records every needed change as ``planned`` before any
request, marks it ``in_flight`` right before its PATCH and records the outcome right after;
no database transaction is open across an HTTP call. A run first reconciles what a crashed
run left in flight, and re-reads each enrollment right before changing it, so a person's
decision in the Flip dashboard is never overwritten with stale data.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import islice
from typing import Any, TypeVar

from engine.clock import utc_now
from engine.config import DEFAULT_CONCURRENCY
from engine.errors import ApiAuthError, ApiError, ApiRetryableError, AutoapproveError, RunAborted
from engine.policy.decision import Action, Decision
from engine.policy.document import Policy
from engine.policy.evaluator import Evaluator
from engine.runs.checkpoints import Checkpoint, Step, no_checkpoint
from engine.runs.digest import decision_digest
from engine.runs.patch import patch_body, patch_is_applied
from engine.runs.ports import DecisionStore, FlipApi, Outcome, PlannedChangeLike, ProgramLockLike
from engine.runs.report import HeldChange, RunReport
from engine.runs.review import sort_for_review
from engine.runs.spool import DecisionSpool
from engine.runs.states import AMBIGUOUS_STATES, ChangeState, RunMode, RunOutcome, Stage

ProgressCallback = Callable[[Stage, int, int], None]
# Sees each raw enrollment with its decision as the list streams in (the HTML report explains
# them there: the run keeps no raw enrollment).
EvaluatedCallback = Callable[[dict[str, Any], Decision], None]
# Right before a PATCH: the outcome to record instead of sending (stale, superseded...), or None.
ChangeCheck = Callable[[PlannedChangeLike], Outcome | None]
LockFactory = Callable[[str, str], AbstractContextManager[ProgramLockLike]]
Clock = Callable[[], float]  # monotonic seconds
T = TypeVar("T")


# A run stopped by a signal says so in its message too.
INTERRUPTED_MESSAGE = RunOutcome.INTERRUPTED.value


def default_holder() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


@dataclass(frozen=True)
class RunSettings:
    """How one run behaves. ``live=False`` (the default) sends nothing."""

    live: bool = False
    now: datetime | None = None
    max_changes: int | None = None
    concurrency: int = DEFAULT_CONCURRENCY
    recheck: bool = True  # re-read each enrollment right before changing it
    holder: str = field(default_factory=default_holder)
    plan: bool = False  # save the changes as a plan (``autoapprove plan``); sends nothing
    api_url: str = ""  # where the API is: recorded with a plan, checked when it is applied


class _LeaseKeeper:
    """Renews the program lock's lease well before it expires during a long run.

    ``keep`` is cheap (one clock read) and is called at every step of every long stage:
    listing and evaluating, reconciling, storing and applying.
    """

    def __init__(
        self, lock: ProgramLockLike | None, clock: Clock = time.monotonic, every_s: float = 60.0
    ) -> None:
        expires_at = lock.expires_at if lock is not None else None
        if expires_at is not None:  # renew well before a short lease runs out
            remaining = (expires_at - datetime.now(UTC)).total_seconds()
            every_s = min(every_s, max(remaining / 3, 0.1))
        self.lock = lock
        self.clock = clock
        self.every_s = every_s
        self.last = clock()

    def keep(self) -> None:
        if self.lock is not None and self.clock() - self.last >= self.every_s:
            self.lock.renew()
            self.last = self.clock()

    def renewing(self, items: Iterable[T]) -> Iterator[T]:
        """``items``, keeping the lease as they are consumed (the store consumes a batch
        before it opens the batch's transaction, so no renewal happens inside one)."""
        for item in items:
            self.keep()
            yield item


class RunService:
    """Runs one policy against one program through an API and a store (both injected)."""

    def __init__(
        self,
        policy: Policy,
        api: FlipApi,
        store: DecisionStore,
        settings: RunSettings,
        *,
        lock_factory: LockFactory | None = None,
        progress: ProgressCallback | None = None,
        stop: threading.Event | None = None,
        on_evaluated: EvaluatedCallback | None = None,
        clock: Clock = time.monotonic,
        on_finish: Callable[[RunReport], None] | None = None,
        on_decision: Callable[[Decision], None] | None = None,
        checkpoint: Checkpoint = no_checkpoint,
    ) -> None:
        self.policy = policy
        self.api = api
        self.store = store
        self.settings = settings
        self.now = (settings.now or utc_now()).astimezone(UTC).replace(microsecond=0)
        self.progress = progress or (lambda _stage, _done, _total: None)
        self.stop = stop or threading.Event()
        self.on_finish = on_finish  # sees every recorded run's report, failed ones included
        # Each decision as it is decided (streamed output); without it the report keeps them all.
        self.on_decision = on_decision
        self._started = time.monotonic()
        self._version_id = 0
        self._lock_factory = lock_factory
        self._on_evaluated = on_evaluated
        self.checkpoint = checkpoint  # called at each named step (engine.runs.checkpoints)
        self._clock = clock
        self._lease = _LeaseKeeper(None, clock)
        self._for_review: set[str] = set()  # enrollments whose change waits for (or was refused by) a person
        # Shared by the apply threads: native sessions are per thread inside the engine.
        self._evaluator = Evaluator(policy, self.now, trace=False)

    # -- the run -------------------------------------------------------------------------

    def run(self, program_id: str | None = None) -> RunReport:
        program = program_id or self.policy.program_id
        if not self.settings.live or self._lock_factory is None:
            return self._run(program, lock=None)
        with self._lock_factory(program, self.settings.holder) as lock:
            return self._run(program, lock)

    def _run(self, program: str, lock: ProgramLockLike | None) -> RunReport:
        self._lease = _LeaseKeeper(lock, self._clock)
        self._started = time.monotonic()
        token = lock.fencing_token if lock is not None else None
        version_id = self._version_id = self.store.save_policy_version(
            program,
            self.policy.name or program,
            self.policy.version,
            self.policy.content_hash,
            self.policy.source_text,
        )
        mode = RunMode.LIVE if self.settings.live else RunMode.PLAN if self.settings.plan else RunMode.DRY_RUN
        run_id = self.store.start_run(
            program, mode, version_id, self.now, holder=self.settings.holder, fencing_token=token
        )
        report = RunReport(run_id, program, self.settings.live)
        try:
            if self.settings.live:
                # Under the lock no other live run is alive: any still "running" was killed.
                self.store.interrupt_running_runs(program, except_run_id=run_id, fencing_token=token)
                report.recovered = self._reconcile(program, run_id, token)
            with self._list_and_evaluate(program, report) as decided:
                self._store_decisions(run_id, program, decided, token)
            self.checkpoint(Step.AFTER_PLANNING)
            self._find_missing_groups(program, report)
            if self.settings.live:
                self._apply(run_id, report, token)
            else:
                report.awaiting_approval = report.needs_approval
            if self.settings.plan:
                report.plan_id = self.store.create_plan(program, run_id, self.settings.api_url)
        except RunAborted as exc:
            self._finish(run_id, report, RunOutcome.ABORTED, str(exc), token)
            raise
        except ApiAuthError as exc:
            self._finish(run_id, report, RunOutcome.FAILED, f"API key refused: {_safe_message(exc)}", token)
            raise
        except ApiError as exc:
            # Our own words only: the API's message may quote personal data.
            self._finish(run_id, report, RunOutcome.FAILED, f"Flip API error: {_safe_message(exc)}", token)
            raise
        except AutoapproveError as exc:
            self._finish(run_id, report, RunOutcome.FAILED, str(exc), token)
            raise
        except KeyboardInterrupt:
            self._finish(run_id, report, RunOutcome.INTERRUPTED, INTERRUPTED_MESSAGE, token)
            raise
        outcome = RunOutcome.INTERRUPTED if self.stop.is_set() else RunOutcome.COMPLETED
        self._finish(run_id, report, outcome, report.message, token)
        return report

    def _finish(
        self,
        run_id: int,
        report: RunReport,
        outcome: RunOutcome,
        message: str | None,
        token: int | None = None,
    ) -> None:
        report.outcome, report.message = outcome, message
        report.duration_s = time.monotonic() - self._started
        self.store.finish_run(run_id, outcome, report.counts(), message, fencing_token=token)
        if self.on_finish is not None:
            self.on_finish(report)

    # -- steps ---------------------------------------------------------------------------

    def _list_and_evaluate(self, program: str, report: RunReport) -> DecisionSpool:
        """Evaluate each enrollment as the list streams in; count, stream out and spool it.

        Nothing is stored or sent until the whole list has arrived: a malformed or truncated
        answer raises here and the run records no decision. Raw enrollments are dropped as
        soon as they are evaluated, and decisions go to a spool on disk (or, without a
        decision sink, to the report), so memory stays flat however long the list.
        """
        evaluator, sink, version = self._evaluator, self.on_decision, self._version_id
        observe = self._on_evaluated
        # A plan, and a change left for a person, keep what they read, so that one found drifted
        # when it is applied can say which facts moved.
        plan = self.settings.plan
        reviewed = bool(self.policy.approval_statuses or self.policy.approval_rules)
        tracer = Evaluator(self.policy, self.now, trace=True) if plan or reviewed else None
        latest = self.store.latest_digests(program)
        expected = len(latest)  # the last run's size: an estimate for the ETA
        spool = DecisionSpool(on_disk=sink is not None)
        seen = 0
        try:
            for raw in self.api.iter_enrollment_dicts(program):
                self._lease.keep()
                decision = evaluator.evaluate(raw)
                if decision.action is Action.UPDATE and reviewed and self.policy.requires_approval(decision):
                    report.needs_approval += 1
                traced = tracer is not None and decision.action is Action.UPDATE
                if traced and (plan or self.policy.requires_approval(decision)):
                    assert tracer is not None
                    decision = tracer.evaluate(raw)
                seen += 1
                report.tally(decision)
                if sink is None:
                    report.decisions.append(decision)
                else:
                    sink(decision)
                if observe is not None:
                    observe(raw, decision)
                if self._must_store(decision, latest, version):
                    spool.append(decision)
                else:
                    report.unchanged += 1
                if seen % 1000 == 0:
                    self.progress(Stage.EVALUATING, seen, expected if seen < expected else 0)
        except BaseException:
            spool.close()
            report.clear_tally()  # the run decided nothing: a broken list stores no counts either
            raise
        self.progress(Stage.EVALUATING, seen, seen)
        return spool

    def _must_store(self, decision: Decision, latest: Mapping[str, int], version: int) -> bool:
        """A planned change (live or plan run) always; otherwise only a decision that differs
        from the enrollment's latest stored one."""
        if (self.settings.live or self.settings.plan) and decision.action is Action.UPDATE:
            return True
        if decision.enrollment_id is None:
            return True
        return latest.get(decision.enrollment_id) != decision_digest(decision, version)

    def _store_decisions(self, run_id: int, program: str, decided: DecisionSpool, token: int | None) -> None:
        total = len(decided)

        def counted() -> Iterator[Decision]:
            for done, decision in enumerate(decided, start=1):
                yield decision
                if done % 5000 == 0 and done < total:  # the last one is reported below
                    self.progress(Stage.STORING, done, total)

        self.store.add_decisions(run_id, program, self._lease.renewing(counted()), fencing_token=token)
        self.progress(Stage.STORING, total, total)

    def _find_missing_groups(self, program: str, report: RunReport) -> None:
        wanted = sorted(report.groups_wanted)
        if not wanted:
            return
        existing = {group.id for group in self.api.list_groups(program)}
        report.missing_groups = [g for g in wanted if g not in existing]

    def _create_missing_groups(self, program: str, report: RunReport) -> None:
        # Called from _apply only once the circuit breakers let the run through: a run a
        # safety limit stops must not write anything, a new group included.
        for group_id in report.missing_groups:
            _group, created = self.api.ensure_group(program, group_id, group_id)
            self.checkpoint(Step.AFTER_GROUP_CREATE)
            if created:
                report.created_groups.append(group_id)

    def _reconcile(self, program: str, run_id: int, token: int | None) -> int:
        """Settle what earlier (crashed) runs left open before planning anew."""
        recovered = 0
        leftovers = self.store.open_changes(program, before_run_id=run_id)
        superseded: list[int] = []
        for change in leftovers:
            self._lease.keep()
            # A failed_retryable change may have taken effect too: a PATCH that timed out or
            # lost its connection after the API applied it. Re-check it like one in flight,
            # so its history says it was applied instead of "re-planned".
            ambiguous = change.change_state in AMBIGUOUS_STATES
            if ambiguous and self._already_applied(change):
                self.store.record_outcome(
                    change.decision_id, ChangeState.RECOVERED, fencing_token=token,
                    error_message="found applied when re-checked after an interrupted or failed attempt",
                )  # fmt: skip
                recovered += 1
            else:
                superseded.append(change.decision_id)
        if superseded:
            self.store.supersede(superseded, f"re-planned by run {run_id}", fencing_token=token)
        return recovered

    def _already_applied(self, change: PlannedChangeLike) -> bool:
        try:
            current = self.api.get_enrollment_dict(change.enrollment_id)
        except ApiAuthError:
            raise
        except ApiError:
            return False
        return patch_is_applied(change.body, current)

    # -- applying ------------------------------------------------------------------------

    def _apply(self, run_id: int, report: RunReport, token: int | None) -> None:
        planned = self._queue_for_review(report, list(self.store.planned_changes(run_id)), token)
        decisions = {d.enrollment_id: d for d in report.changes}
        to_send, held = self._guard_active(planned, decisions)
        for change, reason in held:
            self._lease.keep()
            self.store.record_outcome(
                change.decision_id, ChangeState.HELD, fencing_token=token, error_message=reason
            )
            report.change_states[ChangeState.HELD] += 1
            decision = decisions.get(change.enrollment_id)
            report.held.append(HeldChange(change.enrollment_id, decision.status if decision else None))
        self._circuit_breakers(run_id, report, to_send, token)
        self._create_missing_groups(report.program_id, report)
        self._send_all(to_send, decisions, report, token)

    def _queue_for_review(
        self, report: RunReport, planned: list[PlannedChangeLike], token: int | None
    ) -> list[PlannedChangeLike]:
        """Record the changes a person must approve as waiting; return the ones to send."""
        program = report.program_id
        queue = sort_for_review(
            self.policy,
            report.changes,
            self.store.review_queue(program),
            self.store.refused_changes(program),
        )
        outcomes: list[Outcome] = []
        for change in planned:
            enrollment_id = change.enrollment_id
            if enrollment_id in queue.queued:
                outcomes.append(Outcome(change.decision_id, ChangeState.AWAITING_APPROVAL))
            elif enrollment_id in queue.kept:
                waiting = queue.kept[enrollment_id]
                outcomes.append(Outcome(change.decision_id, ChangeState.SUPERSEDED, error_message=(
                    f"the same change already waits for approval as change {waiting}")))  # fmt: skip
            elif enrollment_id in queue.blocked:
                refusal = queue.blocked[enrollment_id]
                when = f"{refusal.reviewed_at:%Y-%m-%d %H:%M}" if refusal.reviewed_at else "earlier"
                outcomes.append(Outcome(change.decision_id, ChangeState.HELD, error_message=(
                    f"refused by {refusal.reviewed_by} on {when} (change {refusal.decision_id}); not "
                    "proposed again until the enrollment's facts or the policy change")))  # fmt: skip
                report.change_states[ChangeState.HELD] += 1
        if outcomes:
            self.store.record_outcomes(outcomes, fencing_token=token)
        if queue.superseded:
            reason = f"the enrollment or the decision changed since it was queued (run {report.run_id})"
            self.store.supersede(queue.superseded, reason, fencing_token=token)
        report.awaiting_approval = queue.waiting
        if queue.waiting:
            report.change_states[ChangeState.AWAITING_APPROVAL] += queue.waiting
        self.checkpoint(Step.AFTER_QUEUEING)
        self._for_review = queue.not_sent()
        return [change for change in planned if change.enrollment_id not in self._for_review]

    def _guard_active(
        self, planned: list[PlannedChangeLike], decisions: dict[str | None, Decision]
    ) -> tuple[list[PlannedChangeLike], list[tuple[PlannedChangeLike, str]]]:
        allowed = {s.value for s in self.policy.document.limits.allow_leaving_active}
        to_send, held = [], []
        for change in planned:
            decision = decisions.get(change.enrollment_id)
            leaving = decision is not None and decision.current_status == "ACTIVE" and decision.status_changes
            if leaving and decision is not None and decision.status not in allowed:
                held.append(
                    (change, f"ACTIVE -> {decision.status} is not in the policy's allow_leaving_active")
                )
            else:
                to_send.append(change)
        return to_send, held

    def _circuit_breakers(
        self, run_id: int, report: RunReport, to_send: list[PlannedChangeLike], token: int | None
    ) -> None:
        limits = self.policy.document.limits
        reason = None
        max_changes = (
            self.settings.max_changes if self.settings.max_changes is not None else limits.max_changes
        )
        if max_changes is not None and len(to_send) > max_changes:
            reason = f"{len(to_send)} changes planned, more than the limit of {max_changes}"
        evaluated = report.evaluated
        # A rejection that waits for a person is not sent by this run: it does not count.
        rejects = sum(
            1
            for d in report.changes
            if d.status == "REJECTED" and d.status_changes and d.enrollment_id not in self._for_review
        )
        if reason is None and limits.max_reject_ratio is not None and evaluated:
            ratio = rejects / evaluated
            if ratio > limits.max_reject_ratio:
                reason = (
                    f"the policy would reject {rejects} of {evaluated} evaluated enrollments "
                    f"({ratio:.0%}), above its max_reject_ratio of {limits.max_reject_ratio:.0%}"
                )
        if reason is None:
            return
        for change in to_send:
            self.store.record_outcome(
                change.decision_id, ChangeState.HELD, fencing_token=token, error_message=reason
            )
        report.change_states[ChangeState.HELD] += len(to_send)
        raise RunAborted(reason)

    def _send_all(
        self,
        changes: list[PlannedChangeLike],
        decisions: dict[str | None, Decision],
        report: RunReport,
        token: int | None,
    ) -> None:
        def superseded(change: PlannedChangeLike) -> Outcome | None:
            stale = self.stale_reason(change, decisions.get(change.enrollment_id))
            return (
                None
                if stale is None
                else Outcome(change.decision_id, ChangeState.SUPERSEDED, error_message=stale)
            )

        self.send_changes(changes, superseded, report.change_states, token)

    def send_changes(
        self,
        changes: list[PlannedChangeLike],
        check: ChangeCheck,
        states: Counter[ChangeState],
        token: int | None,
        lock: ProgramLockLike | None = None,
    ) -> None:
        """Send changes through the outbox (record, then act, then record), counting their
        final states in ``states``. ``check`` re-reads each change right before its PATCH and
        returns the outcome to record instead of sending it, or ``None`` to send it."""
        if lock is not None:
            self._lease = _LeaseKeeper(lock, self._clock)
        applier = _Applier(self, check, token)
        total = len(changes)
        for done, state in enumerate(applier.send(changes), start=1):
            states[state] += 1
            self.progress(Stage.APPLYING, done, total)
        if applier.auth_error is not None:
            raise applier.auth_error

    def keep_lease(self) -> None:
        """Renew the program lock's lease when it is due (cheap to call often)."""
        self._lease.keep()

    def stale_reason(self, change: PlannedChangeLike, planned: Decision | None) -> str | None:
        """Why the planned change must not be sent now, or None when it still stands."""
        if not self.settings.recheck:
            return None
        fresh = self.api.get_enrollment_dict(change.enrollment_id)
        if planned is not None and fresh.get("updated_at") == planned.updated_at:
            return None
        status = fresh.get("status")
        if status not in self.policy.applies_to:
            return f"status changed to {status} since it was listed (a person's decision is kept)"
        again = self._evaluator.evaluate(fresh)
        body, problem = patch_body(again)
        if problem is not None or body != change.body:
            return "the enrollment changed since it was listed; re-planned on the next run"
        return None


class _Applier:
    """Sends planned changes on a thread pool: record, then act, then record.

    Store writes are batched so a run is not limited by one transaction per change: a batch
    of changes is marked ``in_flight`` in one transaction before any of them is sent, and
    outcomes are recorded together within a fraction of a second after their requests. A
    crash in between leaves changes ``in_flight``, which the next run reconciles.
    """

    FLUSH_EVERY = 32  # outcomes
    FLUSH_AFTER_S = 0.25

    def __init__(self, service: RunService, check: ChangeCheck, token: int | None) -> None:
        self.service = service
        self.store = service.store
        self.check = check
        self.token = token
        self.auth_error: ApiAuthError | None = None
        self.workers = max(1, service.settings.concurrency)
        self.outcomes: list[Outcome] = []
        self.not_sent: list[int] = []
        self.flushed_at = time.monotonic()

    def halted(self) -> bool:
        return self.service.stop.is_set() or self.auth_error is not None

    def send(self, changes: Iterable[PlannedChangeLike]) -> Iterator[ChangeState]:
        """Yield each change's final state as it completes; stop early on a signal or a 401."""
        queue = iter(changes)
        window = self.workers * 4  # bounded look-ahead: memory stays flat for any number of changes
        try:
            with ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="applier") as pool:
                pending: set[Future[Outcome | None]] = set()
                exhausted = False
                while True:
                    if not exhausted and len(pending) <= window // 2 and not self.halted():
                        batch = list(islice(queue, window - len(pending)))
                        exhausted = len(batch) < window - len(pending)
                        self.store.mark_in_flight_many(
                            [c.decision_id for c in batch], fencing_token=self.token
                        )
                        pending |= {pool.submit(self.send_one, change) for change in batch}
                    if not pending:
                        return
                    finished, pending = wait(pending, timeout=self.FLUSH_AFTER_S, return_when=FIRST_COMPLETED)
                    self.service.keep_lease()  # also while a slow request holds every worker
                    for future in finished:
                        outcome = future.result()
                        if outcome is not None:
                            self.outcomes.append(outcome)
                            yield outcome.state
                    self.flush(force=False)
        finally:
            self.flush(force=True)

    def flush(self, *, force: bool) -> None:
        due = (
            len(self.outcomes) >= self.FLUSH_EVERY or time.monotonic() - self.flushed_at >= self.FLUSH_AFTER_S
        )
        if self.outcomes and (force or due):
            self.store.record_outcomes(self.outcomes, fencing_token=self.token)
            self.outcomes = []
            self.flushed_at = time.monotonic()
        if force and self.not_sent:
            # Marked in flight but never sent (a signal or a 401 stopped the run): planned again.
            self.store.release_in_flight(self.not_sent, fencing_token=self.token)
            self.not_sent = []

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
        self.service.checkpoint(Step.IN_FLIGHT)  # the step right before its PATCH
        try:
            self.service.api.update_enrollment(change.enrollment_id, change.body)
        except ApiAuthError as exc:
            self.auth_error = exc
            return self.failure(change, exc, ChangeState.FAILED_RETRYABLE, self.http_attempts())
        except ApiError as exc:
            return self.failure(change, exc, _failure_state(exc), self.http_attempts())
        self.service.checkpoint(Step.AFTER_PATCH)
        return Outcome(change.decision_id, ChangeState.APPLIED, attempts=self.http_attempts())

    def http_attempts(self) -> int | None:
        """The HTTP attempts of this thread's last API call, when the client counts them.

        mark_in_flight counts one attempt per send; the client's retries (dropped
        connections, 5xx, 429) are attempts too, and the history must show them. Read in
        the thread that made the call: ``FlipClient.last_attempts`` is per thread.
        """
        attempts = self.service.api.last_attempts
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
            error_message=_safe_message(exc),
        )


def _failure_state(exc: ApiError) -> ChangeState:
    if isinstance(exc, ApiRetryableError):
        return ChangeState.DEFERRED if exc.retry_after is not None else ChangeState.FAILED_RETRYABLE
    if exc.status_code is None or exc.status_code >= 500 or exc.status_code == 429:
        return ChangeState.FAILED_RETRYABLE
    return ChangeState.FAILED_PERMANENT


def _safe_message(exc: ApiError) -> str:
    """Our own description of a failure: the API's text may quote personal data.

    Errors with no HTTP status (connection, timeout, malformed answer) carry only the
    client's own words, so those are kept.
    """
    if exc.status_code is None:
        return str(exc)
    code = f" {exc.code}" if exc.code else ""
    return f"HTTP {exc.status_code}{code}"
