"""One run of a policy over a Flip program: list, evaluate, store, then preview or apply.

The store is the outbox. A live run records every needed change as ``planned`` before any
request, marks it ``in_flight`` right before its PATCH and records the outcome right after;
no database transaction is open across an HTTP call (the sending is ``engine.runs.sending``).
A run first reconciles what a crashed run left in flight, and re-reads each enrollment right
before changing it, so a person's decision in the Flip dashboard is never overwritten with
stale data.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from engine.clock import utc_now
from engine.config import DEFAULT_CONCURRENCY
from engine.errors import ApiAuthError, ApiError, AutoapproveError, RunAborted
from engine.policy.decision import Action, Decision
from engine.policy.document import Policy
from engine.policy.evaluator import Evaluator
from engine.runs.checkpoints import Checkpoint, Step, no_checkpoint
from engine.runs.digest import decision_digest
from engine.runs.lease import LeaseKeeper, MonotonicClock
from engine.runs.patch import patch_is_applied
from engine.runs.ports import DecisionStore, FlipApi, ProgramLockLike, ProgressCallback
from engine.runs.queueing import queue_for_review
from engine.runs.report import RunReport
from engine.runs.sending import (
    FOUND_APPLIED,
    ChangeCheck,
    ChangeSender,
    CircuitBreakers,
    missing_groups,
    safe_message,
    send_as_planned,
    superseded_when_stale,
)
from engine.runs.spool import DecisionSpool
from engine.runs.states import AMBIGUOUS_STATES, ChangeState, RunMode, RunOutcome, Stage

# Sees each raw enrollment with its decision as the list streams in (the HTML report explains
# them there: the run keeps no raw enrollment).
EvaluatedCallback = Callable[[dict[str, Any], Decision], None]
LockFactory = Callable[[str, str], AbstractContextManager[ProgramLockLike]]


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
        clock: MonotonicClock = time.monotonic,
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
        self._lock_factory = lock_factory
        self._on_evaluated = on_evaluated
        self.checkpoint = checkpoint  # called at each named step (engine.runs.checkpoints)
        self._clock = clock  # times the run and its lease
        self._lease: LeaseKeeper  # each run's own (``_run``)
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
        self._lease = LeaseKeeper(lock, self._clock)
        started = self._clock()
        token = lock.fencing_token if lock is not None else None
        version_id = self.store.save_policy_version(
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
            with self._list_and_evaluate(program, version_id, report) as decided:
                self._store_decisions(run_id, program, decided, token)
            self.checkpoint(Step.AFTER_PLANNING)
            report.missing_groups = missing_groups(self.api, program, report.groups_wanted)
            if self.settings.live:
                self._apply(run_id, report, token)
            else:
                report.awaiting_approval = report.needs_approval
            if self.settings.plan:
                report.plan_id = self.store.create_plan(program, run_id, self.settings.api_url)
        except (AutoapproveError, KeyboardInterrupt) as exc:
            self._finish(run_id, report, started, *_how_it_ended(exc), token=token)
            raise
        outcome = RunOutcome.INTERRUPTED if self.stop.is_set() else RunOutcome.COMPLETED
        self._finish(run_id, report, started, outcome, None, token=token)
        return report

    def _finish(
        self,
        run_id: int,
        report: RunReport,
        started: float,
        outcome: RunOutcome,
        message: str | None,
        *,
        token: int | None,
    ) -> None:
        report.outcome, report.message = outcome, message
        report.duration_s = self._clock() - started
        self.store.finish_run(run_id, outcome, report.counts(), message, fencing_token=token)
        if self.on_finish is not None:
            self.on_finish(report)

    # -- steps ---------------------------------------------------------------------------

    def _list_and_evaluate(self, program: str, version: int, report: RunReport) -> DecisionSpool:
        """Evaluate each enrollment as the list streams in; count, stream out and spool it.

        Nothing is stored or sent until the whole list has arrived: a malformed or truncated
        answer raises here and the run records no decision. Raw enrollments are dropped as
        soon as they are evaluated, and decisions go to a spool on disk (or, without a
        decision sink, to the report), so memory stays flat however long the list.
        """
        evaluator, sink = self._evaluator, self.on_decision
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
            if ambiguous and self._already_applied(change.enrollment_id, change.body):
                self._recovered(change.decision_id, token)
                recovered += 1
            else:
                superseded.append(change.decision_id)
        if superseded:
            self.store.supersede(superseded, f"re-planned by run {run_id}", fencing_token=token)
        # Approved changes a killed ``review approve`` may have sent; the others wait for the
        # review queue's sorting (sent again under their approval, or withdrawn).
        for approved in self.store.review_queue(program, states=AMBIGUOUS_STATES):
            self._lease.keep()
            if approved.reviewed_by is None:
                continue
            if self._already_applied(approved.enrollment_id, approved.body):
                self._recovered(approved.decision_id, token)
                recovered += 1
        return recovered

    def _recovered(self, decision_id: int, token: int | None) -> None:
        self.store.record_outcome(
            decision_id, ChangeState.RECOVERED, fencing_token=token, error_message=FOUND_APPLIED
        )

    def _already_applied(self, enrollment_id: str, body: Mapping[str, Any]) -> bool:
        try:
            current = self.api.get_enrollment_dict(enrollment_id)
        except ApiAuthError:
            raise
        except ApiError:
            return False
        return patch_is_applied(body, current)

    # -- sending -------------------------------------------------------------------------

    def _apply(self, run_id: int, report: RunReport, token: int | None) -> None:
        """Send a live run's changes. Those a person must approve wait in the review queue,
        and moves out of ACTIVE the policy does not allow are held; a circuit breaker stops
        the run before anything is written (a new group included); then the rest go out."""
        sender = ChangeSender(
            self.api, self.store, token=token, states=report.change_states, lease=self._lease,
            concurrency=self.settings.concurrency, stop=self.stop, progress=self.progress,
            checkpoint=self.checkpoint,
        )  # fmt: skip
        planned = list(self.store.planned_changes(run_id))
        queued = queue_for_review(self.policy, self.store, report, planned, token)
        self.checkpoint(Step.AFTER_QUEUEING)
        decisions = {d.enrollment_id: d for d in report.changes}
        to_send = sender.hold_leaving_active(
            self.policy, queued.to_send, lambda change: decisions.get(change.enrollment_id), report.held
        )
        breakers = CircuitBreakers(self.policy.document.limits, self.settings.max_changes)
        reason = breakers.tripped(len(to_send), _rejects_sent(report, queued.for_review), report.evaluated)
        if reason is not None:
            sender.hold(to_send, reason)
            raise RunAborted(reason)
        sender.create_groups(report.program_id, report.missing_groups, report.created_groups)
        sender.send(to_send, self._recheck(decisions))

    def _recheck(self, decisions: Mapping[str | None, Decision]) -> ChangeCheck:
        """Right before each PATCH: the enrollment read again (unless ``--no-recheck``)."""
        if not self.settings.recheck:
            return send_as_planned
        return superseded_when_stale(self.api, self.policy, self._evaluator, decisions)


def _rejects_sent(report: RunReport, for_review: frozenset[str]) -> int:
    """The live run's changes to REJECTED, less those left for a person (not this run's to send)."""
    return sum(
        1
        for d in report.changes
        if d.status == "REJECTED" and d.status_changes and d.enrollment_id not in for_review
    )


def _how_it_ended(exc: AutoapproveError | KeyboardInterrupt) -> tuple[RunOutcome, str]:
    """The outcome and message a run stopped by ``exc`` is recorded with."""
    if isinstance(exc, KeyboardInterrupt):
        return RunOutcome.INTERRUPTED, INTERRUPTED_MESSAGE
    if isinstance(exc, RunAborted):
        return RunOutcome.ABORTED, str(exc)
    if isinstance(exc, ApiAuthError):
        return RunOutcome.FAILED, f"API key refused: {safe_message(exc)}"
    if isinstance(exc, ApiError):  # our own words only: the API's message may quote personal data
        return RunOutcome.FAILED, f"Flip API error: {safe_message(exc)}"
    return RunOutcome.FAILED, str(exc)
