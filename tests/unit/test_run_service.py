"""The run service's paths through fakes of its ports: what a live run sends, records and
refuses, from crash recovery to the circuit breakers, without a network or a database."""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from typing import Any

import pytest

from engine.errors import ApiAuthError, ApiError, ApiRetryableError, LockHeldError, RunAborted
from engine.policy.document import Policy, load_policy_text
from engine.policy.evaluator import Evaluator
from engine.render.text import render_run_footer
from engine.runs.checkpoints import Step
from engine.runs.report import HeldChange
from engine.runs.states import ChangeState, RunMode, RunOutcome, Stage

from .fakes import Fakes

NOW = datetime(2026, 11, 25, tzinfo=UTC)
LISTED_AT = "2026-11-20T00:00:00Z"


def policy(limits: str = "", applies_to: str = "[SUBMITTED, PENDING, ACTIVE]", extra: str = "") -> Policy:
    """TX sites with 10 kWh or more are approved into PILOT; other states are rejected.
    ``extra``: more top-level keys (``name``, ``review``)."""
    text = f"""
program_id: prog-unit
applies_to: {applies_to}
rules:
  - id: reject-out-of-state
    when: {{"!=": [{{"var": "site.state_code"}}, "TX"]}}
    status: REJECTED
    reason: outside TX
  - id: approve
    when: {{">=": [{{"var": ["totals.battery_capacity_wh", 0]}}, 10000]}}
    status: ACTIVE
    reason: big enough
default: {{status: PENDING, reason: needs review}}
groups:
  - id: pilot
    when: {{"==": [{{"var": "decision.status"}}, "ACTIVE"]}}
    add: [PILOT]
"""
    return load_policy_text(text + extra + (f"limits:\n{limits}" if limits else ""), "<unit policy>")


def enrollment(
    enrollment_id: str,
    status: str = "SUBMITTED",
    state: str = "TX",
    wh: int = 13500,
    groups: tuple[str, ...] = (),
) -> dict[str, Any]:
    return {
        "id": enrollment_id,
        "status": status,
        "updated_at": LISTED_AT,
        "site": {"state_code": state, "groups": [{"id": g, "name": g} for g in groups]},
        "devices": [{"type": "BATTERY", "attributes": {"battery_capacity_wh": wh}}],
    }


APPROVE = {"status": "ACTIVE", "status_reason": "big enough", "group_ids": ["PILOT"]}
REJECT = {"status": "REJECTED", "status_reason": "outside TX"}


def approvals(count: int) -> list[dict[str, Any]]:
    return [enrollment(f"enr-{i}") for i in range(1, count + 1)]


# --- the plain paths --------------------------------------------------------------------------


def test_a_live_run_creates_the_group_then_applies_every_change() -> None:
    fakes = Fakes.of([*approvals(2), enrollment("enr-3", state="OK"), enrollment("enr-4", status="PAUSED")])

    report = fakes.service(policy(), live=True).run()

    assert sorted(fakes.api.patches) == [("enr-1", APPROVE), ("enr-2", APPROVE), ("enr-3", REJECT)]
    assert fakes.world.keys("ensure_group") == ["PILOT"]
    first_patch = fakes.world.calls.index(("patch", fakes.api.patches[0][0]))
    assert fakes.world.calls.index(("ensure_group", "PILOT")) < first_patch
    assert report.created_groups == ["PILOT"]
    assert fakes.store.states() == {
        "enr-1": ChangeState.APPLIED,
        "enr-2": ChangeState.APPLIED,
        "enr-3": ChangeState.APPLIED,
        "enr-4": ChangeState.NONE,
    }
    assert (report.outcome, report.failed, dict(report.change_states)) == (
        RunOutcome.COMPLETED,
        0,
        {ChangeState.APPLIED: 3},
    )
    run = fakes.store.runs[report.run_id]
    assert (run.outcome, run.counts["changes"], run.fencing_token) == (
        RunOutcome.COMPLETED,
        {ChangeState.APPLIED: 3},
        1,
    )


