"""What every part of the store shares: the engine, the clock, reading decision records, and
the fencing of writes.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import islice

from sqlalchemy import Connection, Engine, Select, select
from sqlalchemy.orm import Session

from engine.clock import Clock, utc_now
from engine.errors import StoreError
from engine.policy.decision import Decision
from engine.runs.records import DecisionRecord
from engine.runs.states import ChangeState, RunMode, RunOutcome
from engine.store.locks import check_fencing_token, database_errors, write_transaction
from engine.store.records import to_decision_record
from engine.store.schema import DecisionRow, RunRow

BATCH_SIZE = 1000


def batches(items: Iterable[Decision], size: int) -> Iterator[list[Decision]]:
    iterator = iter(items)
    while batch := list(islice(iterator, size)):
        yield batch


def checked_value(enum: type[RunMode] | type[RunOutcome] | type[ChangeState], value: str) -> str:
    try:
        return enum(value).value
    except ValueError as exc:
        allowed = ", ".join(member.value for member in enum)
        raise StoreError(f"{value!r} is not a {enum.__name__} (one of: {allowed})") from exc


@dataclass(frozen=True, slots=True)
class Owner:
    """Which program and fencing token a write belongs to."""

    program_id: str
    fencing_token: int | None


@dataclass(frozen=True, slots=True)
class RunState:
    program_id: str
    fencing_token: int | None
    mode: RunMode
    outcome: RunOutcome
    policy_version_id: int | None = None

    def owner(self, fencing_token: int | None) -> Owner:
        """Whose lease a write for this run needs: the caller's token, else the run's own."""
        return Owner(self.program_id, fencing_token if fencing_token is not None else self.fencing_token)


class StoreBase:
    """The engine and clock every part of the store works with, the reads that fence
    its writes (whose lease a write needs), and decision records read with their run."""

    def __init__(self, engine: Engine, *, clock: Clock = utc_now, owns_engine: bool = False) -> None:
        self._engine = engine
        self._clock = clock
        self._owns_engine = owns_engine

    def _run_state(self, run_id: int) -> RunState:
        query = select(
            RunRow.program_id, RunRow.fencing_token, RunRow.mode, RunRow.outcome, RunRow.policy_version_id
        ).where(RunRow.id == run_id)
        with database_errors("could not read the run"), self._engine.connect() as connection:
            row = connection.execute(query).one_or_none()
        if row is None:
            raise StoreError(f"no run {run_id}")
        return RunState(
            row.program_id,
            row.fencing_token,
            RunMode(row.mode),
            RunOutcome(row.outcome),
            row.policy_version_id,
        )

    def _decision_owners(self, decision_ids: Sequence[int], fencing_token: int | None) -> list[Owner]:
        """The distinct (program, token) pairs the writes on these decisions are fenced by."""
        query = (
            select(DecisionRow.program_id, RunRow.fencing_token)
            .join(RunRow, RunRow.id == DecisionRow.run_id)
            .where(DecisionRow.id.in_(decision_ids))
            .distinct()
        )
        with database_errors("could not read decisions"), self._engine.connect() as connection:
            rows = connection.execute(query).all()
        owners = {
            Owner(row.program_id, fencing_token if fencing_token is not None else row.fencing_token)
            for row in rows
        }
        return sorted(owners, key=lambda owner: owner.program_id)

    def _decision_records(self, query: Select[DecisionRow, RunRow]) -> list[DecisionRecord]:
        with database_errors("could not read decisions"), Session(self._engine) as session:
            return [to_decision_record(row, run) for row, run in session.execute(query)]


@contextmanager
def fenced(engine: Engine, *owners: Owner) -> Iterator[Connection]:
    """A write transaction that first checks each owner's fencing token (when it has one)."""
    with write_transaction(engine) as connection:
        for owner in owners:
            if owner.fencing_token is not None:
                check_fencing_token(connection, owner.program_id, owner.fencing_token)
        yield connection
