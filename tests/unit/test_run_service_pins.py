"""Promises of the run service that the paths in ``test_run_service.py`` do not reach: its
clock and start time, the program it runs, plan runs, what a repeated run stores, the
changes left for a person, the callbacks, and the progress of long runs.
"""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from engine.clock import utc_now
from engine.errors import ApiError
from engine.policy.decision import Decision
from engine.policy.document import Policy, load_policy_text
from engine.policy.evaluator import Evaluator
from engine.runs.ports import ProgressCallback
from engine.runs.report import RunReport
from engine.runs.sending import FOUND_APPLIED
from engine.runs.service import RunService, RunSettings
from engine.runs.states import ChangeState, RunMode, RunOutcome, Stage

from .fakes import Fakes
from .test_batch import POLICY as APPROVE_ALL
from .test_run_service import APPROVE, NOW, approvals, crashed_run, enrollment, policy

REVIEW_REJECTIONS = "review:\n  require_approval: [REJECTED]\n"


def rejections_need_approval(limits: str = "") -> Policy:
    """The unit policy, with every change to REJECTED left for a person."""
    return policy(limits, extra=REVIEW_REJECTIONS)


def reject_rule_needs_approval() -> Policy:
    """The unit policy, with its reject rule marked ``approval: required``."""
    text = policy().source_text.replace("reason: outside TX", "reason: outside TX\n    approval: required")
    return load_policy_text(text, "<unit policy, reviewed rule>")


def traced(report: RunReport) -> dict[str | None, bool]:
    """Which of the run's decisions keep what their rules read."""
    return {d.enrollment_id: bool(d.trace) for d in report.decisions}


MIXED = [
    *approvals(2),
    enrollment("enr-r", state="OK"),  # rejected
    enrollment("enr-done", status="ACTIVE", groups=("PILOT",)),  # already as decided
    enrollment("enr-s", status="PAUSED"),  # skipped
]


# --- the run's time -----------------------------------------------------------------------


def test_a_run_starts_at_its_given_time_in_utc_whole_seconds() -> None:
    fakes = Fakes.of(approvals(1))
    houston_evening = datetime(2026, 11, 24, 19, 4, 5, 678901, tzinfo=timezone(timedelta(hours=-6)))

    report = fakes.service(policy(), now=houston_evening).run()

    started = fakes.store.runs[report.run_id].started_at
    assert started == datetime(2026, 11, 25, 1, 4, 5, tzinfo=UTC)
    assert started is not None
    assert started.utcoffset() == timedelta(0)


def started_at(given: str) -> str:
    """When a dry run given the time ``given`` (ISO 8601) is recorded as started."""
    fakes = Fakes.of(approvals(1))
    report = fakes.service(policy(), now=datetime.fromisoformat(given)).run()
    started = fakes.store.runs[report.run_id].started_at
    assert started is not None
    return started.isoformat()


def test_a_run_starts_in_utc_whatever_the_machines_zone() -> None:
    """The zone is the process's own (``TZ``, read at start): only a child interpreter can
    have another. This one runs the same in this process too (so that mutmut, which picks the
    tests that reach the code in-process, picks this one)."""
    given = "2026-11-24T19:04:05.678901-06:00"
    probe = (
        "import sys; from tests.unit.test_run_service_pins import started_at; print(started_at(sys.argv[1]))"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe, given],
        cwd=Path(__file__).parents[2],
        env={**os.environ, "TZ": "Pacific/Kiritimati"},  # UTC+14
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )

    assert (started_at(given), result.stdout.strip()) == ("2026-11-25T01:04:05+00:00",) * 2


def test_a_run_without_a_given_time_starts_now() -> None:
    fakes = Fakes.of(approvals(1))
    before = utc_now().replace(microsecond=0)

    report = fakes.service(policy(), now=None).run()

    started = fakes.store.runs[report.run_id].started_at
    assert started is not None
    assert before <= started <= utc_now()
    assert (started.microsecond, started.utcoffset()) == (0, timedelta(0))


@pytest.mark.parametrize("plan", [False, True])  # a plan's changes come from the tracing evaluator
def test_the_policy_is_evaluated_at_the_runs_time(plan: bool) -> None:
    fakes = Fakes.of(approvals(2))
    stamped = policy().source_text.replace("reason: big enough", "reason: approved at {now}")
    houston_evening = datetime(2026, 11, 24, 19, 4, 5, 678901, tzinfo=timezone(timedelta(hours=-6)))

    report = fakes.service(load_policy_text(stamped, "<stamped>"), now=houston_evening, plan=plan).run()

    assert {d.reason for d in report.decisions} == {"approved at 2026-11-25T01:04:05Z"}