def test_the_checkpoint_is_called_at_each_step_of_a_live_run_in_order() -> None:
    """The named steps the crash tests kill a run at, each reached where its name says."""
    fakes = Fakes.of([*approvals(2), enrollment("enr-3", state="OK")])
    seen: list[tuple[Step, int]] = []

    def checkpoint(step: Step) -> None:
        seen.append((step, len(fakes.api.patches)))  # how many PATCHes were sent by then

    fakes.service(policy(), live=True, concurrency=1, checkpoint=checkpoint).run()

    assert seen == [
        (Step.AFTER_PLANNING, 0),
        (Step.AFTER_QUEUEING, 0),
        (Step.AFTER_GROUP_CREATE, 0),
        (Step.IN_FLIGHT, 0),
        (Step.AFTER_PATCH, 1),
        (Step.IN_FLIGHT, 1),
        (Step.AFTER_PATCH, 2),
        (Step.IN_FLIGHT, 2),
        (Step.AFTER_PATCH, 3),
    ]
    assert fakes.world.calls.index(("ensure_group", "PILOT")) < fakes.world.calls.index(("patch", "enr-1"))


def test_a_dry_run_reaches_only_the_planning_checkpoint() -> None:
    fakes = Fakes.of(approvals(2))
    seen: list[Step] = []

    fakes.service(policy(), checkpoint=seen.append).run()

    assert seen == [Step.AFTER_PLANNING]


def test_a_dry_run_sends_nothing_and_takes_no_lock() -> None:
    fakes = Fakes.of(approvals(2))

    report = fakes.service(policy()).run()

    assert fakes.api.patches == []
    assert fakes.world.count("ensure_group") == 0
    assert fakes.world.count("get") == 0
    assert fakes.locks.taken == []
    assert report.missing_groups == ["PILOT"]
    assert fakes.store.states() == {"enr-1": ChangeState.NONE, "enr-2": ChangeState.NONE}
    assert fakes.store.runs[report.run_id].mode == RunMode.DRY_RUN


def test_a_second_live_run_finds_nothing_to_do() -> None:
    fakes = Fakes.of(approvals(2))
    fakes.service(policy(), live=True).run()

    again = fakes.service(policy(), live=True).run()

    assert len(fakes.api.patches) == 2
    assert fakes.store.states(again.run_id) == {"enr-1": ChangeState.NONE, "enr-2": ChangeState.NONE}
    assert dict(again.change_states) == {}


def test_a_held_lock_refuses_the_run_before_anything_is_stored() -> None:
    fakes = Fakes.of(approvals(1))
    with fakes.locks("prog-unit", "other-host:7"), pytest.raises(LockHeldError):
        fakes.service(policy(), live=True).run()
    assert fakes.store.runs == {}
    assert fakes.api.patches == []


# --- crash recovery ---------------------------------------------------------------------------


def crashed_run(fakes: Fakes, policy_: Policy, *, in_flight: list[str], retryable: list[str]) -> int:
    """What a killed live run leaves behind: a run still ``running``, its changes planned,
    some marked in flight (the PATCH may or may not have reached the API) or failed."""
    store = fakes.store
    run_id = store.start_run("prog-unit", RunMode.LIVE, 1, NOW)
    evaluator = Evaluator(policy_, NOW)
    store.add_decisions(run_id, "prog-unit", [evaluator.evaluate(e) for e in fakes.api.enrollments.values()])
    ids = {c.enrollment_id: c.decision_id for c in store.planned_changes(run_id)}
    store.mark_in_flight_many([ids[e] for e in in_flight + retryable])
    for enrollment_id in retryable:
        store.record_outcome(ids[enrollment_id], ChangeState.FAILED_RETRYABLE, http_status=503)
    return run_id


def test_reconcile_after_a_crash_recovers_what_was_applied_and_replans_the_rest() -> None:
    fakes = Fakes.of(approvals(4))
    crashed = crashed_run(fakes, policy(), in_flight=["enr-1", "enr-2"], retryable=["enr-3"])
    fakes.api.apply("enr-1", APPROVE)  # its PATCH reached the API before the crash
    fakes.api.apply("enr-3", APPROVE)  # it timed out after the API applied it

    report = fakes.service(policy(), live=True).run()

    assert fakes.store.states(crashed) == {
        "enr-1": ChangeState.RECOVERED,
        "enr-2": ChangeState.SUPERSEDED,
        "enr-3": ChangeState.RECOVERED,
        "enr-4": ChangeState.SUPERSEDED,
    }
    assert fakes.store.change_of("enr-2", crashed).error_message == f"re-planned by run {report.run_id}"
    assert report.recovered == 2
    assert sorted(e for e, _body in fakes.api.patches) == ["enr-2", "enr-4"]
    assert fakes.store.states(report.run_id) == {
        "enr-1": ChangeState.NONE,
        "enr-2": ChangeState.APPLIED,
        "enr-3": ChangeState.NONE,
        "enr-4": ChangeState.APPLIED,
    }
    assert fakes.store.runs[crashed].outcome == RunOutcome.INTERRUPTED
    assert "recovered 2 change(s)" in render_run_footer(report)


