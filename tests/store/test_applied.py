"""What this tool applied itself: the query a backtest uses to leave its own decisions out."""

from __future__ import annotations

from engine.store import ChangeState, Store
from engine.store.applied import applied_statuses

from .conftest import T0, make_decision

PROGRAM = "prog-applied"


def applied_run(
    store: Store, outcomes: dict[str, ChangeState], program: str = PROGRAM, **kwargs: object
) -> None:
    run_id = store.start_run(program, "live", None, T0)
    store.add_decisions(run_id, program, [make_decision(e, **kwargs) for e in outcomes])  # type: ignore[arg-type]
    for change in store.planned_changes(run_id):
        store.mark_in_flight(change.decision_id)
        store.record_outcome(change.decision_id, outcomes[change.enrollment_id])


def test_only_applied_status_changes_of_the_program_count_newest_first(store: Store) -> None:
    applied_run(
        store, {"a": ChangeState.APPLIED, "b": ChangeState.FAILED_PERMANENT, "c": ChangeState.RECOVERED}
    )
    applied_run(store, {"a": ChangeState.APPLIED}, current_status="ACTIVE", status="PAUSED")
    applied_run(store, {"g": ChangeState.APPLIED}, current_status="ACTIVE", status="ACTIVE")  # groups only
    applied_run(store, {"x": ChangeState.APPLIED}, program="prog-other")
    dry = store.start_run(PROGRAM, "dry_run", None, T0)
    store.add_decisions(dry, PROGRAM, [make_decision("d")])
    assert applied_statuses(store.engine, PROGRAM) == {"a": "PAUSED", "c": "ACTIVE"}
    assert applied_statuses(store.engine, "prog-none") == {}
