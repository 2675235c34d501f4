"""The live pipeline end to end: the real simulator over HTTP, the real client, the real store
(SQLite and PostgreSQL), then the real ``autoapprove`` entry point in a subprocess."""

from __future__ import annotations

import gc
import json
import sys
import threading
from collections.abc import Callable
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import pytest
from cli_process import run_cli
from sqlalchemy import create_engine, func, inspect, select

from engine.policy.decision import Action
from engine.policy.document import Policy
from engine.render.text import DECISION_KEYS, render_run_footer, render_table
from engine.runs.patch import planned_body
from engine.sandbox.generator import TX_BATTERY_PROGRAM
from engine.sandbox.simulator import Simulator
from engine.store import Store, current_revision, head_revision
from engine.store.schema import DecisionRow

from .conftest import (
    BOTH_STORES,
    NOW_ARG,
    REPO_ROOT,
    TX_COUNT,
    TX_RULES,
    Pipeline,
    cli_env,
    fresh_postgres_database,
    group_ids,
    tx_document,
    writes,
)

NEW_GROUP = "PILOT_NEW_2026"


def stored_decisions(store: Store, run_id: int) -> int:
    with store.engine.connect() as connection:
        query = select(func.count()).select_from(DecisionRow).where(DecisionRow.run_id == run_id)
        return int(connection.execute(query).scalar_one())


def policy_with_new_group(write_policy: Callable[..., Policy]) -> Policy:
    """The Texas policy plus a group rule that puts every approved site in a group the
    program does not have yet."""
    document = tx_document()
    document["groups"].append(
        {
            "id": "new-pilot",
            "when": {"==": [{"var": "decision.status"}, "ACTIVE"]},
            "add": [NEW_GROUP],
        }
    )
    return write_policy(document)


# --- in-process: RunService with the real client and store ---------------------------------


def test_dry_run_stores_every_decision_and_sends_nothing(
    simulator: Simulator, pipeline: Pipeline, tx_policy: Policy
) -> None:
    report = pipeline.run(tx_policy)

    assert report.outcome == "completed"
    assert len(report.decisions) == TX_COUNT
    assert stored_decisions(pipeline.store, report.run_id) == TX_COUNT
    assert writes(simulator) == 0
    assert simulator.request_counts() == {"GET": 2}  # the list and the groups, nothing else
    needed = [d for d in report.decisions if d.action is Action.UPDATE]
    assert needed, "the seeded data must need changes, or this test proves nothing"
    preview = render_table(report.decisions)
    assert f"Summary: {TX_COUNT} enrollments" in preview
    assert all(d.enrollment_id in preview for d in needed)
    assert "nothing was sent (dry run)" in render_run_footer(report)
    (run,) = pipeline.store.list_runs(TX_BATTERY_PROGRAM)
    assert (run.mode, run.outcome) == ("dry_run", "completed")
    assert pipeline.store.open_changes(TX_BATTERY_PROGRAM) == []  # a dry run leaves nothing to send


@BOTH_STORES
def test_live_run_applies_exactly_the_preview_and_a_rerun_sends_nothing(
    simulator: Simulator, pipeline: Pipeline, tx_policy: Policy
) -> None:
    before = {e["id"]: e for e in simulator.enrollments(TX_BATTERY_PROGRAM)}
    preview = pipeline.run(tx_policy)
    updates = {d.enrollment_id: d for d in preview.decisions if d.action is Action.UPDATE}
    assert updates

    live = pipeline.run(tx_policy, live=True)

    assert live.outcome == "completed"
    assert dict(live.change_states) == {"applied": len(updates)}
    assert [d.to_dict() for d in live.decisions] == [d.to_dict() for d in preview.decisions]
    for enrollment_id, old in before.items():
        now = simulator.enrollment(enrollment_id)
        decision = updates.get(enrollment_id)
        if decision is None:
            assert now == old, f"{enrollment_id} was not in the preview but changed"
            assert simulator.patch_count(enrollment_id) == 0
            continue
        assert simulator.patch_count(enrollment_id) == 1
        assert now["status"] == (decision.status or old["status"])
        assert group_ids(now) == set(decision.group_ids)
        if decision.status_changes:
            assert now["status_reason"] == decision.reason

    patches = simulator.request_counts()["PATCH"]
    again = pipeline.run(tx_policy, live=True)

    assert simulator.request_counts()["PATCH"] == patches
    assert again.outcome == "completed"
    assert not [d for d in again.decisions if d.action is Action.UPDATE]
    assert pipeline.store.planned_changes(again.run_id) == []
    assert sum(again.change_states.values()) == 0

    runs = pipeline.store.list_runs(TX_BATTERY_PROGRAM)
    assert [(r.id, str(r.mode), str(r.outcome)) for r in runs] == [
        (again.run_id, "live", "completed"),
        (live.run_id, "live", "completed"),
        (preview.run_id, "dry_run", "completed"),
    ]
    assert runs[1].counts["changes"] == {"applied": len(updates)}
    assert all(r.started_at <= r.finished_at for r in runs)  # type: ignore[operator]


