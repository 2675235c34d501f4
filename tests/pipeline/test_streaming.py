"""Runs that stream their decisions (the CLI's way): nothing of the decisions is kept in
the report but counts and a live run's changes, every decision reaches the sink and the
store, and a broken list still stores nothing."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import func, select

from engine.errors import ApiResponseError
from engine.policy.decision import Action, Decision
from engine.policy.document import Policy
from engine.render.text import render_run_footer
from engine.sandbox.generator import TX_BATTERY_PROGRAM
from engine.sandbox.simulator import Simulator
from engine.store.schema import DecisionRow

from .conftest import BOTH_STORES, TX_COUNT, Pipeline


def stored(pipeline: Pipeline, run_id: int) -> int:
    with pipeline.store.engine.connect() as connection:
        query = select(func.count()).select_from(DecisionRow).where(DecisionRow.run_id == run_id)
        return int(connection.execute(query).scalar_one())


def test_a_streamed_dry_run_keeps_counts_only(
    simulator: Simulator, pipeline: Pipeline, tx_policy: Policy
) -> None:
    seen: list[Decision] = []
    report = pipeline.run(tx_policy, on_decision=seen.append)

    listed = [e["id"] for e in simulator.enrollments(TX_BATTERY_PROGRAM)]
    assert [d.enrollment_id for d in seen] == listed  # in listing order, each once
    assert report.decisions == []
    assert report.changes == []  # a dry run applies nothing, so it keeps nothing
    assert sum(report.action_counts.values()) == TX_COUNT
    needed = sum(1 for d in seen if d.action is Action.UPDATE)
    assert needed
    assert report.needed == needed
    assert report.transitions == {t: sum(1 for d in seen if d.transition == t) for t in report.transitions}
    assert stored(pipeline, report.run_id) == TX_COUNT
    assert f"{needed} change(s) would be sent" in render_run_footer(report)


@BOTH_STORES
def test_a_streamed_live_run_keeps_just_its_changes_and_applies_them(
    simulator: Simulator, pipeline: Pipeline, tx_policy: Policy
) -> None:
    seen: list[Decision] = []
    report = pipeline.run(tx_policy, live=True, on_decision=seen.append)

    updates = [d for d in seen if d.action is Action.UPDATE]
    assert [d.enrollment_id for d in report.changes] == [d.enrollment_id for d in updates]
    assert dict(report.change_states) == {"applied": len(updates)}
    assert report.decisions == []


@BOTH_STORES
@pytest.mark.parametrize("fault", ["malformed", "truncate"])
def test_a_broken_list_stores_nothing_even_when_streamed(
    simulator: Simulator, pipeline: Pipeline, tx_policy: Policy, fault: str
) -> None:
    simulator.script("GET", "^/v1/enrollments$", fault)
    seen: list[Any] = []
    with pytest.raises(ApiResponseError):
        pipeline.run(tx_policy, live=True, on_decision=seen.append)
    (run,) = pipeline.store.list_runs(TX_BATTERY_PROGRAM)
    assert run.outcome == "failed"
    assert stored(pipeline, run.id) == 0
    assert pipeline.store.open_changes(TX_BATTERY_PROGRAM) == []