def test_a_runs_duration_is_measured_on_its_clock() -> None:
    fakes = Fakes.of(approvals(3), step_s=1.5)  # each listed enrollment and stored decision: 1.5 s
    fakes.world.clock.advance(100.0)

    report = fakes.service(policy()).run()

    assert report.duration_s == fakes.world.clock() - 100.0
    assert report.duration_s >= 9.0  # three listed, three stored


# --- which program, under which lock --------------------------------------------------------


def test_a_run_is_of_the_program_it_is_given() -> None:
    fakes = Fakes.of(approvals(1))
    unit_policy = policy()

    report = fakes.service(unit_policy, live=True).run("prog-other")

    assert (report.program_id, fakes.store.runs[report.run_id].program_id) == ("prog-other", "prog-other")
    assert fakes.world.keys("list") == ["prog-other"]
    assert [(lock.program_id, lock.holder) for lock in fakes.locks.taken] == [("prog-other", "unit-test:1")]
    assert fakes.store.version_texts[unit_policy.content_hash][:2] == ("prog-other", "prog-other")


def test_a_run_without_a_program_is_of_the_policys() -> None:
    fakes = Fakes.of(approvals(1))

    report = fakes.service(policy(), live=True).run()

    assert fakes.store.runs[report.run_id].program_id == "prog-unit"
    assert [(lock.program_id, lock.holder) for lock in fakes.locks.taken] == [("prog-unit", "unit-test:1")]


def test_a_named_policy_is_stored_under_its_name_and_version() -> None:
    fakes = Fakes.of(approvals(1))
    named = policy(extra="name: TX pilot approvals\nversion: '2'\n")

    fakes.service(named).run()

    assert fakes.store.version_texts[named.content_hash] == (
        "prog-unit", "TX pilot approvals", "2", named.source_text,
    )  # fmt: skip


def test_a_missing_group_is_created_in_the_runs_program() -> None:
    fakes = Fakes.of(approvals(1))

    report = fakes.service(policy(), live=True).run()

    assert report.created_groups == ["PILOT"]
    assert fakes.api.groups == {"prog-unit": ["PILOT"]}


def test_a_live_run_without_a_lock_factory_sends_unfenced() -> None:
    fakes = Fakes.of(approvals(2))
    settings = RunSettings(live=True, now=NOW, holder="unit-test:1")

    report = RunService(policy(), fakes.api, fakes.store, settings, clock=fakes.world.clock).run()

    assert sorted(fakes.api.patches) == [("enr-1", APPROVE), ("enr-2", APPROVE)]
    assert fakes.locks.taken == []
    assert fakes.store.runs[report.run_id].fencing_token is None
    assert report.outcome == RunOutcome.COMPLETED


# --- plan runs --------------------------------------------------------------------------------


def test_a_plan_run_saves_its_changes_as_a_plan_and_sends_nothing() -> None:
    fakes = Fakes.of(MIXED)

    report = fakes.service(policy(), plan=True, api_url="https://flip.example/api").run()

    assert (fakes.api.patches, fakes.world.count("get"), fakes.world.count("ensure_group")) == ([], 0, 0)
    assert fakes.locks.taken == []
    assert fakes.store.runs[report.run_id].mode == RunMode.PLAN
    assert report.plan_id == 1
    assert fakes.store.plans == {1: ("prog-unit", report.run_id, "https://flip.example/api")}
    assert fakes.store.states() == {
        "enr-1": ChangeState.PLANNED,
        "enr-2": ChangeState.PLANNED,
        "enr-r": ChangeState.PLANNED,
        "enr-done": ChangeState.NONE,
        "enr-s": ChangeState.NONE,
    }
    # A planned change keeps what it read, so that drift found when it is applied can be named.
    assert traced(report) == {"enr-1": True, "enr-2": True, "enr-r": True, "enr-done": False, "enr-s": False}


def test_a_dry_run_saves_no_plan_and_keeps_no_trace() -> None:
    fakes = Fakes.of(MIXED)

    report = fakes.service(policy()).run()

    assert (report.plan_id, fakes.store.plans) == (None, {})
    assert fakes.store.runs[report.run_id].mode == RunMode.DRY_RUN
    assert set(traced(report).values()) == {False}
    assert (report.needs_approval, report.awaiting_approval) == (0, 0)


def test_a_plan_run_after_a_dry_run_plans_every_change_again() -> None:
    fakes = Fakes.of(MIXED)
    fakes.service(policy()).run()

    plan = fakes.service(policy(), plan=True).run()

    planned = {e for e, state in fakes.store.states(plan.run_id).items() if state == ChangeState.PLANNED}
    assert planned == {"enr-1", "enr-2", "enr-r"}
    assert plan.unchanged == 2  # the two that need no change were decided as before