def test_reconcile_supersedes_when_the_recheck_read_fails() -> None:
    fakes = Fakes.of(approvals(1))
    crashed = crashed_run(fakes, policy(), in_flight=["enr-1"], retryable=[])
    fakes.api.fail("get", "enr-1", ApiRetryableError("GET failed", status_code=503))

    report = fakes.service(policy(), live=True).run()

    assert fakes.store.states(crashed) == {"enr-1": ChangeState.SUPERSEDED}
    assert report.recovered == 0
    assert fakes.api.patches == [("enr-1", APPROVE)]


def test_an_auth_failure_while_reconciling_stops_the_run() -> None:
    fakes = Fakes.of(approvals(1))
    crashed = crashed_run(fakes, policy(), in_flight=["enr-1"], retryable=[])
    fakes.api.fail("get", "enr-1", ApiAuthError("refused", status_code=401))

    with pytest.raises(ApiAuthError):
        fakes.service(policy(), live=True).run()

    assert fakes.store.states(crashed) == {"enr-1": ChangeState.IN_FLIGHT}
    assert fakes.api.patches == []
    assert fakes.store.runs[2].outcome == RunOutcome.FAILED


# --- the re-read before each change -----------------------------------------------------------


def test_the_default_rereads_each_enrollment_once_right_before_its_change() -> None:
    fakes = Fakes.of([*approvals(3), enrollment("enr-9", status="PAUSED")])

    fakes.service(policy(), live=True).run()

    assert sorted(fakes.world.keys("get")) == ["enr-1", "enr-2", "enr-3"]
    for enrollment_id in ("enr-1", "enr-2", "enr-3"):
        reread = fakes.world.calls.index(("get", enrollment_id))
        assert fakes.world.calls[reread + 1] == ("patch", enrollment_id)


def test_no_recheck_sends_no_reread() -> None:
    fakes = Fakes.of(approvals(3))

    fakes.service(policy(), live=True, recheck=False).run()

    assert fakes.world.count("get") == 0
    assert len(fakes.api.patches) == 3


def test_a_persons_decision_since_the_listing_is_kept() -> None:
    fakes = Fakes.of(approvals(2))

    def person_pauses(call: str, key: str) -> None:
        if (call, key) == ("get", "enr-1"):
            fakes.api.apply("enr-1", {"status": "PAUSED"})

    fakes.api.hooks.append(person_pauses)

    report = fakes.service(policy(), live=True).run()

    assert fakes.api.patches == [("enr-2", APPROVE)]
    change = fakes.store.change_of("enr-1")
    assert (change.change_state, change.error_message) == (
        ChangeState.SUPERSEDED,
        "status changed to PAUSED since it was listed (a person's decision is kept)",
    )
    assert dict(report.change_states) == {ChangeState.APPLIED: 1, ChangeState.SUPERSEDED: 1}
    assert report.failed == 0


def test_a_change_that_no_longer_stands_is_superseded() -> None:
    fakes = Fakes.of(approvals(1))

    def site_moves(call: str, key: str) -> None:
        if call == "get":
            fakes.api.enrollments[key]["site"]["state_code"] = "OK"
            fakes.api.enrollments[key]["updated_at"] = "2026-11-24T00:00:00Z"

    fakes.api.hooks.append(site_moves)

    fakes.service(policy(), live=True).run()

    assert fakes.api.patches == []
    change = fakes.store.change_of("enr-1")
    assert (change.change_state, change.error_message) == (
        ChangeState.SUPERSEDED,
        "the enrollment changed since it was listed; re-planned on the next run",
    )


