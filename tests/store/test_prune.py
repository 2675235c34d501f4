"""``db prune``: old rows and runs go; each enrollment's latest decision, open and reviewed
changes, sent changes (by default) and plan runs stay; killed mid-way, the store stays
consistent and a second prune finishes the job."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from cli_process import run_cli
from crashing_cli import CRASH_EXIT, crashing_entry
from sqlalchemy import Engine, func, select

from engine.runs.ports import Outcome
from engine.store import Store
from engine.store.retention import prune, prune_counts
from engine.store.schema import DecisionRow, RunRow

from .conftest import FakeClock, make_decision, unchanged, url_of

PROGRAM = "prog-tx"
NOW = datetime.now(UTC).replace(microsecond=0)
CUTOFF = NOW - timedelta(days=30)


def at_days_ago(clock: FakeClock, days: int) -> datetime:
    clock.now = NOW - timedelta(days=days)
    return clock.now


def one_run(
    store: Store, clock: FakeClock, days: int, mode: str, decisions: list[Any], *, apply: bool = False
) -> int:
    now = at_days_ago(clock, days)
    version = store.save_policy_version(PROGRAM, "tx", "1", "hash-1", "rules: []")
    run_id = store.start_run(PROGRAM, mode, version, now)
    store.add_decisions(run_id, PROGRAM, decisions)
    if apply:
        planned = store.planned_changes(run_id)
        store.mark_in_flight_many([c.decision_id for c in planned])
        store.record_outcomes([Outcome(c.decision_id, "applied", attempts=1) for c in planned])
    store.finish_run(run_id, "completed", {})
    return run_id


def history(store: Store) -> dict[int, int]:
    with store.engine.connect() as connection:
        return dict(connection.execute(select(DecisionRow.id, DecisionRow.run_id)).all())


@pytest.fixture
def aged(store: Store, clock: FakeClock) -> dict[str, int]:
    """Runs from 100 days ago to yesterday, with every kind of row prune must think about."""
    runs = {
        "old_dry": one_run(store, clock, 100, "dry_run", [make_decision("e1"), make_decision("e2")]),
        "old_live": one_run(store, clock, 90, "live", [make_decision("e1")], apply=True),
        "old_dry_2": one_run(store, clock, 80, "dry_run", [make_decision("e2", reason="changed")]),
        "old_open": one_run(store, clock, 70, "live", [make_decision("e3")]),  # left planned
        "recent": one_run(store, clock, 1, "dry_run", [unchanged("e1")]),
    }
    clock.now = NOW
    return runs


def test_prune_keeps_what_still_answers(store: Store, aged: dict[str, int]) -> None:
    before = history(store)
    latest_before = {e: store.latest_decision(e) for e in ("e1", "e2", "e3")}
    recent_before = {e: store.decision_as_of(e, aged["recent"]) for e in ("e1", "e2", "e3")}
    preview = prune_counts(store.engine, CUTOFF)
    done = prune(store.engine, CUTOFF)

    assert (done.decisions, done.runs) == (preview.decisions, preview.runs) == (2, 1)
    after = history(store)
    gone = set(before) - set(after)
    assert {before[i] for i in gone} == {aged["old_dry"]}  # the first run's two rows, nothing else
    assert {e: store.latest_decision(e) for e in ("e1", "e2", "e3")} == latest_before
    assert [c.enrollment_id for c in store.open_changes(PROGRAM)] == ["e3"]
    assert {r.id for r in store.list_runs(PROGRAM)} == set(aged.values()) - {aged["old_dry"]}
    # A run after the cutoff answers as before, for every enrollment.
    assert {e: store.decision_as_of(e, aged["recent"]) for e in ("e1", "e2", "e3")} == recent_before
    assert all(recent_before.values())


def test_without_keep_applied_sent_changes_go_too(store: Store, aged: dict[str, int]) -> None:
    done = prune(store.engine, CUTOFF, keep_applied=False)
    assert done.decisions == 3  # and e1's applied row, which a newer decision replaced
    assert aged["old_live"] not in {r.id for r in store.list_runs(PROGRAM)}
    assert store.latest_decision("e1") is not None


def test_a_second_prune_finds_nothing(store: Store, aged: dict[str, int]) -> None:
    prune(store.engine, CUTOFF)
    again = prune(store.engine, CUTOFF)
    assert (again.decisions, again.runs) == (0, 0)


@pytest.fixture
def many_old_rows(store: Store, clock: FakeClock) -> Callable[[], dict[str, Any]]:
    """Two old runs of 2,500 enrollments (two prune batches of the first one's rows), one recent."""
    ids = [f"e{i:05d}" for i in range(2500)]
    one_run(store, clock, 60, "dry_run", [make_decision(e) for e in ids])
    one_run(store, clock, 50, "dry_run", [make_decision(e, reason="changed") for e in ids])
    one_run(store, clock, 1, "dry_run", [unchanged(e) for e in ids[:10]])
    clock.now = NOW

    def state() -> dict[str, Any]:
        with store.engine.connect() as connection:
            latest = dict(
                connection.execute(
                    select(DecisionRow.enrollment_id, func.max(DecisionRow.id)).group_by(
                        DecisionRow.enrollment_id
                    )
                ).all()
            )
            rows = connection.execute(select(func.count()).select_from(DecisionRow)).scalar_one()
            orphans = connection.execute(
                select(func.count())
                .select_from(DecisionRow)
                .where(DecisionRow.run_id.not_in(select(RunRow.id)))
            ).scalar_one()
        return {"latest": latest, "rows": rows, "orphans": orphans}

    return state


@pytest.mark.slow
def test_a_prune_killed_mid_way_leaves_a_consistent_store(
    store: Store, many_old_rows: Callable[[], dict[str, Any]], store_engine: Engine
) -> None:
    before = many_old_rows()
    assert before["rows"] == 5010
    db = url_of(store_engine)
    command = ["db", "prune", "--older-than", "30d", "--yes", "--db", db]
    killed = run_cli(command, entry=crashing_entry("prune_batch:1"), timeout=120, stdin=subprocess.DEVNULL)
    assert killed.code == CRASH_EXIT, killed.stderr
    middle = many_old_rows()
    assert before["rows"] > middle["rows"] > 2500  # one batch went, not all of them
    assert middle["latest"] == before["latest"]  # every enrollment still has its latest decision
    assert middle["orphans"] == 0
    finished = run_cli(command, timeout=120)
    assert finished.code == 0, finished.stderr
    after = many_old_rows()
    assert after["rows"] == 2500  # each enrollment's latest: 2,490 of the second run, the recent 10
    assert after["latest"] == before["latest"]
    assert after["orphans"] == 0


def test_prune_needs_yes_outside_a_terminal(store: Store, aged: dict[str, int], store_engine: Engine) -> None:
    result = run_cli(["db", "prune", "--older-than", "30d", "--db", url_of(store_engine)])
    assert result.code == 2
    assert "needs --yes" in result.stderr
    assert "2 decision row(s)" in result.stderr
    assert len(history(store)) == 6  # nothing was deleted


def test_prune_through_the_command(store: Store, aged: dict[str, int], store_engine: Engine) -> None:
    result = run_cli(["db", "prune", "--older-than", "30d", "--yes", "--db", url_of(store_engine)])
    assert result.code == 0, result.stderr
    assert "pruned 2 decision row(s), 1 run(s)" in result.stdout
    assert len(history(store)) == 4
