"""Unattended runs through the real command against the simulator: folder runs, JSON logs,
the metrics file and notifications to a real webhook receiver on loopback."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from cli_process import run_cli
from prometheus_client.parser import text_string_to_metric_families
from webhook_receiver import Receiver, serving_receiver

from engine.sandbox.generator import CA_EV_PROGRAM, TX_BATTERY_PROGRAM
from engine.sandbox.simulator import Simulator
from engine.store import Store, acquire_program_lock

from .conftest import NOW_ARG, REPO_ROOT, cli_env

PROGRAMS = {TX_BATTERY_PROGRAM, CA_EV_PROGRAM}


@pytest.fixture
def rules(tmp_path: Path) -> Path:
    """A folder with both example policies and their test files (which are not policies)."""
    folder = tmp_path / "rules"
    folder.mkdir()
    for path in (REPO_ROOT / "rules").glob("*.yaml"):
        shutil.copy(path, folder / path.name)
    return folder


@pytest.fixture
def receiver() -> Any:
    with serving_receiver() as state:
        yield state


def json_lines(stderr: str) -> list[dict[str, Any]]:
    lines = [line for line in stderr.splitlines() if line.strip()]
    events = [json.loads(line) for line in lines]  # every line is one JSON object
    for event in events:
        assert {"ts", "level", "event"} <= set(event), event
        assert event["ts"].endswith("Z")
    return events


def run(simulator: Simulator, db: str, *args: str, **env: str) -> Any:
    return run_cli(["run", "--now", NOW_ARG, *args], env=cli_env(simulator, db, **env), timeout=120)


def test_a_folder_runs_every_program_with_json_logs_and_one_metrics_file(
    simulator: Simulator, tmp_path: Path, rules: Path
) -> None:
    db = f"sqlite:///{tmp_path / 'store.db'}"
    metrics = tmp_path / "autoapprove.prom"
    result = run(simulator, db, "--rules", str(rules), "--log-format", "json", "--metrics-file", str(metrics))

    assert result.code == 0, result.stderr
    events = json_lines(result.stderr)
    finished = {e["program"]: e for e in events if e["event"] == "run_finished"}
    assert set(finished) == PROGRAMS
    assert all(e["outcome"] == "completed" and e["counts"]["enrollments"] > 0 for e in finished.values())
    assert any(e["event"] == "progress" and e["program"] in PROGRAMS for e in events)
    messages = [e.get("message", "") for e in events]
    assert any(m.startswith("Running upgrade") for m in messages), "a new store's migrations are logged"
    assert not [m for m in messages if m.startswith("setup plugin")], "not alembic's plugin list"
    assert simulator.config.api_key not in result.stderr
    assert "Policy Texas" in result.stdout
    assert "Summary:" in result.stdout
    series = {
        (s.name, s.labels.get("program"))
        for family in text_string_to_metric_families(metrics.read_text(encoding="utf-8"))
        for s in family.samples
    }
    for name in ("autoapprove_last_run_timestamp_seconds", "autoapprove_last_run_duration_seconds",
                 "autoapprove_last_run_decisions", "autoapprove_last_run_changes",
                 "autoapprove_last_run_outcome"):  # fmt: skip
        assert {(name, p) for p in PROGRAMS} <= series, name
    with Store.open(db) as store:
        assert {r.program_id for r in store.list_runs()} == PROGRAMS


def test_the_log_format_comes_from_the_environment_and_a_bad_one_is_refused(
    simulator: Simulator, tmp_path: Path
) -> None:
    db = f"sqlite:///{tmp_path / 'store.db'}"
    policy = str(REPO_ROOT / "rules" / "tx_residential_battery.yaml")
    good = run(simulator, db, "--rules", policy, AUTOAPPROVE_LOG_FORMAT="json")
    assert good.code == 0, good.stderr
    assert [e["event"] for e in json_lines(good.stderr)][-1] == "run_finished"
    bad = run(simulator, db, "--rules", policy, AUTOAPPROVE_LOG_FORMAT="yaml")
    assert bad.code == 2
    assert "AUTOAPPROVE_LOG_FORMAT" in bad.stderr
    assert "Traceback" not in bad.stderr


def test_two_policies_for_one_program_are_refused_before_anything_runs(
    simulator: Simulator, tmp_path: Path, rules: Path
) -> None:
    shutil.copy(rules / "tx_residential_battery.yaml", rules / "tx_copy.yaml")
    result = run(simulator, f"sqlite:///{tmp_path / 'store.db'}", "--rules", str(rules))
    assert result.code == 2
    assert "tx_copy.yaml" in result.stderr
    assert "tx_residential_battery.yaml" in result.stderr
    assert simulator.request_counts() == {}


def test_a_held_lock_stops_only_its_program_and_sets_the_exit_code(
    simulator: Simulator, tmp_path: Path, rules: Path, receiver: Receiver
) -> None:
    db = f"sqlite:///{tmp_path / 'store.db'}"
    with Store.open(db) as store, acquire_program_lock(store.engine, TX_BATTERY_PROGRAM, "elsewhere:1"):
        result = run(simulator, db, "--rules", str(rules), "--live", "--yes", "--parallel", "2",
                     "--notify-url", receiver.url, "--notify-always")  # fmt: skip
    assert result.code == 4, result.stderr  # the most severe of 0 (CA) and 4 (TX)
    assert f"{TX_BATTERY_PROGRAM}: error:" in result.stderr
    with Store.open(db) as store:
        (ca_run,) = store.list_runs(CA_EV_PROGRAM)
        assert ca_run.outcome == "completed"
        assert store.list_runs(TX_BATTERY_PROGRAM) == []
    bodies = {b["program"]: b for b in receiver.bodies}
    assert set(bodies) == PROGRAMS
    assert bodies[TX_BATTERY_PROGRAM]["outcome"] == "locked"
    assert bodies[CA_EV_PROGRAM]["outcome"] == "completed"
    assert bodies[CA_EV_PROGRAM]["counts"]["changes"].get("applied", 0) > 0
    assert all(isinstance(b["text"], str) and b["text"] for b in bodies.values())
    assert simulator.config.api_key not in json.dumps(receiver.bodies)


def test_a_failed_run_is_notified_and_a_clean_one_is_not(
    simulator: Simulator, tmp_path: Path, receiver: Receiver
) -> None:
    db = f"sqlite:///{tmp_path / 'store.db'}"
    policy = str(REPO_ROOT / "rules" / "tx_residential_battery.yaml")
    clean = run(simulator, db, "--rules", policy, AUTOAPPROVE_NOTIFY_URL=receiver.url)
    assert clean.code == 0, clean.stderr
    assert receiver.bodies == []
    simulator.script("GET", "^/v1/enrollments$", "malformed")
    failed = run(simulator, db, "--rules", policy, AUTOAPPROVE_NOTIFY_URL=receiver.url)
    assert failed.code == 6
    (body,) = receiver.bodies
    assert (body["program"], body["outcome"]) == (TX_BATTERY_PROGRAM, "failed")
    assert isinstance(body["run_id"], int)


@pytest.mark.parametrize("fmt", ["json", "csv"])
def test_a_folder_streams_one_document_with_the_program_of_each_decision(
    simulator: Simulator, tmp_path: Path, rules: Path, fmt: str
) -> None:
    result = run(simulator, f"sqlite:///{tmp_path / 'store.db'}", "--rules", str(rules), "--format", fmt)
    assert result.code == 0, result.stderr
    if fmt == "json":
        programs = {d["program_id"] for d in json.loads(result.stdout)}
    else:
        header, *rows = result.stdout.splitlines()
        assert header.startswith("program_id,enrollment_id")
        programs = {row.split(",", 1)[0] for row in rows}
    assert programs == PROGRAMS


def test_plan_takes_a_folder_one_plan_per_program(simulator: Simulator, tmp_path: Path, rules: Path) -> None:
    result = run_cli(
        ["plan", "--rules", str(rules), "--now", NOW_ARG],
        env=cli_env(simulator, f"sqlite:///{tmp_path / 'store.db'}"),
        timeout=120,
    )
    assert result.code == 0, result.stderr
    assert result.stdout.count("saved; apply it with: autoapprove apply") == 2
    assert simulator.request_counts().get("PATCH", 0) == 0
