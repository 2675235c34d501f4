"""Applying what a person reviewed: a saved plan (``apply``) or approved changes (``review``).

Both go through the outbox exactly as a live run does (``engine.runs.sending``: recorded
first, marked in flight, outcome recorded; one run per program under its lock; throttled;
the same held moves out of ACTIVE and circuit breakers; recorded as a run of its own), with
one difference: nothing is evaluated again. Each change is re-read right before its PATCH;
if the enrollment drifted since it was planned (``updated_at`` moved, or its status left the
policy's ``applies_to``), it is not sent and is recorded ``stale`` with what changed.
Everything else goes out exactly as reviewed.

A plan applies at most once: each of its changes moves through the outbox once (a final
state never moves again), and the plan is ``applied`` once every change has settled. An
apply that was killed leaves the plan ``applying``: the next ``apply`` of the same plan
finishes it (a change left in flight is found applied, or drifted, or sent once more; the
PATCH sets absolute state). The same holds for ``review approve``: the approval is recorded
before anything is sent, and approving the same changes again finishes them.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import AbstractContextManager
from datetime import timedelta
from types import TracebackType
from typing import Any

from engine.clock import Clock, utc_now
from engine.errors import ApiAuthError, ApiError, AutoapproveError, InputError, RunAborted
from engine.policy.decision import Action, Decision, RuleTrace
from engine.policy.document import Policy, load_policy_text
from engine.policy.evaluator import Evaluator
from engine.policy.facts import group_ids_of
from engine.runs.checkpoints import Checkpoint, Step, no_checkpoint
from engine.runs.lease import LeaseKeeper
from engine.runs.patch import patch_is_applied
from engine.runs.plans import (
    PlanChange,
    PlanDocument,
    PlanPolicy,
    PlanTarget,
    StatusAndGroups,
    describe_drift,
)
from engine.runs.ports import (
    FlipApi,
    Outcome,
    PlannedChangeLike,
    ProgramLockLike,
    ProgressCallback,
    ReviewStore,
)
from engine.runs.records import DecisionRecord, PlanRecord, ReviewRecord, RunCounts
from engine.runs.report import ApplyReport
from engine.runs.sending import FOUND_APPLIED, ChangeCheck, ChangeSender, CircuitBreakers, missing_groups
from engine.runs.service import INTERRUPTED_MESSAGE, RunSettings
from engine.runs.states import AMBIGUOUS_STATES, OPEN_STATES, ChangeState, PlanState, RunMode, RunOutcome

__all__ = ["ApplyReport", "PlanRefused", "ReviewApplier", "ReviewStore", "plan_document"]

DEFAULT_MAX_AGE = timedelta(hours=24)
LockFactory = Callable[[str, str], AbstractContextManager[ProgramLockLike]]


class PlanRefused(InputError):
    """A plan that must not be applied: already applied, or older than ``--max-age``."""


def plan_document(store: ReviewStore, plan_id: int) -> PlanDocument:
    """A stored plan as its file shows it (``plan --out``; what a plan file is checked against)."""
    plan = _plan(store, plan_id)
    version = store.policy_version(plan.policy_version_id) if plan.policy_version_id is not None else None
    if version is None:
        raise InputError(f"plan {plan_id}: its policy version is not in the store")
    policy = load_policy_text(version.source_text, f"<stored policy version {version.id}>")
    changes = [
        _plan_change(record.decision, record.planned_patch or {}, policy)
        for record in store.run_changes(plan.run_id)
    ]
    return PlanDocument.build(
        plan_id=plan.id,
        program_id=plan.program_id,
        api_url=plan.api_url,
        policy=PlanPolicy(
            name=version.name,
            version=version.version,
            content_hash=version.content_hash,
            text=version.source_text,
        ),
        evaluation_time=plan.evaluation_now,
        created_at=plan.created_at,
        changes=changes,
    )


def _plan_change(decision: Decision, body: dict[str, Any], policy: Policy) -> PlanChange:
    return PlanChange(
        enrollment_id=decision.enrollment_id or "",
        updated_at=decision.updated_at,
        facts_fingerprint=decision.facts_fingerprint,
        current=StatusAndGroups(status=decision.current_status, group_ids=list(decision.current_group_ids)),
        planned=StatusAndGroups(
            status=decision.status or decision.current_status, group_ids=list(decision.group_ids)
        ),
        rule_id=decision.rule_id,
        reason=decision.reason,
        requires_approval=policy.requires_approval(decision),
        patch=body,
    )


def _plan(store: ReviewStore, plan_id: int) -> PlanRecord:
    plan = store.plan(plan_id)
    if plan is None:
        raise InputError(f"no plan {plan_id} in this store (check --db or AUTOAPPROVE_DB)")
    return plan


def _decision(store: ReviewStore, decision_id: int) -> DecisionRecord:
    record = store.decision_by_id(decision_id)
    if record is None:
        raise InputError(f"no change {decision_id} in this store")
    return record


def _reads(trace: Iterable[RuleTrace]) -> dict[str, Any]:
    reads: dict[str, Any] = {}
    for entry in trace:
        reads.update(entry.reads)
    return reads


class ReviewApplier:
    """Applies saved plans and approved changes through the outbox, as a live run sends."""

    def __init__(
        self,
        api: FlipApi,
        store: ReviewStore,
        settings: RunSettings,
        *,
        lock_factory: LockFactory,
        progress: ProgressCallback | None = None,
        stop: threading.Event | None = None,
        clock: Clock = utc_now,
        checkpoint: Checkpoint = no_checkpoint,
    ) -> None:
        self.api = api
        self.store = store
        self.settings = settings
        self.lock_factory = lock_factory
        self.progress = progress
        self.stop = stop or threading.Event()
        self.clock = clock
        self.checkpoint = checkpoint  # called at each named step (engine.runs.checkpoints)
        self._policies: dict[int, Policy] = {}

    # -- plans -------------------------------------------------------------------------

    def check_plan(
        self, target: PlanTarget, *, max_age: timedelta = DEFAULT_MAX_AGE, program_id: str | None = None
    ) -> PlanDocument:
        """Every reason to refuse a plan before anything is sent, or the plan as stored."""
        stored = plan_document(self.store, target.plan_id)
        if target.document is not None and target.document.checksum != stored.checksum:
            raise InputError(
                f"{target.source}: does not match plan {target.plan_id} as the store has it "
                "(a file from another store, or edited and re-summed)"
            )
        if stored.api_url != self.settings.api_url:
            raise InputError(
                f"plan {stored.plan_id} was made against {stored.api_url}, not {self.settings.api_url}: "
                "apply it with the FLIP_API_URL it was planned with"
            )
        if program_id is not None and program_id != stored.program_id:
            raise InputError(f"plan {stored.plan_id} is for program {stored.program_id}, not {program_id}")
        plan = _plan(self.store, target.plan_id)
        self._refuse_if_done(plan, max_age)
        return stored

    def _refuse_if_done(self, plan: PlanRecord, max_age: timedelta) -> None:
        if plan.state == PlanState.APPLIED:
            raise PlanRefused(
                f"plan {plan.id} was already applied (run {plan.apply_run_id}, by {plan.applied_by}); "
                "a plan applies at most once: make a new one with autoapprove plan"
            )
        age = self.clock() - plan.created_at
        if age > max_age:
            raise PlanRefused(
                f"plan {plan.id} is {_duration(age)} old, older than --max-age {_duration(max_age)}: "
                "make a new plan (or raise --max-age deliberately)"
            )

    def apply_plan(self, target: PlanTarget, *, by: str, max_age: timedelta = DEFAULT_MAX_AGE) -> ApplyReport:
        """Apply a checked plan (``check_plan`` first) exactly, under the program's lock."""
        plan = _plan(self.store, target.plan_id)
        policy = self._policy(plan.policy_version_id)
        with self.lock_factory(plan.program_id, self.settings.holder) as lock:
            plan = _plan(self.store, target.plan_id)  # another apply may have run meanwhile
            self._refuse_if_done(plan, max_age)
            token = lock.fencing_token
            run_id = self._start(
                plan.program_id, RunMode.APPLY, plan.policy_version_id, token, by=by, plan_id=plan.id
            )
            report = ApplyReport(run_id, plan.program_id, by, plan_id=plan.id)
            sender = self._sender(lock, report)
            with self._finishing(report, token):
                records = {r.id: r for r in self.store.run_changes(plan.run_id, OPEN_STATES)}
                changes = list(self.store.changes_by_id(sorted(records)))
                to_send = sender.hold_leaving_active(
                    policy, changes, lambda change: records[change.decision_id].decision
                )
                if plan.state == PlanState.SAVED:  # a resumed apply already passed the breakers
                    self._refuse_over_limits(policy, plan.counts, len(to_send))
                self.store.claim_plan(plan.id, run_id, by, fencing_token=token)
                self.checkpoint(Step.AFTER_CLAIM)
                self._create_groups(plan.program_id, to_send, report, sender)
                sender.send(to_send, self._drift_check({r.id: (r, policy) for r in records.values()}))
                self._collect_stale(plan.run_id, records, report)
                if not self.stop.is_set() and report.outcome == RunOutcome.COMPLETED:
                    self.store.finish_plan(plan.id, fencing_token=token)
            return report

    # -- the review queue --------------------------------------------------------------

    def waiting_for(self, decision_ids: Sequence[int] | None, program_id: str | None) -> list[ReviewRecord]:
        """The changes ``review approve``/``reject`` names: each must be waiting (or, to finish
        an approval that was interrupted, approved and not yet settled)."""
        waiting = list(self.store.review_queue(program_id, decision_ids=decision_ids))
        # Approved but not settled: the approve run that took them was killed or stopped.
        unfinished = [
            r
            for r in self.store.review_queue(program_id, states=OPEN_STATES, decision_ids=decision_ids)
            if r.reviewed_by is not None
        ]
        found = {r.decision_id: r for r in [*waiting, *unfinished]}
        for decision_id in decision_ids or ():
            if decision_id not in found:
                raise InputError(self._not_waiting(decision_id))
        programs = sorted({r.program_id for r in found.values()})
        if len(programs) > 1:
            raise InputError(f"the changes belong to several programs ({', '.join(programs)}): one at a time")
        return sorted(found.values(), key=lambda r: r.decision_id)

    def _not_waiting(self, decision_id: int) -> str:
        record = self.store.decision_by_id(decision_id)
        if record is None:
            return f"no change {decision_id} in this store"
        return f"change {decision_id} is not waiting for approval (it is {record.change_state})"

    def approve(self, records: Sequence[ReviewRecord], *, by: str) -> ApplyReport:
        """Approve waiting changes and send them at once (re-read first; drifted: ``stale``)."""
        program = records[0].program_id
        with self.lock_factory(program, self.settings.holder) as lock:
            token = lock.fencing_token
            ids = [r.decision_id for r in records]
            current = {r.decision_id: r for r in self.waiting_for(ids, program)}  # re-read under the lock
            # Every policy the re-check needs, before the run row: a missing one refuses the
            # approval with nothing started, written or sent.
            policies = {r.decision_id: self._policy(r.policy_version_id) for r in current.values()}
            run_id = self._start(program, RunMode.APPROVE, records[0].policy_version_id, token, by=by)
            report = ApplyReport(run_id, program, by)
            sender = self._sender(lock, report)
            with self._finishing(report, token):
                waiting = [i for i, r in current.items() if r.change_state == ChangeState.AWAITING_APPROVAL]
                self.store.approve(waiting, by, fencing_token=token)
                self.checkpoint(Step.AFTER_APPROVAL)
                changes = list(self.store.changes_by_id(ids))
                self._create_groups(program, changes, report, sender)
                planned = {i: (_decision(self.store, i), policies[i]) for i in current}
                sender.send(changes, self._drift_check(planned))
                for change in changes:
                    record = self.store.decision_by_id(change.decision_id)
                    if record is not None and record.change_state == ChangeState.STALE:
                        report.stale.append((change.enrollment_id, record.error_message or ""))
            return report

    def refuse(self, records: Sequence[ReviewRecord], *, by: str, note: str | None) -> int:
        """Record that a person refused these waiting changes; nothing is sent."""
        waiting = [r for r in records if r.change_state == ChangeState.AWAITING_APPROVAL]
        if len(waiting) != len(records):
            raise InputError(self._not_waiting(next(r.decision_id for r in records if r not in waiting)))
        program = records[0].program_id
        with self.lock_factory(program, self.settings.holder) as lock:
            self.store.refuse([r.decision_id for r in records], by, note, fencing_token=lock.fencing_token)
        return len(records)

    # -- shared steps ------------------------------------------------------------------

    def _policy(self, policy_version_id: int | None) -> Policy:
        if policy_version_id is None:
            raise InputError("the change has no stored policy version: it cannot be re-checked")
        if policy_version_id not in self._policies:
            version = self.store.policy_version(policy_version_id)
            if version is None:
                raise InputError(f"policy version {policy_version_id} is not in the store")
            self._policies[policy_version_id] = load_policy_text(
                version.source_text, f"<stored policy version {version.id}>"
            )
        return self._policies[policy_version_id]

    def _sender(self, lock: ProgramLockLike, report: ApplyReport) -> ChangeSender:
        return ChangeSender(
            self.api, self.store, token=lock.fencing_token, states=report.change_states,
            lease=LeaseKeeper(lock), concurrency=self.settings.concurrency, stop=self.stop,
            progress=self.progress, checkpoint=self.checkpoint,
        )  # fmt: skip

    def _start(
        self,
        program: str,
        mode: RunMode,
        version_id: int | None,
        token: int,
        *,
        by: str,
        plan_id: int | None = None,
    ) -> int:
        run_id = self.store.start_run(
            program, mode, version_id, self.clock().replace(microsecond=0), holder=self.settings.holder,
            fencing_token=token, plan_id=plan_id, applied_by=by,
        )  # fmt: skip
        # Under the lock no other run of the program is alive: any still "running" was killed.
        self.store.interrupt_running_runs(program, except_run_id=run_id, fencing_token=token)
        return run_id

    def _finishing(self, report: ApplyReport, token: int) -> AbstractContextManager[None]:
        return _Finishing(self.store, report, token, self.stop)

    def _refuse_over_limits(self, policy: Policy, counts: RunCounts, changes: int) -> None:
        """The circuit breakers, on the counts of the run that made the plan."""
        actions = counts.get("actions") or {}
        evaluated = int(actions.get(Action.UPDATE, 0)) + int(actions.get(Action.NONE, 0))
        rejects = sum(
            int(n) for t, n in (counts.get("transitions") or {}).items() if str(t).endswith("-> REJECTED")
        )
        breakers = CircuitBreakers(policy.document.limits, self.settings.max_changes)
        reason = breakers.tripped(changes, rejects, evaluated, plan=True)
        if reason is not None:
            raise RunAborted(reason)  # the plan stays saved: nothing was claimed or sent

    def _create_groups(
        self, program: str, changes: Sequence[PlannedChangeLike], report: ApplyReport, sender: ChangeSender
    ) -> None:
        wanted = {group_id for change in changes for group_id in change.body.get("group_ids") or []}
        sender.create_groups(program, missing_groups(self.api, program, wanted), report.created_groups)

    def _drift_check(self, planned: Mapping[int, tuple[DecisionRecord, Policy]]) -> ChangeCheck:
        """Re-read each change right before its PATCH; drifted ones are ``stale``, never re-evaluated
        into something else."""
        tracers: dict[int, Evaluator] = {}

        def check(change: PlannedChangeLike) -> Outcome | None:
            fresh = self.api.get_enrollment_dict(change.enrollment_id)
            if change.change_state in AMBIGUOUS_STATES and patch_is_applied(change.body, fresh):
                return Outcome(change.decision_id, ChangeState.RECOVERED, error_message=FOUND_APPLIED)
            record, policy = planned[change.decision_id]
            status = fresh.get("status")
            if fresh.get("updated_at") == change.enrollment_updated_at and status in policy.applies_to:
                return None
            tracer = tracers.setdefault(id(policy), Evaluator(policy, record.run_now, trace=True))
            planned_reads = _reads(record.decision.trace)
            # Without a trace of what the change read, facts cannot be compared: say nothing of them.
            fresh_reads = _reads(tracer.evaluate(fresh).trace) if planned_reads else {}
            what = describe_drift(
                planned_status=record.decision.current_status,
                planned_groups=record.decision.current_group_ids,
                fresh_status=status if isinstance(status, str) else None,
                fresh_groups=group_ids_of(fresh.get("site")),
                planned_reads=planned_reads,
                fresh_reads=fresh_reads,
            )
            return Outcome(
                change.decision_id, ChangeState.STALE, error_message=f"drifted since planning: {what}"
            )

        return check

    def _collect_stale(
        self, plan_run_id: int, records: dict[int, DecisionRecord], report: ApplyReport
    ) -> None:
        for record in self.store.run_changes(plan_run_id, (ChangeState.STALE,)):
            if record.id in records:
                report.stale.append((record.decision.enrollment_id or "", record.error_message or ""))


