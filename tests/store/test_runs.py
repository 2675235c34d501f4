"""Runs, policy versions, history, bulk inserts and short transactions."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import pytest
from sqlalchemy import Engine, create_engine, text

from engine.errors import StoreError
from engine.policy.decision import Decision
from engine.store import RunMode, RunOutcome, Store

from .conftest import T0, FakeClock, make_decision, unchanged, url_of

PROGRAM = "prog-runs"


def test_policy_versions_are_kept_once_per_program_and_text(store: Store) -> None:
    first = store.save_policy_version(PROGRAM, "tx-battery", "1.0", "sha-a", "rules: []\n")
    again = store.save_policy_version(PROGRAM, "tx-battery", "1.0", "sha-a", "rules: []\n")
    other_text = store.save_policy_version(PROGRAM, "tx-battery", "1.1", "sha-b", "rules: [x]\n")
    other_program = store.save_policy_version("prog-2", "tx-battery", "1.0", "sha-a", "rules: []\n")

    assert first == again
    assert len({first, other_text, other_program}) == 3
    version = store.policy_version(other_text)
    assert version is not None
    assert (version.name, version.version, version.content_hash, version.source_text) == (
        "tx-battery",
        "1.1",
        "sha-b",
        "rules: [x]\n",
    )
    assert version.first_seen_at == T0
    assert store.policy_version(987654) is None


def test_a_run_is_recorded_started_and_finished(store: Store, clock: FakeClock) -> None:
    policy_id = store.save_policy_version(PROGRAM, "p", None, "sha", "src")
    evaluated_at = T0 - timedelta(days=1)
    run_id = store.start_run(PROGRAM, "live", policy_id, evaluated_at, holder="host:1")
    finished_at = clock.advance(30)
    store.finish_run(run_id, "completed", {"transitions": {"SUBMITTED -> ACTIVE": 3}}, "done")

    run = store.run(run_id)

    assert run is not None
    assert run.mode is RunMode.LIVE
    assert run.outcome is RunOutcome.COMPLETED
    assert run.policy_version_id == policy_id
    assert run.started_at == T0
    assert run.finished_at == finished_at
    assert run.now == evaluated_at
    assert run.counts == {"transitions": {"SUBMITTED -> ACTIVE": 3}}
    assert run.message == "done"
    assert run.holder == "host:1"
    assert run.fencing_token is None


def test_a_run_ends_once(store: Store) -> None:
    run_id = store.start_run(PROGRAM, "dry_run", None, T0)
    store.finish_run(run_id, "failed", {}, "boom")

    with pytest.raises(StoreError, match="already ended"):
        store.finish_run(run_id, "completed", {})
    with pytest.raises(StoreError, match="already ended"):
        store.add_decisions(run_id, PROGRAM, [make_decision()])
    with pytest.raises(StoreError, match="not 'running'"):
        store.finish_run(store.start_run(PROGRAM, "dry_run", None, T0), "running", {})


def test_unknown_mode_or_outcome(store: Store) -> None:
    with pytest.raises(StoreError, match="'sideways' is not a RunMode"):
        store.start_run(PROGRAM, "sideways", None, T0)
    run_id = store.start_run(PROGRAM, "live", None, T0)
    with pytest.raises(StoreError, match="'great' is not a RunOutcome"):
        store.finish_run(run_id, "great", {})


def test_naive_datetimes_are_refused(store: Store) -> None:
    with pytest.raises(StoreError, match="naive datetime"):
        store.start_run(PROGRAM, "live", None, T0.replace(tzinfo=None))


def test_decisions_belong_to_their_runs_program(store: Store) -> None:
    run_id = store.start_run(PROGRAM, "live", None, T0)
    with pytest.raises(StoreError, match="belongs to program"):
        store.add_decisions(run_id, "another-program", [make_decision()])
    with pytest.raises(StoreError, match="no run 31337"):
        store.add_decisions(31337, PROGRAM, [make_decision()])


def test_list_runs_newest_first(store: Store, clock: FakeClock) -> None:
    ids = []
    for program in ["a", "b", "a", "a"]:
        ids.append(store.start_run(program, "dry_run", None, T0))
        clock.advance(60)

    assert [r.id for r in store.list_runs()] == ids[::-1]
    assert [r.id for r in store.list_runs("a")] == [ids[3], ids[2], ids[0]]
    assert [r.id for r in store.list_runs("a", limit=2)] == [ids[3], ids[2]]
    assert store.list_runs("nobody") == []


def test_history_is_every_decision_of_an_enrollment_oldest_first(store: Store, clock: FakeClock) -> None:
    dry = store.start_run(PROGRAM, "dry_run", None, T0)
    store.add_decisions(dry, PROGRAM, [make_decision("enr-1"), make_decision("enr-2")])
    clock.advance(60)
    live = store.start_run(PROGRAM, "live", None, T0)
    store.add_decisions(live, PROGRAM, [make_decision("enr-2"), make_decision("enr-1")])
    (change,) = [c for c in store.planned_changes(live) if c.enrollment_id == "enr-1"]
    store.mark_in_flight(change.decision_id)
    store.record_outcome(change.decision_id, "applied")
    clock.advance(60)
    again = store.start_run(PROGRAM, "live", None, T0)
    store.add_decisions(again, PROGRAM, [unchanged("enr-1")])

    history = store.history("enr-1")

    assert [(h.run_id, h.run_mode, h.change_state) for h in history] == [
        (dry, RunMode.DRY_RUN, "none"),
        (live, RunMode.LIVE, "applied"),
        (again, RunMode.LIVE, "none"),
    ]
    assert history[1].applied_at is not None
    assert history[1].run_started_at == T0 + timedelta(seconds=60)
    assert store.latest_decision("enr-1") == history[-1]
    assert store.latest_decision("nobody") is None
    assert store.history("nobody") == []


def test_run_decisions_pages(store: Store) -> None:
    run_id = store.start_run(PROGRAM, "dry_run", None, T0)
    store.add_decisions(run_id, PROGRAM, [make_decision(f"enr-{i}") for i in range(5)])

    page = store.run_decisions(run_id, offset=1, limit=2)

    assert [r.decision.enrollment_id for r in page] == ["enr-1", "enr-2"]


def test_interrupted_runs_are_marked(store: Store) -> None:
    dead = store.start_run(PROGRAM, "live", None, T0)
    finished = store.start_run(PROGRAM, "live", None, T0)
    store.finish_run(finished, "completed", {})
    current = store.start_run(PROGRAM, "live", None, T0)

    assert store.interrupt_running_runs(PROGRAM, except_run_id=current) == [dead]

    run = store.run(dead)
    assert run is not None
    assert run.outcome is RunOutcome.INTERRUPTED
    assert run.finished_at is not None
    assert store.run(current).outcome is RunOutcome.RUNNING  # type: ignore[union-attr]


def many(count: int) -> Iterator[Decision]:
    for i in range(count):
        yield make_decision(f"enr-{i:06d}") if i % 3 == 0 else unchanged(f"enr-{i:06d}")


def test_twenty_thousand_decisions_are_stored_in_one_call(store: Store) -> None:
    run_id = store.start_run(PROGRAM, "live", None, T0)

    store.add_decisions(run_id, PROGRAM, many(20_000))

    planned = store.planned_changes(run_id)
    assert len(planned) == 6_667
    assert planned[0].enrollment_id == "enr-000000"
    assert len(store.open_changes(PROGRAM)) == 6_667


def test_no_transaction_is_open_while_the_decisions_are_produced(sqlite_engine: Engine) -> None:
    """The store consumes a generator between its batches: another writer is never blocked."""
    store = Store.open(sqlite_engine)
    run_id = store.start_run(PROGRAM, "live", None, T0)
    # A writer that fails at once (no busy wait) if the store held the write lock.
    impatient = create_engine(url_of(sqlite_engine), connect_args={"timeout": 0})
    writes = 0

    def produce() -> Iterator[Decision]:
        nonlocal writes
        for i in range(2_500):
            if i % 500 == 0:
                with impatient.begin() as connection:
                    connection.execute(
                        text("UPDATE runs SET message = :m WHERE id = :id"), {"m": str(i), "id": run_id}
                    )
                writes += 1
            yield make_decision(f"enr-{i}")

    try:
        store.add_decisions(run_id, PROGRAM, produce())
    finally:
        impatient.dispose()
        store.close()

    assert writes == 5
    assert len(store.planned_changes(run_id)) == 2_500
