"""The outbox: planned changes, their state transitions, and what earlier runs left open."""

from __future__ import annotations

import pytest

from engine.errors import ApiError, StoreError
from engine.policy.decision import Action
from engine.runs.patch import planned_body
from engine.store import ChangeState, Store, api_error_locations, change_key

from .conftest import T0, FakeClock, make_decision, unchanged

PROGRAM = "prog-outbox"


def live_run(store: Store, *decisions: object, program: str = PROGRAM) -> int:
    run_id = store.start_run(program, "live", None, T0)
    store.add_decisions(run_id, program, decisions)  # type: ignore[arg-type]
    return run_id


def state_of(store: Store, decision_id: int) -> ChangeState:
    record = store.decision_by_id(decision_id)
    assert record is not None
    return record.change_state


def test_updates_are_planned_with_body_and_key_the_rest_are_none(store: Store) -> None:
    update = make_decision("enr-1", group_ids=["zone-a"], current_group_ids=[])
    run_id = live_run(store, update, unchanged("enr-2"))

    (change,) = store.planned_changes(run_id)
    records = store.run_decisions(run_id)

    assert change.enrollment_id == "enr-1"
    assert change.body == {"status": "ACTIVE", "status_reason": "meets every rule", "group_ids": ["zone-a"]}
    assert change.body == planned_body(update)[0]
    assert change.change_key == change_key(PROGRAM, "enr-1", change.body)
    assert change.change_state == ChangeState.PLANNED
    assert change.group_ids == ["zone-a"]
    assert change.status == "ACTIVE"
    assert change.facts_fingerprint == "fp-enr-1"
    assert change.enrollment_updated_at == "2026-11-24T10:00:00Z"
    assert [r.change_state for r in records] == [ChangeState.PLANNED, ChangeState.NONE]
    assert records[1].planned_patch is None
    assert records[1].change_key is None


def test_change_key_is_deterministic_and_ignores_group_order() -> None:
    body = {"status": "ACTIVE", "group_ids": ["b", "a"]}
    assert change_key("p", "e", body) == change_key("p", "e", {"group_ids": ["a", "b"], "status": "ACTIVE"})
    assert change_key("p", "e", body) != change_key("p", "e2", body)
    assert change_key("p", "e", body) != change_key("p2", "e", body)
    assert change_key("p", "e", body) != change_key("p", "e", {"status": "PAUSED"})


def test_custom_change_keys_are_used(store: Store) -> None:
    run_id = store.start_run(PROGRAM, "live", None, T0)
    store.add_decisions(
        run_id, PROGRAM, [make_decision("enr-1")], change_keys=lambda d: f"k-{d.enrollment_id}"
    )

    (change,) = store.planned_changes(run_id)

    assert change.change_key == "k-enr-1"


def test_a_dry_run_plans_nothing_but_keeps_what_it_would_send(store: Store) -> None:
    run_id = store.start_run(PROGRAM, "dry_run", None, T0)
    store.add_decisions(run_id, PROGRAM, [make_decision("enr-1")])

    (record,) = store.run_decisions(run_id)

    assert store.planned_changes(run_id) == []
    assert store.open_changes(PROGRAM) == []
    assert record.change_state == ChangeState.NONE
    assert record.planned_patch == {
        "status": "ACTIVE",
        "status_reason": "meets every rule",
        "group_ids": ["zone-a"],
    }
    assert record.change_key is not None


def test_an_update_the_api_would_refuse_is_failed_permanently_not_sent(store: Store) -> None:
    bad_group = make_decision("enr-1", group_ids=["not a valid id!"])
    no_id = make_decision(None)
    run_id = live_run(store, bad_group, no_id)

    records = store.run_decisions(run_id)

    assert store.planned_changes(run_id) == []
    assert [r.change_state for r in records] == [ChangeState.FAILED_PERMANENT] * 2
    assert "no valid PATCH body" in (records[0].error_message or "")
    assert "no enrollment id" in (records[1].error_message or "")


def test_an_applied_change_goes_planned_in_flight_applied(store: Store, clock: FakeClock) -> None:
    run_id = live_run(store, make_decision("enr-1"))
    (change,) = store.planned_changes(run_id)

    store.mark_in_flight(change.decision_id)
    assert state_of(store, change.decision_id) == ChangeState.IN_FLIGHT
    applied_at = clock.advance(2)
    store.record_outcome(change.decision_id, "applied", attempts=2, http_status=200)

    record = store.decision_by_id(change.decision_id)
    assert record is not None
    assert record.change_state == ChangeState.APPLIED
    assert record.attempts == 2
    assert record.http_status == 200
    assert record.applied_at == applied_at
    assert record.updated_at == applied_at
    assert store.planned_changes(run_id) == []


def test_mark_in_flight_counts_attempts(store: Store) -> None:
    run_id = live_run(store, make_decision("enr-1"))
    (change,) = store.planned_changes(run_id)

    store.mark_in_flight(change.decision_id)
    store.record_outcome(change.decision_id, "failed_retryable", http_status=503, error_message="server busy")
    store.mark_in_flight(change.decision_id)

    record = store.decision_by_id(change.decision_id)
    assert record is not None
    assert record.attempts == 2
    assert record.change_state == ChangeState.IN_FLIGHT


