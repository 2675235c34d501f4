"""Retention: ``db prune`` deletes old decision rows and runs, and reclaims the space.

What is never deleted:

* each enrollment's latest decision (per program): it answers "what is decided now" and
  every later run that found it unchanged;
* a change still open or waiting for a person (planned, in flight, failed_retryable,
  deferred, held, awaiting_approval) and a refusal (it keeps a refused change from being
  proposed again);
* with ``keep_applied`` (the default) every row that recorded a change sent to the API
  (applied or recovered, or any row with an attempt);
* runs that a saved plan refers to, and their decisions; runs still running.

Rows go in batches, one transaction each, so a prune killed mid-way leaves a consistent
store: every batch held only rows that could go on their own, and running it again finishes
the job. Runs go once none of their decisions is left, then policy versions no run uses.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Engine, Select, delete, exists, func, select
from sqlalchemy.engine import Connection

from engine.runs.checkpoints import Checkpoint, Step, no_checkpoint
from engine.runs.states import APPLIED_STATES, ChangeState, RunOutcome
from engine.store.locks import database_errors, write_transaction
from engine.store.schema import DecisionRow, PlanRow, PolicyVersionRow, RunRow

__all__ = ["PruneCounts", "prune", "prune_counts"]

BATCH = 2000
_KEPT_STATES = (
    ChangeState.PLANNED, ChangeState.IN_FLIGHT, ChangeState.FAILED_RETRYABLE, ChangeState.DEFERRED,
    ChangeState.HELD, ChangeState.AWAITING_APPROVAL, ChangeState.REFUSED,
)  # fmt: skip


@dataclass(frozen=True)
class PruneCounts:
    """What a prune removes (or removed), and the store's size around it when known."""

    decisions: int
    runs: int
    policy_versions: int = 0
    bytes_before: int | None = None
    bytes_after: int | None = None


def _old_runs(cutoff: datetime) -> Select[int]:
    """Finished runs started before ``cutoff`` that no saved plan refers to."""
    planned = select(PlanRow.run_id)
    applying = select(PlanRow.apply_run_id).where(PlanRow.apply_run_id.is_not(None))
    return select(RunRow.id).where(
        RunRow.started_at < cutoff,
        RunRow.outcome != RunOutcome.RUNNING.value,
        RunRow.id.not_in(planned),
        RunRow.id.not_in(applying),
    )


def _doomed_decisions(connection: Connection, cutoff: datetime, keep_applied: bool) -> list[int]:
    latest = (
        select(func.max(DecisionRow.id))
        .where(DecisionRow.enrollment_id.is_not(None))
        .group_by(DecisionRow.program_id, DecisionRow.enrollment_id)
    )
    kept_states = [state.value for state in _KEPT_STATES]
    query = select(DecisionRow.id).where(
        DecisionRow.run_id.in_(_old_runs(cutoff)),
        DecisionRow.id.not_in(latest),
        DecisionRow.change_state.not_in(kept_states),
    )
    if keep_applied:
        sent = [state.value for state in sorted(APPLIED_STATES)]
        query = query.where(DecisionRow.attempts == 0, DecisionRow.change_state.not_in(sent))
    return list(connection.execute(query.order_by(DecisionRow.id)).scalars())


def _empty_old_runs(cutoff: datetime) -> Select[int]:
    has_decision = exists().where(DecisionRow.run_id == RunRow.id)
    return select(RunRow.id).where(RunRow.id.in_(_old_runs(cutoff)), ~has_decision)


def _unused_versions() -> Select[int]:
    used = exists().where(RunRow.policy_version_id == PolicyVersionRow.id)
    return select(PolicyVersionRow.id).where(~used)


def prune_counts(engine: Engine, cutoff: datetime, *, keep_applied: bool = True) -> PruneCounts:
    """What ``prune`` would remove now (runs: those already without decisions or left so)."""
    with database_errors("could not read what to prune"), engine.connect() as connection:
        doomed = _doomed_decisions(connection, cutoff, keep_applied)
        candidates = set(connection.execute(_old_runs(cutoff)).scalars())
        remaining = set(
            connection.execute(
                select(DecisionRow.run_id).where(
                    DecisionRow.run_id.in_(candidates), DecisionRow.id.not_in(doomed)
                ).distinct()
            ).scalars()
        ) if candidates else set()  # fmt: skip
    return PruneCounts(decisions=len(doomed), runs=len(candidates - remaining))


def _size(engine: Engine) -> int | None:
    if engine.dialect.name == "sqlite" and engine.url.database not in (None, "", ":memory:"):
        path = str(engine.url.database)
        return sum(os.path.getsize(p) for p in (path, f"{path}-wal") if os.path.exists(p))
    if engine.dialect.name == "postgresql":
        with engine.connect() as connection:
            return int(
                connection.execute(select(func.pg_database_size(func.current_database()))).scalar_one()
            )
    return None


def _reclaim(engine: Engine) -> None:
    """Give the space back: VACUUM (SQLite shrinks the file; PostgreSQL frees it for reuse)."""
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        if engine.dialect.name == "sqlite":
            connection.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
            connection.exec_driver_sql("VACUUM")
        elif engine.dialect.name == "postgresql":
            connection.exec_driver_sql("VACUUM ANALYZE decisions")
            connection.exec_driver_sql("VACUUM ANALYZE runs")


def _delete_in_batches(engine: Engine, ids: Sequence[int], checkpoint: Checkpoint) -> None:
    for start in range(0, len(ids), BATCH):
        batch = ids[start : start + BATCH]
        with write_transaction(engine) as connection:
            connection.execute(delete(DecisionRow).where(DecisionRow.id.in_(batch)))
        checkpoint(Step.PRUNE_BATCH)


def prune(
    engine: Engine,
    cutoff: datetime,
    *,
    keep_applied: bool = True,
    reclaim: bool = True,
    checkpoint: Checkpoint = no_checkpoint,
) -> PruneCounts:
    """Delete what the module docstring allows from before ``cutoff``; what went, and sizes."""
    before = _size(engine)
    with database_errors("could not prune the store"):
        with engine.connect() as connection:
            doomed = _doomed_decisions(connection, cutoff, keep_applied)
        _delete_in_batches(engine, doomed, checkpoint)
        with write_transaction(engine) as connection:
            runs = connection.execute(delete(RunRow).where(RunRow.id.in_(_empty_old_runs(cutoff)))).rowcount
            unused = delete(PolicyVersionRow).where(PolicyVersionRow.id.in_(_unused_versions()))
            versions = connection.execute(unused).rowcount
        checkpoint(Step.PRUNE_RUNS)
        if reclaim:
            _reclaim(engine)
    return PruneCounts(len(doomed), int(runs or 0), int(versions or 0), before, _size(engine))