@BOTH_STORES
def test_history_shows_every_run_of_an_enrollment(
    simulator: Simulator, pipeline: Pipeline, tx_policy: Policy
) -> None:
    preview = pipeline.run(tx_policy)
    live = pipeline.run(tx_policy, live=True)
    again = pipeline.run(tx_policy, live=True)
    changed = next(d for d in preview.decisions if d.action is Action.UPDATE)

    history = pipeline.store.history(changed.enrollment_id or "")

    assert [h.run_id for h in history] == [preview.run_id, live.run_id, again.run_id]
    assert [str(h.run_mode) for h in history] == ["dry_run", "live", "live"]
    assert str(history[1].change_state) == "applied"
    assert history[1].run_started_at <= history[1].applied_at  # type: ignore[operator]
    body, _problem = planned_body(changed)
    assert body is not None
    assert history[1].planned_patch == body


def test_missing_groups_are_reported_by_a_dry_run_and_created_once_live(
    simulator: Simulator, pipeline: Pipeline, write_policy: Callable[..., Policy]
) -> None:
    policy = policy_with_new_group(write_policy)

    dry = pipeline.run(policy)
    assert dry.missing_groups == [NEW_GROUP]
    assert dry.created_groups == []
    assert "would be created: PILOT_NEW_2026" in render_run_footer(dry)
    assert NEW_GROUP not in {g["id"] for g in simulator.groups(TX_BATTERY_PROGRAM)}
    assert writes(simulator) == 0

    live = pipeline.run(policy, live=True)
    assert live.created_groups == [NEW_GROUP]
    assert [g["id"] for g in simulator.groups(TX_BATTERY_PROGRAM)].count(NEW_GROUP) == 1
    assert simulator.request_counts()["POST"] == 1
    approved = [d.enrollment_id for d in live.decisions if d.status == "ACTIVE" and d.status_changes]
    assert approved
    assert all(NEW_GROUP in group_ids(simulator.enrollment(e)) for e in approved)

    again = pipeline.run(policy, live=True)
    assert (again.missing_groups, again.created_groups) == ([], [])
    assert simulator.request_counts()["POST"] == 1


# --- the CLI through its real entry point ---------------------------------------------------


def test_cli_dry_run_then_live_run(simulator: Simulator, tmp_path: Path) -> None:
    env = cli_env(simulator, f"sqlite:///{tmp_path / 'cli.db'}")
    rules = str(TX_RULES.relative_to(REPO_ROOT))
    before = {e["id"]: e for e in simulator.enrollments(TX_BATTERY_PROGRAM)}

    dry = run_cli(["run", "--rules", rules, "--format", "json", "--now", NOW_ARG], env=env)

    assert dry.code == 0, dry.stderr
    records = json.loads(dry.stdout)
    assert len(records) == TX_COUNT
    assert all(set(r) == {*DECISION_KEYS, "transition"} for r in records)
    assert {r["enrollment_id"] for r in records} == set(before)
    assert "nothing was sent (dry run)" in dry.stderr
    assert writes(simulator) == 0
    updates = {r["enrollment_id"]: r for r in records if r["action"] == "update"}
    assert updates

    live = run_cli(
        ["run", "--rules", rules, "--format", "json", "--now", NOW_ARG, "--live", "--yes"], env=env
    )

    assert live.code == 0, live.stderr
    assert json.loads(live.stdout) == records
    assert f"applied {len(updates)}" in live.stderr
    for enrollment_id, old in before.items():
        now = simulator.enrollment(enrollment_id)
        record = updates.get(enrollment_id)
        if record is None:
            assert now == old
        else:
            assert now["status"] == record["status"]
            assert group_ids(now) == set(record["group_ids"])


