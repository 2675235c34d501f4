"""What keeps a live run from doing harm: the stale-data guard, the circuit breakers, the
ACTIVE guard and dry runs that never write, against the real simulator and store; and the
same circuit breakers and ACTIVE guard on an ``apply`` of a saved plan."""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cli_process import CliResult, run_cli
from sqlalchemy import select

from engine.errors import ApiError, RunAborted
from engine.policy.decision import Action, Decision
from engine.policy.document import Policy
from engine.runs.report import RunReport
from engine.sandbox.generator import TX_BATTERY_PROGRAM
from engine.sandbox.simulator import Simulator
from engine.store import Store
from engine.store.schema import DecisionRow

from .conftest import BOTH_STORES, NOW_ARG, Pipeline, cli_env, group_ids, tx_document, writes

NEW_GROUP = "PILOT_GUARDS"


def rows(store: Store, run_id: int) -> dict[str, Any]:
    with store.engine.connect() as connection:
        found = connection.execute(select(DecisionRow).where(DecisionRow.run_id == run_id)).all()
    return {row.enrollment_id: row for row in found}


def updates(report: RunReport) -> dict[str, Decision]:
    return {d.enrollment_id or "": d for d in report.decisions if d.action is Action.UPDATE}


def with_new_group(document: dict[str, Any]) -> dict[str, Any]:
    document["groups"].append(
        {"id": "new-pilot", "when": {"==": [{"var": "decision.status"}, "ACTIVE"]}, "add": [NEW_GROUP]}
    )
    return document


def rejecting_document() -> dict[str, Any]:
    """A Texas policy that rejects all but the biggest batteries: most of the program."""
    document = tx_document()
    document["rules"] = [
        {
            "id": "approve-huge",
            "when": {">=": [{"var": ["totals.battery_capacity_wh", 0]}, 25000]},
            "status": "ACTIVE",
            "reason": "Very large battery",
        }
    ]
    document["default"] = {"status": "REJECTED", "reason": "Battery too small for this pilot"}
    document["limits"] = {"max_reject_ratio": 0.2}
    return with_new_group(document)


# --- 12. an enrollment a person changed between listing and applying ------------------------


@BOTH_STORES
def test_an_enrollment_changed_by_a_person_after_listing_is_not_overwritten(
    simulator: Simulator, pipeline: Pipeline, tx_policy: Policy
) -> None:
    plan = updates(pipeline.run(tx_policy))
    approved_by_person = next(e for e, d in plan.items() if d.status == "REJECTED")
    downsized = next(e for e, d in plan.items() if d.status == "ACTIVE")
    edited: list[str] = []

    def people_act_once_evaluated(stage: str, done: int, total: int) -> None:
        # After every enrollment was listed and decided, before any change is sent.
        if stage == "evaluating" and done == total and not edited:
            simulator.edit_enrollment(approved_by_person, status="ACTIVE", status_reason="approved by hand")
            devices = copy.deepcopy(simulator.enrollment(downsized)["devices"])
            for device in devices:
                (device.get("attributes") or {})["battery_capacity_wh"] = 1000
            simulator.edit_enrollment(downsized, devices=devices)
            edited.extend([approved_by_person, downsized])

    first = pipeline.run(tx_policy, live=True, progress=people_act_once_evaluated)

    assert edited
    assert simulator.patch_count(approved_by_person) == 0
    assert simulator.patch_count(downsized) == 0
    person = simulator.enrollment(approved_by_person)
    assert (person["status"], person["status_reason"]) == ("ACTIVE", "approved by hand")
    stored = rows(pipeline.store, first.run_id)
    assert stored[approved_by_person].change_state == "superseded"
    assert "ACTIVE" in stored[approved_by_person].error_message
    assert stored[downsized].change_state == "superseded"
    assert first.change_states == {"applied": len(plan) - 2, "superseded": 2}

    second = pipeline.run(tx_policy, live=True)

    assert approved_by_person not in updates(second)  # ACTIVE is not the policy's to review
    redecided = updates(second)[downsized]
    assert redecided.status != "ACTIVE"
    assert rows(pipeline.store, second.run_id)[downsized].change_state == "applied"
    assert simulator.enrollment(downsized)["status"] == redecided.status
    assert simulator.enrollment(approved_by_person)["status"] == "ACTIVE"


# --- 14. circuit breakers -------------------------------------------------------------------


