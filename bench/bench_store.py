"""How fast ``Store.add_decisions`` stores a run's decisions, on SQLite and PostgreSQL.

    .venv/bin/python bench/bench_store.py                              # SQLite, 100,000 decisions
    .venv/bin/python bench/bench_store.py --postgres postgresql+psycopg://postgres@127.0.0.1:5432/postgres
    .venv/bin/python bench/bench_store.py --count 20000 --profile      # plus a cProfile of one call
    .venv/bin/python bench/bench_store.py --breakdown                  # Python's share vs the database's

The decisions are real ones: ``engine.sandbox.generator`` enrollments (seed 7) evaluated against
``rules/tx_residential_battery.yaml`` with ``trace=False``, as a dry run makes them (about
half ``update`` with a PATCH body, a few with warnings, empty traces). They are built once,
before any timing.

Each repeat stores all of them into a fresh database (a new SQLite file in WAL mode; a new
scratch PostgreSQL database on the given server, dropped afterwards) as one run, and times
the ``add_decisions`` call alone (wall clock; the process's CPU time is shown alongside, since
on PostgreSQL part of the work happens in the server). The line per backend gives the median
of ``--repeat`` runs (3 by default) with the spread.
"""

from __future__ import annotations

import argparse
import cProfile
import os
import platform
import pstats
import sqlite3
import statistics
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import sqlalchemy
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from engine.policy.decision import Decision  # noqa: E402
from engine.policy.document import load_policy  # noqa: E402
from engine.policy.evaluator import Evaluator  # noqa: E402
from engine.runs.patch import planned_body  # noqa: E402
from engine.sandbox.generator import generate_enrollments  # noqa: E402
from engine.store import Store, resolve_db_url  # noqa: E402

POLICY = ROOT / "rules" / "tx_residential_battery.yaml"
PROGRAM = "prog-tx-residential-battery"
NOW = datetime(2026, 11, 25, tzinfo=UTC)


def make_decisions(count: int) -> list[Decision]:
    evaluator = Evaluator(load_policy(POLICY), NOW, trace=False)
    return list(evaluator.evaluate_many(generate_enrollments(PROGRAM, count, seed=7, now=NOW)))


def describe(decisions: list[Decision]) -> str:
    actions = Counter(decision.action.value for decision in decisions)
    with_bodies = sum(1 for decision in decisions if planned_body(decision)[0] is not None)
    warned = sum(1 for decision in decisions if decision.warnings)
    traced = sum(1 for decision in decisions if decision.trace)
    shares = ", ".join(f"{action} {n / len(decisions):.0%}" for action, n in sorted(actions.items()))
    return (
        f"decisions: {len(decisions):,} ({shares}); {with_bodies:,} with a PATCH body, "
        f"{warned:,} with warnings, {traced:,} with a trace"
    )