def test_a_change_that_still_stands_after_an_update_is_sent() -> None:
    fakes = Fakes.of(approvals(1))

    def unrelated_edit(call: str, key: str) -> None:
        if call == "get":
            fakes.api.enrollments[key]["site"]["city"] = "Houston"
            fakes.api.enrollments[key]["updated_at"] = "2026-11-24T00:00:00Z"

    fakes.api.hooks.append(unrelated_edit)

    fakes.service(policy(), live=True).run()

    assert fakes.api.patches == [("enr-1", APPROVE)]
    assert fakes.store.states() == {"enr-1": ChangeState.APPLIED}


def test_a_failed_reread_is_retryable_and_sends_nothing() -> None:
    fakes = Fakes.of(approvals(1))
    fakes.api.fail("get", "enr-1", ApiRetryableError("GET failed after 4 attempts", status_code=503))

    report = fakes.service(policy(), live=True).run()

    assert fakes.api.patches == []
    change = fakes.store.change_of("enr-1")
    assert (change.change_state, change.http_status, change.error_message) == (
        ChangeState.FAILED_RETRYABLE,
        503,
        "HTTP 503",
    )
    assert report.failed == 1


# --- held moves out of ACTIVE -----------------------------------------------------------------


def test_a_move_out_of_active_is_held_and_listed() -> None:
    fakes = Fakes.of([enrollment("enr-active", status="ACTIVE", state="OK"), *approvals(1)])

    report = fakes.service(policy("  allow_leaving_active: [PAUSED]\n"), live=True).run()

    assert fakes.api.patches == [("enr-1", APPROVE)]
    held = fakes.store.change_of("enr-active")
    assert (held.change_state, held.error_message) == (
        ChangeState.HELD,
        "ACTIVE -> REJECTED is not in the policy's allow_leaving_active",
    )
    assert report.held == [HeldChange("enr-active", "REJECTED")]
    assert (report.failed, dict(report.change_states)) == (0, {ChangeState.APPLIED: 1, ChangeState.HELD: 1})
    footer = render_run_footer(report).splitlines()
    assert footer[-2:] == [
        "  held 1 move(s) out of ACTIVE (not in the policy's limits.allow_leaving_active; "
        "review them in the Flip dashboard):",
        "    enr-active: ACTIVE -> REJECTED",
    ]


def test_a_move_out_of_active_that_the_policy_allows_is_sent() -> None:
    fakes = Fakes.of([enrollment("enr-1", status="ACTIVE", state="OK")])

    report = fakes.service(policy("  allow_leaving_active: [REJECTED]\n"), live=True).run()

    assert fakes.api.patches == [("enr-1", REJECT)]
    assert report.held == []
    assert "held" not in render_run_footer(report)


def test_moves_within_applies_to_are_not_held() -> None:
    fakes = Fakes.of([enrollment("enr-1", status="PENDING", state="OK")])

    report = fakes.service(policy(), live=True).run()

    assert fakes.api.patches == [("enr-1", REJECT)]
    assert report.held == []


# --- circuit breakers -------------------------------------------------------------------------


def assert_stopped_before_sending(fakes: Fakes, report_run: int, reason: str) -> None:
    assert fakes.api.patches == []
    assert fakes.world.count("ensure_group") == 0
    assert fakes.world.count("get") == 0
    assert set(fakes.store.states(report_run).values()) == {ChangeState.HELD}
    held = [c.error_message for c in fakes.store.changes.values() if c.run_id == report_run]
    assert set(held) == {reason}  # each held change says why
    run = fakes.store.runs[report_run]
    assert (run.outcome, run.message) == (RunOutcome.ABORTED, reason)


def test_max_changes_flag_stops_the_run() -> None:
    fakes = Fakes.of(approvals(3))

    with pytest.raises(RunAborted, match="3 changes planned, more than the limit of 2"):
        fakes.service(policy(), live=True, max_changes=2).run()

    assert_stopped_before_sending(fakes, 1, "3 changes planned, more than the limit of 2")


def test_the_policys_max_changes_stops_the_run() -> None:
    fakes = Fakes.of(approvals(3))

    with pytest.raises(RunAborted):
        fakes.service(policy("  max_changes: 2\n"), live=True).run()

    assert_stopped_before_sending(fakes, 1, "3 changes planned, more than the limit of 2")


