"""End-to-end benchmarks: dry runs at 10k and 100k enrollments vs the GET+parse floor,
scaling and memory, and live-apply throughput vs the bound set by concurrency.

    .venv/bin/python bench/bench_e2e.py                       # SQLite, 10k and 100k, live 10k
    .venv/bin/python bench/bench_e2e.py --postgres URL        # also PostgreSQL
    .venv/bin/python bench/bench_e2e.py --sizes 10000 --skip-live

The simulator runs in a separate process (it would otherwise compete for the GIL), and each
measured run is a fresh child process, so peak RSS is that run's alone (``os.wait4``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
CHILD = str(ROOT / "bench" / "_e2e_children.py")


def child(role: str, *args: str) -> tuple[dict[str, Any], float, float]:
    """Run a child process; return its JSON line, wall seconds and peak RSS in MB."""
    start = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, CHILD, role, *args], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
    )
    assert proc.stdout is not None
    output = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    if status != 0:
        raise SystemExit(f"child failed with status {status}")
    return json.loads(output.decode().strip().splitlines()[-1]), wall, usage.ru_maxrss / 1024


class SimulatorProcess:
    def __init__(self, count: int, latency: float = 0.0) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, CHILD, "server", str(count), str(latency)],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        )  # fmt: skip
        assert self.proc.stdout is not None
        self.url = self.proc.stdout.readline().strip()
        if not self.url:
            raise SystemExit("simulator did not start")

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)


def machine_line() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}; {os.cpu_count()} cores; Python {sys.version.split()[0]}; {time.strftime('%Y-%m-%d')}"


def fresh_pg_db(base_url: str) -> tuple[str, str]:
    import sqlalchemy

    name = f"autoapprove_bench_{uuid.uuid4().hex[:8]}"
    engine = sqlalchemy.create_engine(base_url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(sqlalchemy.text(f'CREATE DATABASE "{name}"'))
    engine.dispose()
    return base_url.rsplit("/", 1)[0] + "/" + name, name


def drop_pg_db(base_url: str, name: str) -> None:
    import sqlalchemy

    engine = sqlalchemy.create_engine(base_url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(sqlalchemy.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    engine.dispose()


def spread(values: list[float]) -> str:
    return f"median {statistics.median(values):.2f} (min {min(values):.2f}, max {max(values):.2f})"


def dry_runs(size: int, repeat: int, backends: dict[str, str | None]) -> dict[str, Any]:
    sim = SimulatorProcess(size)
    results: dict[str, Any] = {"size": size}
    try:
        floors = [child("floor", sim.url)[0]["seconds"] for _ in range(repeat)]
        results["floor"] = floors
        print(f"  floor GET+json.loads of {size}: {spread(floors)} s")
        for backend, pg_base in backends.items():
            runs, rss = [], []
            for _ in range(repeat):
                with tempfile.TemporaryDirectory() as scratch:
                    if pg_base:
                        db, name = fresh_pg_db(pg_base)
                    else:
                        db, name = f"sqlite:///{scratch}/bench.db", ""
                    try:
                        out, _wall, peak = child("run", sim.url, db, "0", "16", "1")
                    finally:
                        if pg_base:
                            drop_pg_db(pg_base, name)
                runs.append(out["run_seconds"])
                rss.append(peak)
            ratio = statistics.median(runs) / statistics.median(floors)
            results[backend] = {"run": runs, "rss": rss, "ratio": ratio}
            print(
                f"  dry run {backend}: {spread(runs)} s; "
                f"{size / statistics.median(runs):,.0f} enrollments/s; "
                f"{ratio:.2f}x the floor (target <= 3); peak RSS {statistics.median(rss):.0f} MB"
            )
    finally:
        sim.close()
    return results


def live_run(changes: int, latency: float, concurrency: int, recheck: bool) -> None:
    sim = SimulatorProcess(changes * 2, latency)  # about half of the generated enrollments need a change
    try:
        with tempfile.TemporaryDirectory() as scratch:
            out, _wall, _rss = child(
                "run",
                sim.url,
                f"sqlite:///{scratch}/live.db",
                "1",
                str(concurrency),
                "1" if recheck else "0",
            )
    finally:
        sim.close()
    applied = out["changes"].get("applied", 0)
    per_change = 2 if recheck else 1
    bound = concurrency / (latency * per_change)
    rate = applied / out["run_seconds"]
    print(
        f"  live, {applied} changes, {latency * 1000:.0f} ms latency, concurrency {concurrency}, "
        f"recheck {'on' if recheck else 'off'} ({per_change} request(s) per change): {rate:.0f} changes/s, "
        f"bound {bound:.0f}/s -> {rate / bound:.0%} of the bound (target >= 80%); "
        f"whole run {out['run_seconds']:.1f} s incl. listing and evaluating {out['decisions']}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,100000")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--postgres", metavar="URL", help="also measure PostgreSQL (a server URL)")
    parser.add_argument("--skip-live", action="store_true")
    parser.add_argument("--live-changes", type=int, default=10000)
    args = parser.parse_args()
    print(f"machine: {machine_line()}")
    backends: dict[str, str | None] = {"sqlite": None}
    if args.postgres:
        backends["postgres"] = args.postgres
    results = []
    for size in (int(s) for s in args.sizes.split(",")):
        print(f"dry run of {size:,} enrollments ({args.repeat} runs each):")
        results.append(dry_runs(size, args.repeat, backends))
    if len(results) >= 2:
        small, large = results[0], results[-1]
        for backend in backends:
            per_small = statistics.median(small[backend]["run"]) / small["size"]
            per_large = statistics.median(large[backend]["run"]) / large["size"]
            rss_ratio = statistics.median(large[backend]["rss"]) / statistics.median(small[backend]["rss"])
            print(
                f"scaling {backend}: time per enrollment at {large['size']:,} is "
                f"{per_large / per_small:.2f}x "
                f"that at {small['size']:,} (target <= 1.2); peak RSS ratio {rss_ratio:.2f}x (target <= 2)"
            )
    if not args.skip_live:
        print("live apply:")
        for recheck in (False, True):
            live_run(args.live_changes, 0.05, 16, recheck)


if __name__ == "__main__":
    main()
