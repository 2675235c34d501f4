"""Child processes of bench_e2e.py, one role each, so every measurement has its own process.

python bench/_e2e_children.py server COUNT LATENCY_S      # prints the base URL, serves
python bench/_e2e_children.py floor URL                   # one GET + json.loads
python bench/_e2e_children.py run URL DB LIVE CONCURRENCY RECHECK
"""

from __future__ import annotations

import json
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
POLICY = ROOT / "rules" / "tx_residential_battery.yaml"
PROGRAM = "prog-tx-residential-battery"
KEY = "fl_bench_key"
NOW = datetime(2026, 11, 25, tzinfo=UTC)


def server(count: int, latency: float) -> None:
    from engine.sandbox.simulator import FaultConfig, SimulatorConfig, serve

    config = SimulatorConfig(
        api_key=KEY, programs={PROGRAM: count}, seed=7, now=NOW, faults=FaultConfig(latency_s=latency)
    )
    serve(config, on_ready=lambda info: print(info.base_url, flush=True))


def floor(url: str) -> None:
    import httpx

    start = time.perf_counter()
    response = httpx.get(
        f"{url}/v1/enrollments",
        params={"program_id": PROGRAM},
        headers={"Authorization": f"Bearer {KEY}"},
        timeout=300,
    )
    data = json.loads(response.content)
    seconds = time.perf_counter() - start
    print(json.dumps({"seconds": seconds, "count": len(data["enrollments"])}))


def run(url: str, db: str, live: bool, concurrency: int, recheck: bool) -> None:
    started = time.perf_counter()
    from engine.bootstrap import run_policy
    from engine.config import Settings
    from engine.policy.document import load_policy
    from engine.render.text import render_summary
    from engine.runs.service import RunSettings

    policy = load_policy(POLICY)
    config = Settings(api_url=url, api_key=KEY, db_url=db)
    settings = RunSettings(live=live, now=NOW, concurrency=concurrency, recheck=recheck)
    ready = time.perf_counter()
    report = run_policy(policy, config, settings)
    summary = render_summary(report.decisions)
    done = time.perf_counter()
    print(summary, file=sys.stderr)
    result = {
        "run_seconds": done - ready,
        "startup_seconds": ready - started,
        "decisions": len(report.decisions),
        "changes": dict(report.change_states),
    }
    print(json.dumps(result))


def main() -> None:
    role, args = sys.argv[1], sys.argv[2:]
    if role == "server":
        server(int(args[0]), float(args[1]))
    elif role == "floor":
        floor(args[0])
    else:
        run(args[0], args[1], args[2] == "1", int(args[3]), args[4] == "1")


if __name__ == "__main__":
    main()