def test_a_live_run_after_a_dry_run_sends_what_it_previewed() -> None:
    fakes = Fakes.of(MIXED)
    fakes.service(policy()).run()

    live = fakes.service(policy(), live=True).run()

    assert sorted(e for e, _ in fakes.api.patches) == ["enr-1", "enr-2", "enr-r"]
    assert dict(live.change_states) == {ChangeState.APPLIED: 3}


# --- what a repeated run stores ---------------------------------------------------------------


def test_a_repeated_dry_run_stores_only_the_decisions_that_changed() -> None:
    fakes = Fakes.of(MIXED)
    fakes.service(policy()).run()
    fakes.api.enrollments["enr-2"]["site"]["state_code"] = "OK"  # now rejected

    again = fakes.service(policy()).run()

    assert fakes.store.states(again.run_id) == {"enr-2": ChangeState.NONE}
    assert again.unchanged == 4
    assert fakes.store.runs[again.run_id].counts["unchanged"] == 4


def test_an_enrollment_listed_without_an_id_is_stored_every_run() -> None:
    """Its decision cannot be matched to an earlier one, so it is never counted unchanged."""
    fakes = Fakes.of(approvals(2))
    del fakes.api.enrollments["enr-2"]["id"]
    fakes.service(policy()).run()

    again = fakes.service(policy()).run()

    stored = [c.decision.enrollment_id for c in fakes.store.changes.values() if c.run_id == again.run_id]
    assert stored == [None]
    assert again.unchanged == 1


def test_a_new_policy_version_stores_every_decision_again() -> None:
    fakes = Fakes.of(MIXED)
    fakes.service(policy()).run()

    again = fakes.service(policy(extra="version: '2'\n")).run()

    assert len(fakes.store.states(again.run_id)) == len(MIXED)
    assert again.unchanged == 0


# --- changes left for a person ----------------------------------------------------------------


@pytest.mark.parametrize("reviewed", [rejections_need_approval, reject_rule_needs_approval])
def test_a_dry_run_counts_the_changes_a_person_must_approve(reviewed: Any) -> None:
    fakes = Fakes.of([*MIXED, enrollment("enr-r2", state="OK")])

    report = fakes.service(reviewed()).run()

    assert (report.needs_approval, report.awaiting_approval) == (2, 2)
    # Only a change left for a person keeps what it read (the review shows drift with it).
    assert {e for e, kept in traced(report).items() if kept} == {"enr-r", "enr-r2"}


def test_changes_left_for_a_person_do_not_count_towards_the_reject_ratio() -> None:
    fakes = Fakes.of([enrollment("enr-r1", state="OK"), enrollment("enr-r2", state="OK"), *approvals(1)])

    report = fakes.service(rejections_need_approval("  max_reject_ratio: 0.5\n"), live=True).run()

    assert report.outcome == RunOutcome.COMPLETED
    assert fakes.api.patches == [("enr-1", APPROVE)]
    assert fakes.store.states() == {
        "enr-r1": ChangeState.AWAITING_APPROVAL,
        "enr-r2": ChangeState.AWAITING_APPROVAL,
        "enr-1": ChangeState.APPLIED,
    }
    assert report.awaiting_approval == 2


# --- approvals a killed review approve left in flight ------------------------------------------


def test_reconcile_recovers_the_approved_changes_a_killed_review_approve_sent() -> None:
    fakes = Fakes.of(approvals(3))
    crashed_run(fakes, policy(), in_flight=["enr-1"], retryable=[])  # left behind by a later run
    second = crashed_run(fakes, policy(), in_flight=["enr-2", "enr-3"], retryable=[])
    approved = fakes.store.change_of("enr-2", second)
    approved.reviewed_by = "ana"  # approved; ``review approve`` was killed after its PATCH
    fakes.api.apply("enr-2", APPROVE)
    fakes.api.apply("enr-3", APPROVE)  # the second run's own PATCH went through too
    fakes.api.enrollments["enr-9"] = enrollment("enr-9")  # another program's, approved and sent
    other_run = fakes.store.start_run("prog-other", RunMode.LIVE, 1, NOW)
    fakes.store.add_decisions(
        other_run, "prog-other", [Evaluator(policy(), NOW).evaluate(enrollment("enr-9"))]
    )
    other = fakes.store.change_of("enr-9", other_run)
    fakes.store.mark_in_flight_many([other.decision_id])
    other.reviewed_by = "ben"
    fakes.api.apply("enr-9", APPROVE)

    report = fakes.service(policy(), live=True).run()

    assert (approved.change_state, approved.error_message) == (ChangeState.RECOVERED, FOUND_APPLIED)
    assert fakes.store.change_of("enr-3", second).change_state == ChangeState.RECOVERED
    assert report.recovered == 2
    assert other.change_state == ChangeState.IN_FLIGHT  # not this program's to settle
    assert fakes.api.patches == [("enr-1", APPROVE)]  # nothing found applied is sent again