class _Finishing(AbstractContextManager[None]):
    """Records how an apply or approve run ended, whatever ended it."""

    def __init__(self, store: ReviewStore, report: ApplyReport, token: int, stop: threading.Event) -> None:
        self.store, self.report, self.token, self.stop = store, report, token, stop

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, _tb: TracebackType | None
    ) -> None:
        report = self.report
        if exc is None:
            report.outcome = RunOutcome.INTERRUPTED if self.stop.is_set() else RunOutcome.COMPLETED
        elif isinstance(exc, RunAborted):
            report.outcome, report.message = RunOutcome.ABORTED, str(exc)
        elif isinstance(exc, KeyboardInterrupt):
            report.outcome, report.message = RunOutcome.INTERRUPTED, INTERRUPTED_MESSAGE
        elif isinstance(exc, ApiAuthError):
            report.outcome, report.message = RunOutcome.FAILED, "API key refused"
        elif isinstance(exc, ApiError):
            report.outcome, report.message = (
                RunOutcome.FAILED,
                f"Flip API error: HTTP {exc.status_code or '-'}",
            )
        elif isinstance(exc, AutoapproveError):
            report.outcome, report.message = RunOutcome.FAILED, str(exc)
        else:
            return
        self.store.finish_run(
            report.run_id, report.outcome, report.counts(), report.message, fencing_token=self.token
        )


def _duration(delta: timedelta) -> str:
    seconds = int(delta.total_seconds())
    if seconds >= 86400 and seconds % 3600 == 0:
        return f"{seconds // 3600}h"
    if seconds >= 3600:
        return f"{seconds / 3600:.1f}h"
    return f"{seconds // 60}m"
