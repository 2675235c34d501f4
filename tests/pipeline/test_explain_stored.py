"""`autoapprove explain ENROLLMENT_ID`: the stored decision, replayed against the API."""

from __future__ import annotations

import json
from pathlib import Path

from cli_process import run_cli

from engine.sandbox.generator import TX_BATTERY_PROGRAM
from engine.sandbox.simulator import Simulator

from .conftest import NOW_ARG, cli_env

RULES = "rules/tx_residential_battery.yaml"


def test_explain_replays_the_stored_decision_and_notices_changed_facts(
    simulator: Simulator, tmp_path: Path
) -> None:
    env = cli_env(simulator, f"sqlite:///{tmp_path / 'explain.db'}")
    dry = run_cli(["run", "--rules", RULES, "--format", "json", "--now", NOW_ARG], env=env)
    assert dry.code == 0, dry.stderr
    target = next(d for d in json.loads(dry.stdout) if d["action"] == "update" and d["rule_id"] != "default")

    explained = run_cli(["explain", target["enrollment_id"]], env=env)
    assert explained.code == 0, explained.stderr
    assert f"{target['status']} by {target['rule_id']}" in explained.stdout
    assert "dry run: nothing was sent" in explained.stdout
    assert "the facts it reads are unchanged since" in explained.stdout
    assert f"rule {target['rule_id']}: MATCH" in explained.stdout

    site = simulator.enrollment(target["enrollment_id"])["site"]
    simulator.edit_enrollment(target["enrollment_id"], site={**site, "state_code": "ZZ"})
    again = run_cli(["explain", target["enrollment_id"]], env=env)
    assert "the facts it reads are CHANGED since" in again.stdout

    without_key = run_cli(["explain", target["enrollment_id"]], env={"AUTOAPPROVE_DB": env["AUTOAPPROVE_DB"]})
    assert without_key.code == 0
    assert "set FLIP_API_KEY" in without_key.stdout
    assert TX_BATTERY_PROGRAM not in without_key.stderr