@BOTH_STORES
def test_a_policy_rejecting_most_of_the_program_is_aborted_before_any_write(
    simulator: Simulator, pipeline: Pipeline, write_policy: Callable[..., Policy]
) -> None:
    policy = write_policy(rejecting_document())
    preview = pipeline.run(policy)
    evaluated = [d for d in preview.decisions if d.action in (Action.UPDATE, Action.NONE)]
    rejected = [d for d in evaluated if d.status == "REJECTED" and d.status_changes]
    assert len(rejected) / len(evaluated) > 0.8

    service = pipeline.service(policy, live=True)
    with pytest.raises(RunAborted, match="max_reject_ratio of 20%") as caught:
        service.run()

    assert f"reject {len(rejected)} of {len(evaluated)}" in str(caught.value)
    assert writes(simulator) == 0, "an aborted run must neither change enrollments nor create groups"
    runs = pipeline.store.list_runs(TX_BATTERY_PROGRAM)
    assert (runs[0].mode, runs[0].outcome) == ("live", "aborted")
    assert "max_reject_ratio" in (runs[0].message or "")
    held = {
        e: r.change_state for e, r in rows(pipeline.store, runs[0].id).items() if r.change_state != "none"
    }
    assert set(held.values()) == {"held"}
    assert len(held) == len(updates(preview))
    assert pipeline.store.open_changes(TX_BATTERY_PROGRAM) == []


def test_max_changes_aborts_a_live_run(simulator: Simulator, pipeline: Pipeline, tx_policy: Policy) -> None:
    needed = len(updates(pipeline.run(tx_policy)))

    with pytest.raises(RunAborted, match=f"{needed} changes planned, more than the limit of 5"):
        pipeline.run(tx_policy, live=True, max_changes=5)

    assert writes(simulator) == 0
    report = pipeline.run(tx_policy, live=True, max_changes=needed)  # exactly at the limit
    assert report.change_states == {"applied": needed}


def test_cli_exits_5_on_a_circuit_breaker(
    simulator: Simulator, tmp_path: Path, write_policy: Callable[..., Policy]
) -> None:
    write_policy(rejecting_document(), name="rejecting.yaml")
    env = cli_env(simulator, f"sqlite:///{tmp_path / 'cli.db'}")
    live = ["--now", NOW_ARG, "--live", "--yes"]

    ratio = run_cli(["run", "--rules", str(tmp_path / "rejecting.yaml"), *live], env=env)

    assert ratio.code == 5, ratio.stderr
    assert "nothing was applied" in ratio.stderr
    assert "max_reject_ratio" in ratio.stderr
    assert writes(simulator) == 0


@pytest.mark.slow
def test_cli_exits_5_above_max_changes(simulator: Simulator, tmp_path: Path) -> None:
    env = cli_env(simulator, f"sqlite:///{tmp_path / 'cli.db'}")
    args = ["run", "--rules", "rules/tx_residential_battery.yaml", "--max-changes", "3"]

    limit = run_cli([*args, "--now", NOW_ARG, "--live", "--yes"], env=env)

    assert limit.code == 5, limit.stderr
    assert "more than the limit of 3" in limit.stderr
    assert writes(simulator) == 0


# --- leaving ACTIVE -------------------------------------------------------------------------


def reviewing_active_document(allow: list[str]) -> dict[str, Any]:
    document = tx_document()
    document["applies_to"] = ["SUBMITTED", "PENDING", "ACTIVE"]
    document["limits"] = {"allow_leaving_active": allow}
    return document


@pytest.mark.parametrize("allow", [[], ["REJECTED", "PENDING", "NEEDS_ACTION"]])
def test_leaving_active_is_held_unless_the_policy_allows_it(
    simulator: Simulator, pipeline: Pipeline, write_policy: Callable[..., Policy], allow: list[str]
) -> None:
    policy = write_policy(reviewing_active_document(allow))
    plan = updates(pipeline.run(policy))
    leaving = {e: d for e, d in plan.items() if d.current_status == "ACTIVE" and d.status_changes}
    assert any(d.status == "REJECTED" for d in leaving.values()), "the seeded data must have such a case"

    report = pipeline.run(policy, live=True)

    stored = rows(pipeline.store, report.run_id)
    for enrollment_id, decision in plan.items():
        row = stored[enrollment_id]
        if enrollment_id in leaving and decision.status not in allow:
            assert row.change_state == "held"
            assert f"ACTIVE -> {decision.status}" in row.error_message
            assert simulator.patch_count(enrollment_id) == 0
            assert simulator.enrollment(enrollment_id)["status"] == "ACTIVE"
        else:
            assert row.change_state == "applied"
            assert simulator.enrollment(enrollment_id)["status"] == (
                decision.status or decision.current_status
            )
            assert group_ids(simulator.enrollment(enrollment_id)) == set(decision.group_ids)
    held = sum(1 for d in leaving.values() if d.status not in allow)
    assert report.change_states["held"] == held
    assert report.change_states["applied"] == len(plan) - held
    assert pipeline.store.open_changes(TX_BATTERY_PROGRAM) == []  # held waits for a person


