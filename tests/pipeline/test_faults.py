"""Safe unattended runs: every fault comes from the real simulator over real HTTP, every
outcome is read back from the real store ("safe unattended runs", section 6)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from cli_process import run_cli
from sqlalchemy import select

from engine.errors import ApiAuthError, ApiResponseError
from engine.policy.decision import Action, Decision
from engine.policy.document import Policy
from engine.runs.report import RunReport
from engine.sandbox.generator import TX_BATTERY_PROGRAM
from engine.sandbox.simulator import Simulator
from engine.store import Store
from engine.store.schema import DecisionRow

from .conftest import (
    BOTH_STORES,
    HANG_S,
    NOW_ARG,
    TX_RULES,
    Pipeline,
    RecordingSleep,
    cli_env,
    group_ids,
    tx_document,
    writes,
)

NEW_GROUP = "PILOT_FAULTS"


# --- helpers --------------------------------------------------------------------------------


def rows(store: Store, run_id: int) -> dict[str, Any]:
    """The run's decision rows by enrollment id."""
    with store.engine.connect() as connection:
        found = connection.execute(select(DecisionRow).where(DecisionRow.run_id == run_id)).all()
    return {row.enrollment_id: row for row in found}


def states(store: Store, run_id: int) -> dict[str, str]:
    return {e: row.change_state for e, row in rows(store, run_id).items() if row.change_state != "none"}


def updates(report: RunReport) -> dict[str, Decision]:
    return {d.enrollment_id or "": d for d in report.decisions if d.action is Action.UPDATE}


def planned_updates(pipeline: Pipeline, policy: Policy) -> dict[str, Decision]:
    """What a dry run says must change (the dry run sends nothing)."""
    return updates(pipeline.run(policy))


def assert_applied(simulator: Simulator, decision: Decision) -> None:
    now = simulator.enrollment(decision.enrollment_id or "")
    if decision.status is not None:
        assert now["status"] == decision.status
    assert group_ids(now) == set(decision.group_ids)


def path_of(enrollment_id: str) -> str:
    return f"^/v1/enrollments/{enrollment_id}$"


def policy_with_new_group(write_policy: Callable[..., Policy]) -> Policy:
    document = tx_document()
    document["groups"].append(
        {"id": "new-pilot", "when": {"==": [{"var": "decision.status"}, "ACTIVE"]}, "add": [NEW_GROUP]}
    )
    return write_policy(document)


# --- 1. dropped connections, then success ---------------------------------------------------


@BOTH_STORES
def test_dropped_connections_then_success_apply_once_and_count_attempts(
    simulator: Simulator, pipeline: Pipeline, tx_policy: Policy
) -> None:
    plan = planned_updates(pipeline, tx_policy)
    target = next(iter(plan))
    simulator.script("PATCH", path_of(target), "drop", times=2)
    simulator.script("GET", "^/v1/enrollments$", "drop")

    report = pipeline.run(tx_policy, live=True)

    assert report.outcome == "completed"
    assert dict(report.change_states) == {"applied": len(plan)}
    assert simulator.pending_scripts() == 0
    assert simulator.patch_count(target) == 3  # two dropped, one answered
    assert_applied(simulator, plan[target])
    row = rows(pipeline.store, report.run_id)[target]
    assert row.change_state == "applied"
    assert row.attempts == 3, "the store must record every HTTP attempt of the change"
    others = [rows(pipeline.store, report.run_id)[e] for e in plan if e != target]
    assert {r.attempts for r in others} == {1}


# --- 2. a PATCH that times out after the API applied it -------------------------------------


@BOTH_STORES
def test_patch_timing_out_after_it_was_applied_is_not_applied_twice(
    simulator: Simulator,
    pipeline: Pipeline,
    make_client: Callable[..., Any],
    tx_policy: Policy,
) -> None:
    plan = planned_updates(pipeline, tx_policy)
    target = next(e for e, d in plan.items() if d.status == "ACTIVE")
    client = make_client(timeout_s=HANG_S / 3)
    simulator.script("PATCH", path_of(target), "timeout", after_apply=True)

    first = pipeline.run(tx_policy, live=True, client=client)

    # The first attempt took effect and timed out; the retry (same body) was answered.
    row = rows(pipeline.store, first.run_id)[target]
    assert (row.change_state, row.attempts, row.http_status) == ("applied", 2, None)
    assert simulator.patch_count(target) == 2
    assert_applied(simulator, plan[target])

    second = pipeline.run(tx_policy, live=True, client=client)

    assert simulator.patch_count(target) == 2
    assert states(pipeline.store, first.run_id)[target] == "applied"
    assert target not in updates(second)
    assert second.outcome == "completed"
    assert_applied(simulator, plan[target])


