"""Batched outbox writes used by live runs: all or nothing, same states as one by one."""

from __future__ import annotations

import pytest

from engine.errors import StoreError
from engine.runs.ports import Outcome
from engine.store import ChangeState, Store

from .conftest import T0, make_decision

PROGRAM = "prog-batches"


def planned(store: Store, count: int) -> list[int]:
    run_id = store.start_run(PROGRAM, "live", None, T0)
    store.add_decisions(run_id, PROGRAM, [make_decision(f"enr-{i}") for i in range(count)])
    return [change.decision_id for change in store.planned_changes(run_id)]


def states(store: Store, ids: list[int]) -> list[ChangeState]:
    return [store.decision_by_id(i).change_state for i in ids]  # type: ignore[union-attr]


def test_mark_in_flight_many_counts_an_attempt_each(store: Store) -> None:
    ids = planned(store, 3)
    store.mark_in_flight_many(ids)
    assert states(store, ids) == [ChangeState.IN_FLIGHT] * 3
    assert [store.decision_by_id(i).attempts for i in ids] == [1, 1, 1]  # type: ignore[union-attr]


def test_mark_in_flight_many_is_all_or_nothing(store: Store) -> None:
    ids = planned(store, 3)
    store.record_outcome(ids[1], "applied")
    with pytest.raises(StoreError, match="cannot become 'in_flight'"):
        store.mark_in_flight_many(ids)
    assert states(store, ids) == [ChangeState.PLANNED, ChangeState.APPLIED, ChangeState.PLANNED]


def test_record_outcomes_sets_each_state_and_detail(store: Store) -> None:
    ids = planned(store, 3)
    store.mark_in_flight_many(ids)
    store.record_outcomes(
        [
            Outcome(ids[0], "applied", attempts=2),
            Outcome(
                ids[1], "failed_permanent", http_status=422, api_error_code="bad", error_message="HTTP 422"
            ),
            Outcome(ids[2], "superseded", error_message="a person decided"),
        ]
    )
    first, second, third = (store.decision_by_id(i) for i in ids)
    assert first is not None
    assert second is not None
    assert third is not None
    assert (first.change_state, first.attempts, first.applied_at is not None) == (
        ChangeState.APPLIED,
        2,
        True,
    )
    assert (second.change_state, second.http_status, second.api_error_code) == (
        ChangeState.FAILED_PERMANENT, 422, "bad",
    )  # fmt: skip
    assert (third.change_state, third.error_message) == (ChangeState.SUPERSEDED, "a person decided")


def test_record_outcomes_refuses_to_move_a_final_change(store: Store) -> None:
    ids = planned(store, 2)
    store.record_outcome(ids[0], "superseded", error_message="x")
    with pytest.raises(StoreError, match="cannot become 'applied'"):
        store.record_outcomes([Outcome(ids[1], "applied"), Outcome(ids[0], "applied")])
    assert states(store, ids) == [ChangeState.SUPERSEDED, ChangeState.PLANNED]


def test_release_in_flight_puts_unsent_changes_back_to_planned(store: Store) -> None:
    ids = planned(store, 2)
    store.mark_in_flight_many(ids)
    store.record_outcome(ids[0], "applied")
    store.release_in_flight(ids)
    assert states(store, ids) == [ChangeState.APPLIED, ChangeState.PLANNED]
    assert store.decision_by_id(ids[1]).attempts == 0  # type: ignore[union-attr]