def test_the_flag_overrides_the_policys_max_changes() -> None:
    fakes = Fakes.of(approvals(3))

    report = fakes.service(policy("  max_changes: 2\n"), live=True, max_changes=3).run()

    assert len(fakes.api.patches) == 3
    assert report.outcome == RunOutcome.COMPLETED


def test_exactly_max_changes_goes_through() -> None:
    fakes = Fakes.of(approvals(3))

    fakes.service(policy("  max_changes: 3\n"), live=True).run()

    assert len(fakes.api.patches) == 3


def test_the_reject_ratio_stops_the_run() -> None:
    fakes = Fakes.of([enrollment("enr-r1", state="OK"), enrollment("enr-r2", state="OK"), *approvals(1)])

    with pytest.raises(RunAborted) as stopped:
        fakes.service(policy("  max_reject_ratio: 0.5\n"), live=True).run()

    reason = "the policy would reject 2 of 3 evaluated enrollments (67%), above its max_reject_ratio of 50%"
    assert str(stopped.value) == reason
    assert_stopped_before_sending(fakes, 1, reason)


def test_a_reject_ratio_at_the_limit_goes_through() -> None:
    fakes = Fakes.of([enrollment("enr-r1", state="OK"), *approvals(1)])

    fakes.service(policy("  max_reject_ratio: 0.5\n"), live=True).run()

    assert len(fakes.api.patches) == 2


# --- failures ---------------------------------------------------------------------------------


def test_a_long_retry_after_defers_the_change() -> None:
    fakes = Fakes.of(approvals(2))
    fakes.api.fail("patch", "enr-1", ApiRetryableError("rate limited", status_code=429, retry_after=300.0))

    report = fakes.service(policy(), live=True).run()

    change = fakes.store.change_of("enr-1")
    assert (change.change_state, change.http_status, change.error_message) == (
        ChangeState.DEFERRED,
        429,
        "HTTP 429",
    )
    assert fakes.store.states() == {"enr-1": ChangeState.DEFERRED, "enr-2": ChangeState.APPLIED}
    assert report.failed == 1


def test_a_server_error_after_retries_is_failed_retryable() -> None:
    fakes = Fakes.of(approvals(1))
    fakes.api.fail("patch", "enr-1", ApiRetryableError("503 after 4 attempts", status_code=503))

    report = fakes.service(policy(), live=True).run()

    assert fakes.store.states() == {"enr-1": ChangeState.FAILED_RETRYABLE}
    assert report.failed == 1


def test_a_refused_change_is_failed_permanent_without_the_apis_words() -> None:
    fakes = Fakes.of(approvals(2))
    refusal = ApiError(
        "Jane Doe at 1 Main St: status not allowed",
        status_code=422,
        code="validation_error",
        detail=[{"loc": ["body", "status"], "msg": "Jane Doe at 1 Main St"}],
    )
    fakes.api.fail("patch", "enr-2", refusal)

    report = fakes.service(policy(), live=True).run()

    change = fakes.store.change_of("enr-2")
    assert (
        change.change_state,
        change.http_status,
        change.api_error_code,
        change.api_error_locations,
        change.error_message,
    ) == (
        ChangeState.FAILED_PERMANENT,
        422,
        "validation_error",
        [["body", "status"]],
        "HTTP 422 validation_error",
    )
    assert fakes.store.states()["enr-1"] == ChangeState.APPLIED
    assert report.failed == 1
    assert dict(report.change_states) == {ChangeState.APPLIED: 1, ChangeState.FAILED_PERMANENT: 1}


def test_an_auth_failure_mid_run_stops_and_leaves_the_rest_planned() -> None:
    fakes = Fakes.of(approvals(5))
    fakes.api.fail("patch", "enr-2", ApiAuthError("forbidden", status_code=403))

    with pytest.raises(ApiAuthError):
        fakes.service(policy(), live=True, concurrency=1).run()

    assert [e for e, _ in fakes.api.patches] == ["enr-1"]
    assert fakes.store.states() == {
        "enr-1": ChangeState.APPLIED,
        "enr-2": ChangeState.FAILED_RETRYABLE,
        "enr-3": ChangeState.PLANNED,
        "enr-4": ChangeState.PLANNED,
        "enr-5": ChangeState.PLANNED,
    }
    assert [fakes.store.change_of(e).attempts for e in ("enr-3", "enr-4", "enr-5")] == [0, 0, 0]
    run = fakes.store.runs[1]
    assert (run.outcome, run.message) == (RunOutcome.FAILED, "API key refused: HTTP 403")