# --- 15. dry runs never write ---------------------------------------------------------------


@pytest.mark.parametrize(
    "faults", [{}, {"error_rate": 0.3, "drop": 0.1, "rate_limit": 0.2, "retry_after_s": 0}]
)
def test_a_dry_run_sends_no_write_even_with_faults(
    simulator: Simulator, pipeline: Pipeline, write_policy: Callable[..., Policy], faults: dict[str, Any]
) -> None:
    simulator.set_faults(seed=3, **faults)
    policies = [write_policy(with_new_group(tx_document())), write_policy(rejecting_document())]
    for policy in policies:
        for _ in range(3):
            try:
                report = pipeline.run(policy)
            except ApiError:
                continue
            assert report.missing_groups == [NEW_GROUP]
            assert pipeline.store.open_changes(TX_BATTERY_PROGRAM) == []
    assert writes(simulator) == 0
    assert simulator.request_counts()["GET"] >= 6
    assert NEW_GROUP not in {g["id"] for g in simulator.groups(TX_BATTERY_PROGRAM)}


# --- the same guards on an apply ------------------------------------------------------------


def plan_and_apply(simulator: Simulator, tmp_path: Path, rules: Path) -> tuple[dict[str, Any], CliResult]:
    """``plan --out`` then ``apply --yes`` of that plan through the CLI: the plan, the apply."""
    env = cli_env(simulator, f"sqlite:///{tmp_path / 'cli.db'}")
    out = tmp_path / "plan.json"
    planned = run_cli(["plan", "--rules", str(rules), "--now", NOW_ARG, "--out", str(out)], env=env)
    assert planned.code == 0, planned.stderr
    return json.loads(out.read_text(encoding="utf-8")), run_cli(["apply", str(out), "--yes"], env=env)


def test_an_apply_holds_the_moves_out_of_active_a_live_run_would_hold(
    simulator: Simulator, tmp_path: Path, write_policy: Callable[..., Policy]
) -> None:
    write_policy(reviewing_active_document([]), name="active.yaml")

    plan, applied = plan_and_apply(simulator, tmp_path, tmp_path / "active.yaml")

    assert applied.code == 0, applied.stderr
    changes = {c["enrollment_id"]: c for c in plan["changes"]}
    leaving = {e for e, c in changes.items() if c["current"]["status"] == "ACTIVE" != c["planned"]["status"]}
    assert leaving, "the seeded data must have such a case"
    with Store.open(f"sqlite:///{tmp_path / 'cli.db'}") as store:
        stored = {e: store.latest_decision(e) for e in changes}
    for enrollment_id, change in changes.items():
        row = stored[enrollment_id]
        assert row is not None
        if enrollment_id in leaving:
            status = change["planned"]["status"]
            assert (row.change_state, row.error_message) == (
                "held",
                f"ACTIVE -> {status} is not in the policy's allow_leaving_active",
            )
            assert simulator.patch_count(enrollment_id) == 0
        else:
            assert row.change_state == "applied"
    assert f"held {len(leaving)}" in applied.stderr


@pytest.mark.parametrize(
    ("limits", "reason"),
    [
        ({"max_reject_ratio": 0.2}, r"the plan rejects \d+ of \d+ evaluated enrollments \(\d+%\), "
         r"above the policy's max_reject_ratio of 20%"),
        ({"max_changes": 3}, r"\d+ changes planned, more than the limit of 3"),
    ],
)  # fmt: skip
def test_an_apply_over_a_limit_sends_nothing_and_leaves_the_plan_saved(
    simulator: Simulator,
    tmp_path: Path,
    write_policy: Callable[..., Policy],
    limits: dict[str, Any],
    reason: str,
) -> None:
    document = rejecting_document()
    document["limits"] = limits
    write_policy(document, name="limited.yaml")

    _plan, applied = plan_and_apply(simulator, tmp_path, tmp_path / "limited.yaml")
    env = cli_env(simulator, f"sqlite:///{tmp_path / 'cli.db'}")
    again = run_cli(["apply", str(tmp_path / "plan.json"), "--yes"], env=env)

    for result in (applied, again):  # the plan was not claimed: refused the same way again
        assert result.code == 5, result.stderr
        assert re.search(reason, result.stderr), result.stderr
    assert writes(simulator) == 0, "neither a change nor a new group"
