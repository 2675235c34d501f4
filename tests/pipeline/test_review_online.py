"""diff and backtest against the simulator: read-only, bases from stored runs, and the
enrollments this tool decided itself left out of a backtest."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from cli_process import run_cli
from sqlalchemy import create_engine, func, select

from engine.sandbox.simulator import Simulator
from engine.store.schema import DecisionRow, RunRow

from .conftest import NOW_ARG, TX_COUNT, TX_RULES, cli_env, writes


def counts(db_url: str) -> tuple[int, int]:
    engine = create_engine(db_url)
    try:
        with engine.connect() as connection:
            runs = connection.execute(select(func.count()).select_from(RunRow)).scalar_one()
            decisions = connection.execute(select(func.count()).select_from(DecisionRow)).scalar_one()
    finally:
        engine.dispose()
    return runs, decisions


def decided(simulator: Simulator) -> int:
    statuses = [e["status"] for e in simulator.enrollments("prog-tx-residential-battery")]
    return sum(status in ("ACTIVE", "REJECTED", "NEEDS_ACTION") for status in statuses)


def test_backtest_and_diff_online_read_only_leaving_out_our_own_decisions(
    simulator: Simulator, tmp_path: Path
) -> None:
    db_url = f"sqlite:///{tmp_path / 'store.db'}"
    env = cli_env(simulator, db_url)
    before = run_cli(["backtest", "--rules", str(TX_RULES), "--now", NOW_ARG, "--format", "json"], env=env)
    assert before.code == 0, before.stderr
    first = json.loads(before.stdout)["summary"]
    people = decided(simulator)
    assert first["evaluated"] == people
    assert first["left_out_applied_by_this_tool"] == 0

    live = run_cli(["run", "--rules", str(TX_RULES), "--live", "--yes", "--now", NOW_ARG], env=env)
    assert live.code == 0, live.stderr
    stored, sent = counts(db_url), writes(simulator)

    after = run_cli(["backtest", "--rules", str(TX_RULES), "--now", NOW_ARG, "--format", "json"], env=env)
    assert after.code == 0, after.stderr
    summary = json.loads(after.stdout)["summary"]
    assert summary["left_out_applied_by_this_tool"] > 0
    # every enrollment the run moved into a decided status is left out; the people's remain
    assert summary["evaluated"] == people
    assert summary["evaluated"] + summary["left_out_applied_by_this_tool"] == decided(simulator)

    edited = tmp_path / "tx.yaml"
    shutil.copy(TX_RULES, edited)
    edited.write_text(edited.read_text().replace("10000]}", "12000]}"), encoding="utf-8")
    diff = run_cli(
        ["diff", "--rules", str(edited), "--base", "run:1", "--now", NOW_ARG, "--format", "json"], env=env
    )
    assert diff.code == 0, diff.stderr
    document = json.loads(diff.stdout)
    assert document["summary"]["enrollments"] == TX_COUNT
    assert document["summary"]["base"].startswith("<policy of run 1>")
    same = run_cli(
        ["diff", "--rules", str(TX_RULES), "--base", "run:1", "--now", NOW_ARG, "--fail-on-change"], env=env
    )
    assert same.code == 0, same.stdout + same.stderr
    missing = run_cli(["diff", "--rules", str(TX_RULES), "--base", "run:99", "--now", NOW_ARG], env=env)
    assert missing.code == 2
    assert "run:99: no such run" in missing.stderr
    assert counts(db_url) == stored  # nothing stored as a run
    assert writes(simulator) == sent  # nothing sent