def machine_line(pg_version: str | None) -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    load = " ".join(f"{value:.2f}" for value in os.getloadavg())
    parts = [
        f"machine: {cpu}, {os.cpu_count()} cores, {platform.system()} {platform.release()}",
        f"CPython {platform.python_version()}",
        f"SQLAlchemy {sqlalchemy.__version__}",
        f"SQLite {sqlite3.sqlite_version}",
        f"psycopg {psycopg.__version__}",
    ]
    if pg_version:
        parts.append(f"PostgreSQL {pg_version}")
    parts.append(f"load average {load}")
    parts.append(datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"))
    return ", ".join(parts)


# -- databases -------------------------------------------------------------------------


@contextmanager
def sqlite_database() -> Iterator[str]:
    with tempfile.TemporaryDirectory(prefix="bench-store-") as directory:
        yield f"sqlite:///{Path(directory) / 'store.db'}"


def pg_admin(server_url: str) -> sqlalchemy.Engine:
    server = make_url(resolve_db_url(server_url))
    return create_engine(server.set(database="postgres"), isolation_level="AUTOCOMMIT", poolclass=NullPool)


def pg_server_version(server_url: str) -> str:
    admin = pg_admin(server_url)
    try:
        with admin.connect() as connection:
            return str(connection.execute(text("SHOW server_version")).scalar_one())
    finally:
        admin.dispose()


def pg_database(server_url: str) -> Callable[[], AbstractContextManager[str]]:
    @contextmanager
    def scratch() -> Iterator[str]:
        server = make_url(resolve_db_url(server_url))
        name = f"autoapprove_bench_{uuid.uuid4().hex[:12]}"
        admin = pg_admin(server_url)
        try:
            with admin.connect() as connection:
                connection.execute(text(f'CREATE DATABASE "{name}"'))
            try:
                yield server.set(database=name).render_as_string(hide_password=False)
            finally:
                with admin.connect() as connection:
                    connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        finally:
            admin.dispose()

    return scratch


# -- timing ----------------------------------------------------------------------------


@dataclass
class Timing:
    backend: str
    count: int
    wall: list[float]
    cpu: list[float]

    def line(self) -> str:
        rates = [self.count / seconds for seconds in self.wall]
        median = statistics.median(self.wall)
        return (
            f"{self.backend:<10} {self.count / median:>10,.0f} decisions/s  "
            f"[{min(rates):>9,.0f} .. {max(rates):>9,.0f}]  "
            f"median {median:6.3f} s  (cpu {statistics.median(self.cpu):6.3f} s in this process; "
            f"runs: {', '.join(f'{s:.3f}' for s in self.wall)})"
        )


def store_once(
    database: Callable[[], AbstractContextManager[str]],
    decisions: list[Decision],
    profile: cProfile.Profile | None = None,
) -> tuple[float, float]:
    """Store ``decisions`` as one dry run into a fresh database: (wall, cpu) seconds."""
    with database() as url, Store.open(url) as store:
        run_id = store.start_run(PROGRAM, "dry_run", None, NOW)
        if profile is not None:
            profile.enable()
        wall, cpu = time.perf_counter(), time.process_time()
        store.add_decisions(run_id, PROGRAM, decisions)
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        if profile is not None:
            profile.disable()
        stored = len(store.run_decisions(run_id, offset=len(decisions) - 1))
        if stored != 1:
            raise RuntimeError(f"expected {len(decisions)} stored decisions")
    return wall, cpu


def breakdown_once(database: Callable[[], AbstractContextManager[str]], decisions: list[Decision]) -> str:
    """Time the two halves of ``add_decisions`` apart: building the rows (Python), and
    inserting rows already built, batch by batch in the store's own transactions (the
    database and driver). Uses the store's private helpers: bench only."""
    from engine.store.base import BATCH_SIZE
    from engine.store.locks import write_transaction
    from engine.store.rows import decision_rows, insert_rows, stored_form

    with database() as url, Store.open(url) as store:
        run_id = store.start_run(PROGRAM, "dry_run", None, NOW)
        updated_at = stored_form(store.engine.dialect, "updated_at", NOW)
        started = time.perf_counter()
        batches = [
            decision_rows(
                decisions[start : start + BATCH_SIZE],
                run_id=run_id,
                program_id=PROGRAM,
                live=False,
                updated_at=updated_at,
                change_keys=None,
            )
            for start in range(0, len(decisions), BATCH_SIZE)
        ]
        built = time.perf_counter() - started
        started = time.perf_counter()
        for rows in batches:
            with write_transaction(store.engine) as connection:
                insert_rows(connection, rows)
        inserted = time.perf_counter() - started
    return f"building the rows {built:.3f} s, inserting them already built {inserted:.3f} s"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--count", type=int, default=100_000, help="decisions per call (default 100000)")
    parser.add_argument("--repeat", type=int, default=3, help="timed runs per backend (default 3)")
    parser.add_argument("--postgres", metavar="URL", help="also measure on this PostgreSQL server")
    parser.add_argument("--no-sqlite", action="store_true", help="skip SQLite")
    parser.add_argument("--profile", action="store_true", help="cProfile one more call per backend")
    parser.add_argument("--top", type=int, default=30, help="profile lines to show (default 30)")
    parser.add_argument(
        "--breakdown", action="store_true", help="also time building rows and inserting them apart"
    )
    args = parser.parse_args()

    pg_version = pg_server_version(args.postgres) if args.postgres else None
    print(machine_line(pg_version), flush=True)
    started = time.perf_counter()
    decisions = make_decisions(args.count)
    print(f"{describe(decisions)} (built in {time.perf_counter() - started:.1f} s)", flush=True)

    backends: list[tuple[str, Callable[[], AbstractContextManager[str]]]] = []
    if not args.no_sqlite:
        backends.append(("sqlite", sqlite_database))
    if args.postgres:
        backends.append(("postgresql", pg_database(args.postgres)))

    for name, database in backends:
        timing = Timing(name, len(decisions), [], [])
        for _ in range(args.repeat):
            wall, cpu = store_once(database, decisions)
            timing.wall.append(wall)
            timing.cpu.append(cpu)
        print(timing.line(), flush=True)
        if args.breakdown:
            print(f"{name:<10} one more call, in halves: {breakdown_once(database, decisions)}", flush=True)
        if args.profile:
            profile = cProfile.Profile()
            store_once(database, decisions, profile)
            print(f"--- cProfile of one add_decisions on {name} (by own time) ---")
            pstats.Stats(profile).strip_dirs().sort_stats("tottime").print_stats(args.top)


if __name__ == "__main__":
    main()