def test_patch_that_times_out_on_every_attempt_is_recovered_by_the_next_run(
    simulator: Simulator,
    pipeline: Pipeline,
    make_client: Callable[..., Any],
    tx_policy: Policy,
) -> None:
    plan = planned_updates(pipeline, tx_policy)
    target = next(e for e, d in plan.items() if d.status == "ACTIVE")
    # Two attempts: the retry budget bounds the identical PATCHes a flaky network causes.
    client = make_client(timeout_s=HANG_S / 3, max_attempts=2)
    simulator.script("PATCH", path_of(target), "timeout", times=2, after_apply=True)

    first = pipeline.run(tx_policy, live=True, client=client)

    row = rows(pipeline.store, first.run_id)[target]
    assert (row.change_state, row.http_status) == ("failed_retryable", None)
    assert first.failed == 1
    assert simulator.patch_count(target) == 2
    assert_applied(simulator, plan[target])  # the API did apply it

    second = pipeline.run(tx_policy, live=True, client=client)

    assert second.recovered == 1
    assert states(pipeline.store, first.run_id)[target] == "recovered"
    assert simulator.patch_count(target) == 2
    assert target not in updates(second)


# --- 3. rate limits -------------------------------------------------------------------------


@pytest.mark.parametrize("form", ["seconds", "http-date"])
def test_retry_after_is_honoured_and_nothing_is_sent_while_waiting(
    simulator: Simulator,
    pipeline: Pipeline,
    make_client: Callable[..., Any],
    recording_sleep: RecordingSleep,
    tx_policy: Policy,
    form: str,
) -> None:
    plan = planned_updates(pipeline, tx_policy)
    target = list(plan)[2]
    client = make_client(sleep=recording_sleep)
    simulator.script("PATCH", path_of(target), "429", retry_after=1, retry_after_form=form)

    report = pipeline.run(tx_policy, live=True, client=client, concurrency=4)

    assert dict(report.change_states) == {"applied": len(plan)}
    assert simulator.patch_count(target) == 2
    long_waits = [w for w in recording_sleep.waits if w[0] >= 0.5]
    assert long_waits, "the client must wait for Retry-After"
    assert max(w[0] for w in long_waits) == pytest.approx(1.0, abs=0.05)
    for seconds, started, _ended in long_waits:
        # Requests already on the wire when the 429 arrived may land just after the wait
        # began, and a thread whose wait is over may send before another one wakes up.
        assert recording_sleep.requests_during(started + 0.15, started + seconds - 0.05) == []
    assert_applied(simulator, plan[target])


def test_a_huge_retry_after_defers_the_change_without_hanging(
    simulator: Simulator,
    pipeline: Pipeline,
    make_client: Callable[..., Any],
    recording_sleep: RecordingSleep,
    tx_policy: Policy,
) -> None:
    plan = planned_updates(pipeline, tx_policy)
    target = list(plan)[1]
    client = make_client(sleep=recording_sleep, max_retry_after_s=5)
    simulator.script("PATCH", path_of(target), "429", retry_after=3600)

    first = pipeline.run(tx_policy, live=True, client=client)

    assert all(seconds < 1 for seconds, _s, _e in recording_sleep.waits)  # never the 3600 s
    row = rows(pipeline.store, first.run_id)[target]
    assert (row.change_state, row.http_status, row.api_error_code) == ("deferred", 429, "rate_limited")
    assert first.change_states == {"applied": len(plan) - 1, "deferred": 1}
    assert first.failed == 1  # a deferred change is not applied yet: the run exits 1
    assert simulator.patch_count(target) == 1
    assert simulator.enrollment(target)["status"] == plan[target].current_status

    second = pipeline.run(tx_policy, live=True, client=client)

    assert states(pipeline.store, second.run_id) == {target: "applied"}
    assert states(pipeline.store, first.run_id)[target] == "superseded"
    assert_applied(simulator, plan[target])