def test_an_auth_failure_on_the_reread_sends_nothing_more() -> None:
    fakes = Fakes.of(approvals(3))
    fakes.api.fail("get", "enr-1", ApiAuthError("unauthorized", status_code=401))

    with pytest.raises(ApiAuthError):
        fakes.service(policy(), live=True, concurrency=1).run()

    assert fakes.api.patches == []
    assert fakes.store.states() == {
        "enr-1": ChangeState.PLANNED,
        "enr-2": ChangeState.PLANNED,
        "enr-3": ChangeState.PLANNED,
    }


def test_a_failed_listing_stores_no_decision() -> None:
    fakes = Fakes.of(approvals(3))
    fakes.api.fail("list_item", "enr-3", ApiError("the answer was cut off"))

    with pytest.raises(ApiError):
        fakes.service(policy(), live=True).run()

    assert fakes.store.changes == {}
    run = fakes.store.runs[1]
    assert (run.outcome, run.message) == (RunOutcome.FAILED, "Flip API error: the answer was cut off")


def test_a_stop_request_ends_the_run_cleanly_after_the_change_in_progress() -> None:
    fakes = Fakes.of(approvals(4))
    stop = threading.Event()

    def stop_after_first(call: str, key: str) -> None:
        if (call, key) == ("patch", "enr-1"):
            stop.set()

    fakes.api.hooks.append(stop_after_first)

    report = fakes.service(policy(), live=True, concurrency=1, stop=stop).run()

    assert [e for e, _ in fakes.api.patches] == ["enr-1"]
    assert fakes.store.states() == {
        "enr-1": ChangeState.APPLIED,
        "enr-2": ChangeState.PLANNED,
        "enr-3": ChangeState.PLANNED,
        "enr-4": ChangeState.PLANNED,
    }
    assert report.outcome == RunOutcome.INTERRUPTED
    assert fakes.store.runs[1].outcome == RunOutcome.INTERRUPTED


# --- the lease --------------------------------------------------------------------------------


def test_the_lease_is_renewed_while_listing_storing_and_applying() -> None:
    # A 30 s lease is renewed every 10 s; each enrollment listed and decision stored takes
    # 4 s, each request 1 s (a re-read and a PATCH per change): every stage outlasts the lease.
    fakes = Fakes.of(approvals(20), ttl_s=30.0, step_s=4.0, request_step_s=1.0)

    report = fakes.service(policy(), live=True, concurrency=1).run()

    assert report.outcome == RunOutcome.COMPLETED
    calls = fakes.world
    assert calls.between("renew", "list_item", "list_item") >= 5  # 76 s of listing
    assert calls.between("renew", "add_decision", "add_decision") >= 5
    assert calls.between("renew", "patch", "patch") >= 2
    assert fakes.locks.taken[0].renewals == calls.count("renew")


def test_the_lease_is_renewed_while_reconciling() -> None:
    fakes = Fakes.of(approvals(10), ttl_s=30.0)
    crashed_run(fakes, policy(), in_flight=[f"enr-{i}" for i in range(1, 11)], retryable=[])
    fakes.world.calls.clear()

    def slow_rechecks(call: str, _key: str) -> None:
        if call == "get" and fakes.world.count("list") == 0:
            fakes.world.clock.advance(4.0)  # each re-check of a leftover change takes 4 s

    fakes.api.hooks.append(slow_rechecks)

    report = fakes.service(policy(), live=True).run()

    assert report.outcome == RunOutcome.COMPLETED
    assert fakes.world.between("renew", "get", "list") >= 3  # 40 s of re-checks


def test_a_lease_that_runs_out_refuses_the_runs_writes() -> None:
    fakes = Fakes.of(approvals(1), ttl_s=30.0)

    def hang(call: str, _key: str) -> None:
        if call == "list_item":
            fakes.world.clock.advance(31.0)  # one enrollment takes longer than the whole lease

    fakes.api.hooks.append(hang)

    with pytest.raises(LockHeldError):
        fakes.service(policy(), live=True).run()
    assert fakes.store.changes == {}


