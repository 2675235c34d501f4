"""Scheduled runs at scale: store growth of unchanged runs, the steady-state dry run against
the GET+json.loads floor, peak RSS of every output format (table, json, csv, html) at 10k and
100k, the same for offline runs (``run --input``), a 300k run, and the profile of the steady state.

    .venv/bin/python bench/bench_scale.py                               # SQLite
    .venv/bin/python bench/bench_scale.py --postgres URL                # also PostgreSQL
    .venv/bin/python bench/bench_scale.py --only memory,offline --formats html --sizes 10000,100000

Every measured run is a fresh child process (``_scale_children.py``); the simulator runs
in its own process. Store size: the SQLite file (after a WAL checkpoint) or
``pg_database_size``. Results go to stdout; BENCHMARKS.md records them.
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
from pathlib import Path
from typing import Any

from bench_e2e import ROOT, SimulatorProcess, child, drop_pg_db, fresh_pg_db, machine_line

SCALE_CHILD = str(ROOT / "bench" / "_scale_children.py")


def scale_run(
    url: str, db: str, fmt: str = "table", profile: str | None = None
) -> tuple[dict[str, Any], float]:
    """One dry run in a fresh process: its JSON result and peak RSS in MB. ``html`` runs
    ``autoapprove run --format html`` (every decision explained, the page written)."""
    if fmt == "html":
        return scale_child("cli", url, db, fmt)
    return scale_child("run", url, db, fmt, *([profile] if profile else []))


def scale_child(role: str, *args: str) -> tuple[dict[str, Any], float]:
    start = time.perf_counter()
    with tempfile.TemporaryFile() as errors:
        proc = subprocess.Popen(
            [sys.executable, SCALE_CHILD, role, *args], cwd=ROOT, stdout=subprocess.PIPE, stderr=errors,
        )  # fmt: skip
        assert proc.stdout is not None
        output = proc.stdout.read()
        _, status, usage = os.wait4(proc.pid, 0)
        if status != 0:
            errors.seek(0)
            raise SystemExit(f"run failed with status {status}: {errors.read().decode()[-2000:]}")
    result = json.loads(output.decode().strip().splitlines()[-1])
    result["wall"] = time.perf_counter() - start
    return result, usage.ru_maxrss / 1024


def store_bytes(db: str) -> int:
    import sqlalchemy

    engine = sqlalchemy.create_engine(db)
    try:
        with engine.connect() as connection:
            if engine.dialect.name == "sqlite":
                connection.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
                path = str(engine.url.database)
                return sum(os.path.getsize(p) for p in (path, f"{path}-wal") if os.path.exists(p))
            return int(connection.exec_driver_sql("SELECT pg_database_size(current_database())").scalar_one())
    finally:
        engine.dispose()


class Store:
    """A fresh store of one backend for a measurement, removed after."""

    def __init__(self, backend: str, pg_base: str | None) -> None:
        self.backend, self.pg_base = backend, pg_base
        self.scratch = tempfile.TemporaryDirectory()
        self.name = ""
        if pg_base:
            self.url, self.name = fresh_pg_db(pg_base)
        else:
            self.url = f"sqlite:///{self.scratch.name}/bench.db"

    def close(self) -> None:
        if self.pg_base:
            drop_pg_db(self.pg_base, self.name)
        self.scratch.cleanup()


def floor(url: str, repeat: int) -> float:
    return statistics.median(child("floor", url)[0]["seconds"] for _ in range(repeat))


def growth(backends: dict[str, str | None]) -> None:
    """Four more dry runs over 20,000 unchanged enrollments: bytes added in total."""
    sim = SimulatorProcess(20_000)
    try:
        for backend, pg in backends.items():
            store = Store(backend, pg)
            try:
                first, _ = scale_run(sim.url, store.url)
                base = store_bytes(store.url)
                unchanged = []
                for _ in range(4):
                    out, _rss = scale_run(sim.url, store.url)
                    unchanged.append(out["unchanged"])
                added = store_bytes(store.url) - base
                print(f"  growth {backend}: first run {base / 1e6:.1f} MB; 4 more dry runs over "
                      f"{first['enrollments']:,} unchanged add {added / 1024:.0f} KB in total "
                      f"(target < 256 KB); unchanged per run {unchanged}")  # fmt: skip
            finally:
                store.close()
    finally:
        sim.close()


def steady(size: int, backends: dict[str, str | None], repeat: int, profile_dir: Path | None) -> None:
    """The second dry run over ``size`` unchanged enrollments vs the floor of the same session."""
    sim = SimulatorProcess(size)
    try:
        base_floor = floor(sim.url, repeat)
        print(f"  floor GET+json.loads of {size:,}: {base_floor:.2f} s (median of {repeat})")
        for backend, pg in backends.items():
            store = Store(backend, pg)
            try:
                first, first_rss = scale_run(sim.url, store.url)
                base = store_bytes(store.url)
                times, rss = [], []
                for _ in range(repeat):
                    out, peak = scale_run(sim.url, store.url)
                    times.append(out["run_seconds"])
                    rss.append(peak)
                added = store_bytes(store.url) - base
                median = statistics.median(times)
                print(f"  {backend} {size:,}: first run {first['run_seconds']:.2f} s, "
                      f"peak RSS {first_rss:.0f} MB; "
                      f"steady state {median:.2f} s (min {min(times):.2f}, max {max(times):.2f}) = "
                      f"{median / base_floor:.2f}x the floor (target <= 1.5); {repeat} runs added "
                      f"{added / 1024:.0f} KB ({added / repeat / 1024:.0f} KB per run, target < 1 MB); "
                      f"peak RSS {statistics.median(rss):.0f} MB; "
                      f"unchanged {out['unchanged']:,}")  # fmt: skip
                if profile_dir is not None and backend == "sqlite":
                    target = profile_dir / f"scale-profile-{size}-{time.strftime('%Y-%m-%d')}.txt"
                    scale_run(sim.url, store.url, profile=str(target))
                    print(f"  profile of the steady state: {target.relative_to(ROOT)}")
            finally:
                store.close()
    finally:
        sim.close()


FORMATS = ("table", "json", "csv", "html")


def memory(sizes: list[int], backends: dict[str, str | None], formats: tuple[str, ...] = FORMATS) -> None:
    """Peak RSS of a first dry run (every decision stored) in each format, at each size."""
    peaks: dict[tuple[str, str, int], float] = {}
    for size in sizes:
        sim = SimulatorProcess(size)
        try:
            for backend, pg in backends.items():
                for fmt in formats:
                    store = Store(backend, pg)
                    try:
                        _out, peak = scale_run(sim.url, store.url, fmt)
                        peaks[(backend, fmt, size)] = peak
                    finally:
                        store.close()
        finally:
            sim.close()
    small, large = min(sizes), max(sizes)
    for backend in backends:
        for fmt in formats:
            a, b = peaks[(backend, fmt, small)], peaks[(backend, fmt, large)]
            print(f"  peak RSS {backend} --format {fmt}: {small:,} {a:.0f} MB, {large:,} {b:.0f} MB "
                  f"= {b / a:.2f}x (target <= 1.3)")  # fmt: skip


def offline(sizes: list[int], formats: tuple[str, ...] = ("table", "html")) -> None:
    """Peak RSS of ``autoapprove run --input FILE`` (no API, no store) at each size."""
    with tempfile.TemporaryDirectory() as folder:
        peaks: dict[tuple[str, int], float] = {}
        for size in sizes:
            path = str(Path(folder) / f"enrollments-{size}.json")
            scale_child("records", str(size), path)
            for fmt in formats:
                out, peak = scale_child("offline", path, fmt)
                peaks[(fmt, size)] = peak
                print(f"  offline --format {fmt} {size:,}: {out['run_seconds']:.1f} s, "
                      f"{out['bytes'] / 1e6:.1f} MB written, peak RSS {peak:.0f} MB")  # fmt: skip
    small, large = min(sizes), max(sizes)
    for fmt in formats:
        a, b = peaks[(fmt, small)], peaks[(fmt, large)]
        print(f"  peak RSS offline --format {fmt}: {small:,} {a:.0f} MB, {large:,} {b:.0f} MB = {b / a:.2f}x")


def big(size: int) -> None:
    sim = SimulatorProcess(size)
    try:
        base_floor = floor(sim.url, 1)
        store = Store("sqlite", None)
        try:
            first, first_rss = scale_run(sim.url, store.url)
            after_first = store_bytes(store.url)
            again, rss = scale_run(sim.url, store.url)
            added = store_bytes(store.url) - after_first
        finally:
            store.close()
        print(f"  {size:,} on SQLite: floor {base_floor:.2f} s; first dry run {first['run_seconds']:.2f} s "
              f"({first['run_seconds'] / base_floor:.2f}x), peak RSS {first_rss:.0f} MB, store "
              f"{after_first / 1e6:.0f} MB; steady state {again['run_seconds']:.2f} s "
              f"({again['run_seconds'] / base_floor:.2f}x), peak RSS {rss:.0f} MB, "
              f"added {added / 1024:.0f} KB")  # fmt: skip
    finally:
        sim.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--postgres", metavar="URL", help="also measure PostgreSQL (a server URL)")
    parser.add_argument("--only", default="growth,steady,memory,offline,big,profile")
    parser.add_argument("--formats", default=",".join(FORMATS), help="memory: the output formats")
    parser.add_argument("--sizes", default="10000,100000", help="memory and offline: enrollments per run")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--big", type=int, default=300_000)
    parser.add_argument("--no-sqlite", action="store_true", help="with --postgres: PostgreSQL only")
    args = parser.parse_args()
    only = set(args.only.split(","))
    sizes = [int(size) for size in args.sizes.split(",")]
    backends: dict[str, str | None] = {} if args.no_sqlite and args.postgres else {"sqlite": None}
    if args.postgres:
        backends["postgres"] = args.postgres
    print(f"machine: {machine_line()}; load average {os.getloadavg()[0]:.1f}")
    if "growth" in only:
        print("store growth, 20,000 unchanged enrollments:")
        growth(backends)
    if "steady" in only:
        print("steady state, 100,000 unchanged enrollments:")
        steady(100_000, backends, args.repeat, ROOT / "bench" / "results" if "profile" in only else None)
    if "memory" in only:
        print("peak RSS by format (first dry runs):")
        memory(sizes, backends, tuple(args.formats.split(",")))
    if "offline" in only:
        print("peak RSS of offline runs (run --input FILE):")
        offline(sizes)
    if "big" in only:
        print(f"{args.big:,} enrollments:")
        big(args.big)
    print(f"load average at the end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