# --- 4. 5xx beyond the retry budget ---------------------------------------------------------


@BOTH_STORES
def test_server_errors_beyond_the_budget_fail_one_change_and_the_next_run_applies_it(
    simulator: Simulator, pipeline: Pipeline, tx_policy: Policy
) -> None:
    plan = planned_updates(pipeline, tx_policy)
    target = list(plan)[3]
    simulator.script("PATCH", path_of(target), "503", times=4)  # the client's whole budget

    first = pipeline.run(tx_policy, live=True)

    assert first.outcome == "completed"
    assert first.change_states == {"applied": len(plan) - 1, "failed_retryable": 1}
    row = rows(pipeline.store, first.run_id)[target]
    assert (row.change_state, row.http_status, row.api_error_code) == (
        "failed_retryable",
        503,
        "service_unavailable",
    )
    assert row.attempts == 4
    assert simulator.enrollment(target)["status"] == plan[target].current_status
    for enrollment_id, decision in plan.items():
        if enrollment_id != target:
            assert_applied(simulator, decision)

    second = pipeline.run(tx_policy, live=True)

    assert states(pipeline.store, second.run_id) == {target: "applied"}
    assert simulator.patch_count(target) == 5
    assert_applied(simulator, plan[target])


# --- 5. a 422 with the full error body ------------------------------------------------------


def test_validation_error_is_not_retried_and_only_its_code_and_locations_are_stored(
    simulator: Simulator, pipeline: Pipeline, write_policy: Callable[..., Policy]
) -> None:
    policy = policy_with_new_group(write_policy)
    plan = planned_updates(pipeline, policy)
    headers = {"Authorization": f"Bearer {simulator.config.api_key}"}
    renamed: list[int] = []

    def rename_group_after_first_change(stage: str, done: int, _total: int) -> None:
        # A person renames the new group's id while the run applies: the remaining
        # PATCHes name a group that no longer exists and the API answers 422.
        if stage == "applying" and done == 1 and not renamed:
            url = f"{simulator.base_url}/v1/programs/{TX_BATTERY_PROGRAM}/groups/{NEW_GROUP}"
            renamed.append(httpx.patch(url, json={"id": "PILOT_RENAMED"}, headers=headers).status_code)

    report = pipeline.run(policy, live=True, concurrency=1, progress=rename_group_after_first_change)

    assert renamed == [200]
    failed = {
        e: r for e, r in rows(pipeline.store, report.run_id).items() if r.change_state == "failed_permanent"
    }
    assert failed, "some change must have named the renamed group"
    for enrollment_id, row in failed.items():
        assert NEW_GROUP in plan[enrollment_id].groups_added
        assert simulator.patch_count(enrollment_id) == 1  # not retried
        assert (row.http_status, row.api_error_code) == (422, "group_not_found")
        index = plan[enrollment_id].group_ids.index(NEW_GROUP)
        assert ["body", "group_ids", index] in row.api_error_locations
        site = simulator.enrollment(enrollment_id)["site"]
        message = row.error_message or ""
        assert "does not exist" not in message  # the API's free text is not kept
        for key in ("first_name", "last_name", "email", "street_address", "zip_code"):
            if site.get(key):
                assert str(site[key]) not in message
    assert report.failed == len(failed)


# --- 6. 401 in the middle of a run ----------------------------------------------------------


@BOTH_STORES
def test_a_key_refused_mid_run_stops_the_run_and_leaves_the_rest_planned(
    simulator: Simulator, pipeline: Pipeline, tx_policy: Policy
) -> None:
    plan = planned_updates(pipeline, tx_policy)

    def rotate_key_after_three(stage: str, done: int, _total: int) -> None:
        if stage == "applying" and done == 3:
            simulator.set_api_key("fl_rotated_elsewhere")

    service = pipeline.service(tx_policy, live=True, concurrency=1, progress=rotate_key_after_three)
    with pytest.raises(ApiAuthError):
        service.run()

    (run,) = [r for r in pipeline.store.list_runs(TX_BATTERY_PROGRAM) if r.mode == "live"]
    assert run.outcome == "failed"
    assert "refused" in (run.message or "")
    found = states(pipeline.store, run.id)
    applied = [e for e, s in found.items() if s == "applied"]
    refused = [e for e, s in found.items() if s == "failed_retryable"]
    planned = [e for e, s in found.items() if s == "planned"]
    assert 3 <= len(applied) <= 4  # one more may already have been under way
    assert len(refused) <= 1
    assert len(planned) == len(plan) - len(applied) - len(refused)
    assert planned
    assert {e: simulator.patch_count(e) for e in planned} == dict.fromkeys(planned, 0)
    for enrollment_id in applied:
        assert_applied(simulator, plan[enrollment_id])

    simulator.set_api_key(simulator.config.api_key)
    again = pipeline.run(tx_policy, live=True)
    assert again.outcome == "completed"
    assert again.change_states == {"applied": len(planned) + len(refused)}
    for decision in plan.values():
        assert_applied(simulator, decision)


