"""Change-only storage against the real simulator and store: a run records a decision only
when it differs from the enrollment's latest, yet "what did run N decide for X" (the latest
row at or before run N) answers exactly what run N decided, for every run and enrollment."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy import func, select

from engine.policy.decision import Action, Decision
from engine.policy.document import Policy
from engine.sandbox.generator import TX_BATTERY_PROGRAM
from engine.sandbox.simulator import Simulator
from engine.store.schema import DecisionRow

from .conftest import BOTH_STORES, NOW, TX_COUNT, Pipeline, tx_document

# Everything a stored decision says; ``updated_at`` is left out on purpose (an edit to an
# unread field changes nothing decided), and runs keep no trace.
FIELDS = ("enrollment_id", "current_status", "status", "reason", "rule_id", "group_ids",
          "current_group_ids", "groups_added", "groups_removed", "action", "warnings", "error",
          "facts_fingerprint")  # fmt: skip


def said(decision: Decision) -> dict[str, Any]:
    data = decision.to_dict()
    return {key: data[key] for key in FIELDS}


def stored(pipeline: Pipeline, run_id: int) -> int:
    with pipeline.store.engine.connect() as connection:
        query = select(func.count()).select_from(DecisionRow).where(DecisionRow.run_id == run_id)
        return int(connection.execute(query).scalar_one())


def assert_exact(pipeline: Pipeline, decided: dict[int, list[Decision]]) -> None:
    for run_id, decisions in decided.items():
        for decision in decisions:
            record = pipeline.store.decision_as_of(decision.enrollment_id or "", run_id)
            assert record is not None, (run_id, decision.enrollment_id)
            assert said(record.decision) == said(decision), (run_id, decision.enrollment_id)


@BOTH_STORES
def test_unchanged_runs_store_nothing_and_history_stays_exact(
    simulator: Simulator, pipeline: Pipeline, tx_policy: Policy, write_policy: Any
) -> None:
    decided: dict[int, list[Decision]] = {}

    def run(policy: Policy, **settings: Any) -> Any:
        report = pipeline.run(policy, **settings)
        decided[report.run_id] = report.decisions
        return report

    first = run(tx_policy)
    assert stored(pipeline, first.run_id) == TX_COUNT
    second = run(tx_policy)
    assert stored(pipeline, second.run_id) == 0
    assert second.unchanged == TX_COUNT
    (latest, *_rest) = pipeline.store.list_runs(TX_BATTERY_PROGRAM)
    assert latest.counts["unchanged"] == TX_COUNT

    ids = simulator.enrollment_ids(TX_BATTERY_PROGRAM)
    simulator.edit_enrollment(ids[0], status="PENDING")  # a person's decision
    simulator.edit_enrollment(ids[1], status="REJECTED")  # out of applies_to: now skipped
    simulator.edit_enrollment(ids[2], devices=[])  # the facts change
    third = run(tx_policy)
    changed = {d.enrollment_id for d in decided[third.run_id]} & set(ids[:3])
    assert stored(pipeline, third.run_id) <= 3
    assert changed == set(ids[:3])

    later = run(tx_policy, now=NOW + timedelta(days=4000))  # batteries age past the review rule
    assert 0 < stored(pipeline, later.run_id) < TX_COUNT

    document = tx_document()
    document["version"] = "2026-12-01.1"  # a new policy version: every decision is new
    new_version = write_policy(document)
    fourth = run(new_version)
    assert stored(pipeline, fourth.run_id) == TX_COUNT

    live = run(new_version, live=True)
    updates = [d for d in live.decisions if d.action is Action.UPDATE]
    assert updates
    assert stored(pipeline, live.run_id) >= len(updates)  # planned changes are always recorded
    after = run(new_version)
    assert stored(pipeline, after.run_id) == len(updates)  # applied: now decided "none"
    assert stored(pipeline, run(new_version).run_id) == 0

    assert_exact(pipeline, decided)


@BOTH_STORES
def test_a_live_run_records_a_change_again_while_it_is_still_needed(
    simulator: Simulator, pipeline: Pipeline, tx_policy: Policy
) -> None:
    dry = pipeline.run(tx_policy)
    updates = [d for d in dry.decisions if d.action is Action.UPDATE]
    simulator.script("PATCH", "^/v1/enrollments/", "503", times=4)  # the first change fails
    first = pipeline.run(tx_policy, live=True, concurrency=1)
    assert first.change_states["failed_retryable"] == 1
    assert first.change_states["applied"] == len(updates) - 1
    # The failed change is decided the same way again: a new planned row, sent again.
    second = pipeline.run(tx_policy, live=True, concurrency=1)
    assert dict(second.change_states) == {"applied": 1}
    assert stored(pipeline, second.run_id) >= 1