# --- what a run reports -----------------------------------------------------------------------


def test_the_stored_counts_and_the_progress_of_a_live_run() -> None:
    fakes = Fakes.of([*approvals(2), enrollment("enr-r", state="OK"), enrollment("enr-s", status="PAUSED")])
    progress: list[tuple[str, int, int]] = []

    def record(stage: str, done: int, total: int) -> None:
        progress.append((stage, done, total))

    report = fakes.service(policy(), live=True, concurrency=1, progress=record).run()

    assert fakes.store.runs[report.run_id].counts == {
        "transitions": {"SUBMITTED -> ACTIVE": 2, "SUBMITTED -> REJECTED": 1, "skip": 1},
        "actions": {"update": 3, "skip": 1},
        "changes": {ChangeState.APPLIED: 3},
        "recovered": 0,
        "unchanged": 0,  # a first run: every decision is new
    }
    assert progress == [
        (Stage.EVALUATING, 4, 4), (Stage.STORING, 4, 4),
        (Stage.APPLYING, 1, 3), (Stage.APPLYING, 2, 3), (Stage.APPLYING, 3, 3),
    ]  # fmt: skip
    assert fakes.store.runs[report.run_id].message is None
    assert [c.attempts for c in fakes.store.changes.values() if c.change_state == ChangeState.APPLIED] == [
        1,
        1,
        1,
    ]


def test_a_dry_run_reports_the_changes_it_would_make() -> None:
    fakes = Fakes.of([*approvals(1), enrollment("enr-s", status="PAUSED")])

    report = fakes.service(policy()).run()

    run = fakes.store.runs[report.run_id]
    assert (run.outcome, run.counts["changes"]) == (RunOutcome.COMPLETED, {})
    assert run.counts["actions"] == {"update": 1, "skip": 1}
    assert (report.live, report.failed, report.recovered) == (False, 0, 0)
    assert "1 change(s) would be sent; nothing was sent (dry run)" in render_run_footer(report)


def test_a_run_records_its_policy_version_holder_and_mode() -> None:
    fakes = Fakes.of(approvals(1))
    unit_policy = policy()

    report = fakes.service(unit_policy, live=True).run()

    run = fakes.store.runs[report.run_id]
    assert (run.mode, run.holder, run.policy_version_id, run.fencing_token) == (
        RunMode.LIVE,
        "unit-test:1",
        1,
        1,
    )
    assert fakes.store.version_texts[unit_policy.content_hash] == (
        "prog-unit",
        unit_policy.name or "prog-unit",
        unit_policy.version,
        unit_policy.source_text,
    )


def test_ctrl_c_while_listing_records_an_interrupted_run() -> None:
    fakes = Fakes.of(approvals(3))

    def ctrl_c(call: str, key: str) -> None:
        if (call, key) == ("list_item", "enr-2"):
            raise KeyboardInterrupt

    fakes.api.hooks.append(ctrl_c)

    with pytest.raises(KeyboardInterrupt):
        fakes.service(policy(), live=True).run()

    run = fakes.store.runs[1]
    assert (run.outcome, run.message) == (RunOutcome.INTERRUPTED, "interrupted")
    assert fakes.store.changes == {}


def test_a_lost_lease_is_recorded_in_the_runs_own_words() -> None:
    fakes = Fakes.of(approvals(1))
    fakes.api.fail("list_item", "enr-1", LockHeldError("the lease was taken over by host-b:9"))

    with pytest.raises(LockHeldError):
        fakes.service(policy(), live=True).run()

    run = fakes.store.runs[1]
    assert (run.outcome, run.message) == (RunOutcome.FAILED, "the lease was taken over by host-b:9")


def test_a_recovered_change_says_how_it_was_found() -> None:
    fakes = Fakes.of(approvals(1))
    crashed = crashed_run(fakes, policy(), in_flight=["enr-1"], retryable=[])
    fakes.api.apply("enr-1", APPROVE)

    fakes.service(policy(), live=True).run()

    change = fakes.store.change_of("enr-1", crashed)
    assert (change.change_state, change.error_message) == (
        ChangeState.RECOVERED,
        "found applied when re-checked after an interrupted or failed attempt",
    )