def test_cli_exits_3_when_the_key_is_refused_mid_run(simulator: Simulator, tmp_path: Path) -> None:
    db_url = f"sqlite:///{tmp_path / 'cli.db'}"
    simulator.script("PATCH", "^/v1/enrollments/", "401")

    args = ["run", "--rules", str(TX_RULES), "--now", NOW_ARG, "--live", "--yes", "--concurrency", "1"]
    result = run_cli(args, env=cli_env(simulator, db_url))

    assert result.code == 3, result.stderr
    assert "refused the key" in result.stderr
    assert simulator.request_counts()["PATCH"] == 1
    with Store.open(db_url) as store:
        (run,) = store.list_runs()
        assert run.outcome == "failed"
        left = states(store, run.id)
    assert list(left.values()).count("planned") == len(left) - 1


# --- 7. group creation that times out after the API created the group -----------------------


def test_group_creation_timing_out_after_it_took_effect_makes_no_duplicate(
    simulator: Simulator,
    pipeline: Pipeline,
    make_client: Callable[..., Any],
    write_policy: Callable[..., Policy],
) -> None:
    policy = policy_with_new_group(write_policy)
    client = make_client(timeout_s=HANG_S / 3)
    simulator.script("POST", "/groups$", "timeout", after_apply=True)

    first = pipeline.run(policy, live=True, client=client)

    assert simulator.request_counts()["POST"] == 1  # an ambiguous POST is not sent again
    assert [g["id"] for g in simulator.groups(TX_BATTERY_PROGRAM)].count(NEW_GROUP) == 1
    assert first.created_groups == [NEW_GROUP]
    assert first.outcome == "completed"
    assert first.failed == 0

    second = pipeline.run(policy, live=True, client=client)

    assert (second.missing_groups, second.created_groups) == ([], [])
    assert simulator.request_counts()["POST"] == 1
    assert [g["id"] for g in simulator.groups(TX_BATTERY_PROGRAM)].count(NEW_GROUP) == 1


# --- 8. malformed and truncated list answers ------------------------------------------------


@BOTH_STORES
@pytest.mark.parametrize("fault", ["malformed", "truncate"])
def test_a_broken_list_answer_fails_the_run_before_deciding_anything(
    simulator: Simulator, pipeline: Pipeline, tx_policy: Policy, fault: str
) -> None:
    simulator.script("GET", "^/v1/enrollments$", fault)

    service = pipeline.service(tx_policy, live=True)
    with pytest.raises(ApiResponseError):
        service.run()

    (run,) = pipeline.store.list_runs(TX_BATTERY_PROGRAM)
    assert (run.mode, run.outcome) == ("live", "failed")
    assert rows(pipeline.store, run.id) == {}
    assert pipeline.store.open_changes(TX_BATTERY_PROGRAM) == []
    assert simulator.request_counts() == {"GET": 1}
    assert writes(simulator) == 0


def test_cli_exits_6_on_a_malformed_list(simulator: Simulator, tmp_path: Path) -> None:
    simulator.script("GET", "^/v1/enrollments$", "malformed")
    env = cli_env(simulator, f"sqlite:///{tmp_path / 'cli.db'}")

    result = run_cli(["run", "--rules", str(TX_RULES), "--now", NOW_ARG, "--live", "--yes"], env=env)

    assert result.code == 6, result.stderr
    assert "malformed" in result.stderr
    assert result.stdout == ""
    assert writes(simulator) == 0