def test_a_failure_keeps_code_and_locations_but_never_the_api_message(store: Store) -> None:
    run_id = live_run(store, make_decision("enr-1"))
    (change,) = store.planned_changes(run_id)
    error = ApiError(
        "422",
        status_code=422,
        code="validation_error",
        detail=[{"loc": ["body", "group_ids", 0], "msg": "Jane Doe at 123 Main St is invalid", "type": "x"}],
        errors=[{"message": "jane@example.com is taken", "path": "site.email"}],
    )

    store.mark_in_flight(change.decision_id)
    store.record_outcome(
        change.decision_id,
        "failed_permanent",
        http_status=error.status_code,
        api_error_code=error.code,
        api_error_locations=api_error_locations(error),
        error_message="the API refused the change",
    )

    record = store.decision_by_id(change.decision_id)
    assert record is not None
    assert record.api_error_code == "validation_error"
    assert record.api_error_locations == [["body", "group_ids", 0], "site.email"]
    assert record.error_message == "the API refused the change"
    assert "Jane" not in repr(record)
    assert "jane@" not in repr(record)
    assert record.applied_at is None


def test_a_final_change_cannot_move_again(store: Store) -> None:
    run_id = live_run(store, make_decision("enr-1"))
    (change,) = store.planned_changes(run_id)
    store.mark_in_flight(change.decision_id)
    store.record_outcome(change.decision_id, "applied")

    store.record_outcome(change.decision_id, "applied")  # the same final state again: no-op
    with pytest.raises(StoreError, match="cannot become 'in_flight'"):
        store.mark_in_flight(change.decision_id)
    with pytest.raises(StoreError, match="cannot become 'failed_retryable'"):
        store.record_outcome(change.decision_id, "failed_retryable")


def test_a_decision_with_nothing_to_send_cannot_be_sent(store: Store) -> None:
    run_id = live_run(store, unchanged("enr-1"))
    (record,) = store.run_decisions(run_id)

    with pytest.raises(StoreError, match="is 'none'"):
        store.mark_in_flight(record.id)


@pytest.mark.parametrize("state", ["planned", "in_flight", "none", "bogus"])
def test_record_outcome_takes_outcomes_only(store: Store, state: str) -> None:
    run_id = live_run(store, make_decision("enr-1"))
    (change,) = store.planned_changes(run_id)

    with pytest.raises(StoreError):
        store.record_outcome(change.decision_id, state)


def test_unknown_decision(store: Store) -> None:
    with pytest.raises(StoreError, match="no decision 424242"):
        store.mark_in_flight(424242)
    assert store.decision_by_id(424242) is None


def test_held_changes_wait_and_can_still_be_superseded(store: Store) -> None:
    run_id = live_run(store, make_decision("enr-1"), make_decision("enr-2"))
    first, second = store.planned_changes(run_id)
    store.record_outcome(first.decision_id, "held", error_message="over the change limit")
    store.mark_in_flight(second.decision_id)
    store.record_outcome(second.decision_id, "applied")

    superseded = store.supersede([first.decision_id, second.decision_id], "re-planned by run 9")

    assert superseded == 1  # the applied one stays applied
    record = store.decision_by_id(first.decision_id)
    assert record is not None
    assert record.change_state == ChangeState.SUPERSEDED
    assert record.error_message == "re-planned by run 9"
    assert state_of(store, second.decision_id) == ChangeState.APPLIED


def test_open_changes_are_what_earlier_live_runs_left(store: Store) -> None:
    first = live_run(
        store,
        make_decision("enr-planned"),
        make_decision("enr-in-flight"),
        make_decision("enr-retry"),
        make_decision("enr-deferred"),
        make_decision("enr-applied"),
        make_decision("enr-held"),
        unchanged("enr-none"),
    )
    ids = {c.enrollment_id: c.decision_id for c in store.planned_changes(first)}
    store.mark_in_flight(ids["enr-in-flight"])
    store.mark_in_flight(ids["enr-retry"])
    store.record_outcome(ids["enr-retry"], "failed_retryable")
    store.record_outcome(ids["enr-deferred"], "deferred")
    store.mark_in_flight(ids["enr-applied"])
    store.record_outcome(ids["enr-applied"], "applied")
    store.record_outcome(ids["enr-held"], "held")
    current = store.start_run(PROGRAM, "live", None, T0)

    left = store.open_changes(PROGRAM, before_run_id=current)

    assert [(c.enrollment_id, c.change_state) for c in left] == [
        ("enr-planned", ChangeState.PLANNED),
        ("enr-in-flight", ChangeState.IN_FLIGHT),
        ("enr-retry", ChangeState.FAILED_RETRYABLE),
        ("enr-deferred", ChangeState.DEFERRED),
    ]
    assert store.open_changes("another-program") == []


def test_open_changes_keep_the_newest_per_enrollment(store: Store) -> None:
    older = live_run(store, make_decision("enr-1"), make_decision("enr-2"), make_decision("enr-3"))
    newer = live_run(store, make_decision("enr-1", status="PAUSED"), unchanged("enr-2"))
    dry = store.start_run(PROGRAM, "dry_run", None, T0)
    store.add_decisions(dry, PROGRAM, [unchanged("enr-3")])

    left = store.open_changes(PROGRAM)

    # enr-1: the newer live run's change replaces the older one; enr-2: decided again with
    # nothing to send; enr-3: only a dry run looked again, so the live change still stands.
    assert [(c.enrollment_id, c.run_id, c.status) for c in left] == [
        ("enr-3", older, "ACTIVE"),
        ("enr-1", newer, "PAUSED"),
    ]
    assert [(c.enrollment_id, c.run_id) for c in store.open_changes(PROGRAM, before_run_id=newer)] == [
        ("enr-1", older),
        ("enr-2", older),
        ("enr-3", older),
    ]


def test_decisions_that_need_no_change_have_no_action_update(store: Store) -> None:
    run_id = live_run(
        store, make_decision("enr-1", action=Action.SKIP), make_decision("enr-2", action=Action.ERROR)
    )

    assert store.planned_changes(run_id) == []
    assert {r.change_state for r in store.run_decisions(run_id)} == {ChangeState.NONE}
