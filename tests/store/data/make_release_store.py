"""Makes ``release_0001_store.json``: a decision store written by the release before
change-only storage (schema revision 0001, a full row per enrollment per run), dumped table
by table, for the migration test. Kept to show how the file was made; it needs that
release's code to run (``git show 1406db9:...``), not this one's.

    .venv/bin/python tests/store/data/make_release_store.py tests/store/data/release_0001_store.json
"""

from __future__ import annotations

import json
import sys
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import text

from engine.bootstrap import run_policy
from engine.config import Settings
from engine.policy.document import load_policy
from engine.runs.service import RunSettings
from engine.sandbox.generator import CA_EV_PROGRAM, TX_BATTERY_PROGRAM
from engine.sandbox.simulator import Simulator, SimulatorConfig
from engine.store import Store

ROOT = Path(__file__).resolve().parents[3]
NOW = datetime(2026, 11, 25, tzinfo=UTC)
TABLES = ("policy_versions", "runs", "decisions")


def main(target: Path) -> None:
    tx = load_policy(ROOT / "rules" / "tx_residential_battery.yaml")
    ca = load_policy(ROOT / "rules" / "ca_ev_charging.yaml")
    config = SimulatorConfig(programs={TX_BATTERY_PROGRAM: 40, CA_EV_PROGRAM: 25}, seed=5, now=NOW)
    with Simulator(config) as sim, tempfile.TemporaryDirectory() as scratch:
        url = f"sqlite:///{scratch}/release.db"
        app = Settings(api_url=sim.base_url, api_key=sim.config.api_key, db_url=url)

        def run(policy, day: int, live: bool = False) -> None:
            settings = RunSettings(live=live, now=NOW + timedelta(days=day), concurrency=2)
            run_policy(policy, app, settings)

        run(tx, 0)
        run(tx, 0)  # an unchanged streak
        run(ca, 0)
        ids = sim.enrollment_ids(TX_BATTERY_PROGRAM)
        sim.edit_enrollment(ids[0], status="PENDING")  # a person's decision
        sim.edit_enrollment(ids[1], status="REJECTED")  # now outside applies_to
        run(tx, 1)
        run(tx, 1, live=True)  # applies the changes: applied rows
        run(tx, 2)
        run(tx, 2)
        run(ca, 3)
        with Store.open(url) as store, store.engine.connect() as connection:
            dump = {
                table: [
                    dict(r._mapping) for r in connection.execute(text(f"SELECT * FROM {table} ORDER BY id"))
                ]
                for table in TABLES
            }
            dump["alembic_version"] = [
                dict(row._mapping) for row in connection.execute(text("SELECT * FROM alembic_version"))
            ]
    target.write_text(json.dumps(dump, indent=1, default=str, sort_keys=True) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
