"""Loading each enrollment's latest decision digest (what a change-only run compares with):
the query a run makes once per program, timed on a real PostgreSQL and SQLite store.

    .venv/bin/python bench/bench_digests.py [--enrollments 100000] [--runs 3] [--repeat 5]

Fills a fresh database with ``--runs`` stored decisions per enrollment (one run each),
then times ``Store.latest_digests`` (one ``GROUP BY`` + primary-key join, on every backend)
and, on PostgreSQL, the ``DISTINCT ON`` form of the same question, alternating, median of
``--repeat``. Both must give the same answer: the digest of each enrollment's newest row.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from sqlalchemy import Engine, create_engine, select, text  # noqa: E402
from sqlalchemy.dialects import postgresql  # noqa: E402
from sqlalchemy.pool import NullPool  # noqa: E402

from engine.store import Store, create_engine_for_url  # noqa: E402
from engine.store.schema import DecisionRow  # noqa: E402

PROGRAM = "prog-bench"
SERVER = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"


def fill(engine: Engine, enrollments: int, runs: int) -> None:
    with Store.open(engine):
        pass  # migrates
    series = "generate_series" if engine.dialect.name == "postgresql" else None
    with engine.begin() as connection:
        for run in range(1, runs + 1):
            connection.execute(
                text(
                    "INSERT INTO runs (id, program_id, mode, started_at, evaluation_now, outcome, "
                    "counts) VALUES (:id, :program, 'dry_run', CURRENT_TIMESTAMP, CURRENT_TIMESTAMP, "
                    "'completed', '{}')"
                ),
                {"id": run, "program": PROGRAM},
            )
            numbers = (
                f"SELECT n FROM {series}(1, :count) AS n"
                if series
                else "WITH RECURSIVE s(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM s WHERE n < :count) "
                "SELECT n FROM s"
            )
            connection.execute(
                text(
                    "INSERT INTO decisions (run_id, program_id, enrollment_id, group_ids, current_group_ids, "
                    "groups_added, groups_removed, action, warnings, trace, decision_digest, change_state, "
                    "attempts, updated_at) SELECT :run, :program, 'enr-' || n, '[]', '[]', '[]', '[]', "
                    "'none', '[]', '[]', n * 10 + :run, 'none', 0, CURRENT_TIMESTAMP "
                    f"FROM ({numbers}) AS numbers"
                ),
                {"run": run, "program": PROGRAM, "count": enrollments},
            )
        if engine.dialect.name == "postgresql":
            connection.execute(text("ANALYZE decisions"))


def distinct_on(engine: Engine) -> dict[str, int]:
    query = (
        select(DecisionRow.enrollment_id, DecisionRow.decision_digest)
        .where(DecisionRow.program_id == PROGRAM, DecisionRow.enrollment_id.is_not(None))
        .ext(postgresql.distinct_on(DecisionRow.enrollment_id))
        .order_by(DecisionRow.enrollment_id, DecisionRow.id.desc())
    )
    with engine.connect() as connection:
        return {row.enrollment_id: row.decision_digest for row in connection.execute(query)}


def timed(call: object) -> tuple[float, object]:
    start = time.perf_counter()
    result = call()  # type: ignore[operator]
    return time.perf_counter() - start, result


def measure(engine: Engine, repeat: int, enrollments: int, runs: int) -> None:
    shipped: list[float] = []
    other: list[float] = []
    on_postgres = engine.dialect.name == "postgresql"
    with Store.open(engine) as store:
        for _ in range(repeat):
            seconds, got = timed(lambda: store.latest_digests(PROGRAM))
            shipped.append(seconds)
            assert len(got) == enrollments and all(d % 10 == runs for d in got.values())  # type: ignore[attr-defined]  # noqa: PT018
            if on_postgres:
                seconds, alternative = timed(lambda: distinct_on(engine))
                other.append(seconds)
                assert alternative == got
    alternative_text = f", DISTINCT ON {statistics.median(other):.3f} s" if on_postgres else ""
    print(
        f"{engine.dialect.name}: latest_digests (GROUP BY + join) {statistics.median(shipped):.3f} s"
        f"{alternative_text} (median of {repeat}, {enrollments:,} enrollments x {runs} rows each)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--enrollments", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    name = f"autoapprove_bench_{uuid.uuid4().hex[:8]}"
    admin = create_engine(SERVER, isolation_level="AUTOCOMMIT", poolclass=NullPool)
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        engine = create_engine_for_url(SERVER.rsplit("/", 1)[0] + f"/{name}")
        fill(engine, args.enrollments, args.runs)
        measure(engine, args.repeat, args.enrollments, args.runs)
        engine.dispose()
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    with tempfile.TemporaryDirectory() as folder:
        engine = create_engine_for_url(f"sqlite:///{folder}/bench.db")
        fill(engine, args.enrollments, args.runs)
        measure(engine, args.repeat, args.enrollments, args.runs)
        engine.dispose()


if __name__ == "__main__":
    main()
