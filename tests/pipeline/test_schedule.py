"""`run --every`: repeats until a signal, which ends it cleanly between runs or enrollments."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from engine.sandbox.simulator import Simulator
from engine.store import Store

from .conftest import REPO_ROOT, cli_env

RULES = "rules/tx_residential_battery.yaml"


def _runs(db_url: str) -> list[str]:
    with Store.open(db_url) as store:
        return [str(run.outcome) for run in store.list_runs()]


def test_every_repeats_until_sigterm_then_exits_cleanly(simulator: Simulator, tmp_path: Path) -> None:
    db_url = f"sqlite:///{tmp_path / 'every.db'}"
    env = {**{k: v for k, v in os.environ.items() if not k.startswith(("FLIP_", "AUTOAPPROVE_"))}}
    env.update(cli_env(simulator, db_url))
    process = subprocess.Popen(
        [sys.executable, "cli.py", "run", "--rules", RULES, "--every", "1s", "--format", "json"],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and len(_runs(db_url)) < 2:
            time.sleep(0.2)
        assert len(_runs(db_url)) >= 2, "the schedule did not repeat"
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    assert "stopping after the current enrollment" in stderr
    assert "Traceback" not in stderr
    outcomes = _runs(db_url)  # newest first
    assert "running" not in outcomes  # every run recorded how it ended
    assert set(outcomes[1:]) == {"completed"}
    # Stopped between runs: the last run's code; stopped during one: interrupted (130).
    assert process.returncode == (130 if outcomes[0] == "interrupted" else 0), stderr