@pytest.mark.slow
def test_cli_lists_runs_and_the_history_of_an_enrollment(
    simulator: Simulator, pipeline: Pipeline, store_url: str, tx_policy: Policy
) -> None:
    preview = pipeline.run(tx_policy)
    pipeline.run(tx_policy, live=True)
    changed = next(d.enrollment_id for d in preview.decisions if d.action is Action.UPDATE)
    env = {"AUTOAPPROVE_DB": store_url}

    runs = run_cli(["runs"], env=env)
    history = run_cli(["history", changed or ""], env=env)

    assert runs.code == 0, runs.stderr
    lines = [line.split() for line in runs.stdout.splitlines()[1:]]
    assert [(line[4], line[5]) for line in lines] == [("live", "completed"), ("dry_run", "completed")]
    assert history.code == 0, history.stderr
    assert "2 decision(s)" in history.stdout
    assert "change applied" in history.stdout


def test_cli_demo_prints_a_preview_through_the_console_script() -> None:
    # The script pip installed next to this interpreter, wherever its environment lives.
    (declared,) = entry_points(group="console_scripts", name="autoapprove")
    assert declared.value == "cli:main"
    script = Path(sys.executable).parent / "autoapprove"
    assert script.is_file(), f"no console script at {script}: install the project (pip install -e .)"
    result = run_cli(["demo", "--enrollments", "40", "--now", NOW_ARG], entry=[str(script)])
    assert result.code == 0, result.stderr
    assert "Summary: 40 enrollments" in result.stdout
    assert "nothing was sent (dry run)" in result.stderr


def test_cli_live_without_yes_outside_a_terminal_sends_nothing(simulator: Simulator, tmp_path: Path) -> None:
    env = cli_env(simulator, f"sqlite:///{tmp_path / 'cli.db'}")
    result = run_cli(["run", "--rules", str(TX_RULES), "--live", "--now", NOW_ARG], env=env)
    assert result.code == 2
    assert "--yes" in result.stderr
    assert simulator.request_counts() == {}


def test_cli_wrong_key_exits_3(simulator: Simulator, tmp_path: Path) -> None:
    env = cli_env(simulator, f"sqlite:///{tmp_path / 'cli.db'}", FLIP_API_KEY="fl_wrong_key_0000")
    result = run_cli(["run", "--rules", str(TX_RULES), "--now", NOW_ARG], env=env)
    assert result.code == 3, result.stderr
    assert "refused the key" in result.stderr
    assert "fl_wrong_key_0000" not in result.stderr + result.stdout
    assert writes(simulator) == 0


@pytest.mark.parametrize(
    "backend", ["sqlite", pytest.param("postgres", marks=[pytest.mark.postgres, pytest.mark.slow])]
)
def test_cli_db_upgrade_migrates_an_empty_database(backend: str, tmp_path: Path) -> None:
    def upgrade_and_check(url: str) -> None:
        result = run_cli(["db", "upgrade", "--db", url])
        assert result.code == 0, result.stderr
        assert result.stdout.strip() == f"database is at revision {head_revision()}"
        engine = create_engine(url)
        try:
            tables = set(inspect(engine).get_table_names())
            assert current_revision(engine) == head_revision()
            Store(engine).migrate()  # upgrading an up-to-date database is a no-op
            assert set(inspect(engine).get_table_names()) == tables
            assert Store(engine).list_runs() == []
        finally:
            engine.dispose()
        assert {"policy_versions", "runs", "decisions", "program_locks", "alembic_version"} <= tables

    if backend == "sqlite":
        upgrade_and_check(f"sqlite:///{tmp_path / 'fresh.db'}")
        return
    with fresh_postgres_database() as url:
        upgrade_and_check(url)


def test_a_finished_service_can_be_freed_on_any_thread(
    simulator: Simulator, pipeline: Pipeline, tx_policy: Policy, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The evaluator wraps a datalogic session that only its own thread may drop; a run
    # that failed leaves the service in a traceback cycle, which the GC frees wherever it
    # happens to run (a simulator thread, an HTTP client thread...).
    unraisable: list[str] = []
    monkeypatch.setattr(sys, "unraisablehook", lambda u: unraisable.append(repr(u.exc_value)))
    ids = simulator.enrollment_ids(TX_BATTERY_PROGRAM)

    def people_edit_everything(stage: str, done: int, total: int) -> None:
        if stage == "evaluating" and done == total:  # the apply threads re-evaluate too
            for enrollment_id in ids:
                simulator.edit_enrollment(enrollment_id, status_reason="seen by a person")

    runs: list[dict[str, Any]] = [{}, {"live": True, "progress": people_edit_everything}]
    for settings in runs:
        service = pipeline.service(tx_policy, **settings)
        service.run()
        cycle: list[Any] = [service]
        cycle.append(cycle)
        del service, cycle
        collector = threading.Thread(target=gc.collect)
        collector.start()
        collector.join()

    assert unraisable == []