# --- the callbacks ----------------------------------------------------------------------------


def test_on_finish_sees_the_report_of_a_completed_run() -> None:
    fakes = Fakes.of(approvals(1))
    finished: list[RunReport] = []

    report = fakes.service(policy(), on_finish=finished.append).run()

    assert finished == [report]
    assert finished[0] is report


def test_on_finish_sees_the_report_of_a_failed_run() -> None:
    fakes = Fakes.of(approvals(2))
    fakes.api.fail("list_item", "enr-2", ApiError("the answer was cut off"))
    finished: list[RunReport] = []

    with pytest.raises(ApiError):
        fakes.service(policy(), live=True, on_finish=finished.append).run()

    assert [(r.outcome, r.message) for r in finished] == [
        (RunOutcome.FAILED, "Flip API error: the answer was cut off")
    ]


def test_a_decision_sink_sees_every_decision_in_order_and_the_report_keeps_none() -> None:
    fakes = Fakes.of(MIXED)
    sunk: list[Decision] = []

    report = fakes.service(policy(), live=True, on_decision=sunk.append).run()

    assert [d.enrollment_id for d in sunk] == ["enr-1", "enr-2", "enr-r", "enr-done", "enr-s"]
    assert report.decisions == []
    assert len(fakes.store.states()) == len(MIXED)  # stored all the same (through the spool)
    assert len(fakes.api.patches) == 3


def test_on_evaluated_sees_each_raw_enrollment_with_its_decision() -> None:
    fakes = Fakes.of(MIXED)
    seen: list[tuple[dict[str, Any], Decision]] = []

    fakes.service(policy(), on_evaluated=lambda raw, decision: seen.append((raw, decision))).run()

    assert [(raw["id"], raw["status"], d.enrollment_id) for raw, d in seen] == [
        (e["id"], e["status"], e["id"]) for e in MIXED
    ]


# --- a broken run -----------------------------------------------------------------------------


@pytest.mark.parametrize("error", [ApiError("cut off"), KeyboardInterrupt()])
def test_a_run_broken_while_listing_records_no_counts(error: BaseException) -> None:
    fakes = Fakes.of(MIXED)
    fakes.service(policy()).run()  # so that the broken run finds some decisions unchanged
    fakes.api.fail("list_item", "enr-s", error)
    finished: list[RunReport] = []

    with pytest.raises(type(error)):
        fakes.service(rejections_need_approval(), on_finish=finished.append).run()

    assert fakes.store.runs[2].counts == {
        "transitions": {}, "actions": {}, "changes": {}, "recovered": 0, "unchanged": 0,
    }  # fmt: skip
    assert fakes.store.states(2) == {}
    (report,) = finished
    assert (report.decisions, report.changes, report.needs_approval, report.rejects) == ([], [], 0, 0)


# --- progress of a long run -------------------------------------------------------------------


def submitted(first: int, last: int) -> list[dict[str, Any]]:
    return [{"id": f"enr-{i}", "status": "SUBMITTED"} for i in range(first, last + 1)]


def test_a_long_run_reports_its_progress_every_thousand_evaluated_and_five_thousand_stored() -> None:
    fakes = Fakes.of(submitted(1, 2000))
    approve_all = load_policy_text(APPROVE_ALL.format(program="prog-unit"), "<approve all>")
    first: list[tuple[str, int, int, int]] = []
    second: list[tuple[str, int, int, int]] = []

    def recorder(log: list[tuple[str, int, int, int]]) -> ProgressCallback:
        def record(stage: str, done: int, total: int) -> None:
            log.append((stage, done, total, len(fakes.store.changes)))  # with what the store holds

        return record

    fakes.service(approve_all, progress=recorder(first)).run()
    fakes.api.enrollments.update({e["id"]: e for e in submitted(2001, 7001)})
    fakes.service(approve_all, progress=recorder(second)).run()

    # The first run has no earlier run to go by: a total of 0 (unknown) until the end.
    assert first == [
        (Stage.EVALUATING, 1000, 0, 0),
        (Stage.EVALUATING, 2000, 0, 0),
        (Stage.EVALUATING, 2000, 2000, 0),
        (Stage.STORING, 2000, 2000, 2000),
    ]
    # The second expects as many as the first listed while it has fewer, then does not know;
    # it stores only the 5001 new decisions, the 5000th reported once the store has it.
    assert second == [
        (Stage.EVALUATING, 1000, 2000, 2000),
        *((Stage.EVALUATING, done, 0, 2000) for done in (2000, 3000, 4000, 5000, 6000, 7000)),
        (Stage.EVALUATING, 7001, 7001, 2000),
        (Stage.STORING, 5000, 5001, 7000),
        (Stage.STORING, 5001, 5001, 7001),
    ]
