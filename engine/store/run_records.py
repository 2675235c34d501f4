"""Runs: started, finished or found interrupted, listed newest first."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.orm import Session

from engine.errors import StoreError
from engine.runs.records import RunRecord
from engine.runs.states import RunMode, RunOutcome
from engine.store.base import Owner, StoreBase, checked_value, fenced
from engine.store.locks import check_fencing_token, database_errors, write_transaction
from engine.store.records import to_run_record
from engine.store.schema import RunRow
from engine.store.storable import storable_json, storable_or_none, storable_text


class RunRecords(StoreBase):
    """One row per run: its mode, policy version, evaluation time, outcome and counts."""

    def start_run(
        self,
        program_id: str,
        mode: RunMode,
        policy_version_id: int | None,
        now: datetime,
        *,
        holder: str | None = None,
        fencing_token: int | None = None,
        plan_id: int | None = None,
        applied_by: str | None = None,
    ) -> int:
        """Record a new run (outcome ``running``); returns its id.

        With a ``fencing_token`` (from ``ProgramLock``) the run is refused with
        ``LockHeldError`` unless that token is the program's current one, and every later
        write for the run is checked against it.
        """
        values: dict[str, Any] = {
            "program_id": program_id,
            "mode": checked_value(RunMode, mode),
            "policy_version_id": policy_version_id,
            "started_at": self._clock(),
            "evaluation_now": now,
            "outcome": RunOutcome.RUNNING.value,
            "message": None,
            "counts": {},
            "holder": storable_or_none(holder),
            "fencing_token": fencing_token,
            "plan_id": plan_id,
            "applied_by": storable_or_none(applied_by),
        }
        with database_errors("could not start the run"), write_transaction(self._engine) as connection:
            if fencing_token is not None:
                check_fencing_token(connection, program_id, fencing_token)
            statement = insert(RunRow).values(values).returning(RunRow.id)
            return connection.execute(statement).scalar_one()

    def finish_run(
        self,
        run_id: int,
        outcome: RunOutcome,
        counts: Mapping[str, Any],
        message: str | None = None,
        *,
        fencing_token: int | None = None,
    ) -> None:
        """Record how a running run ended; ``StoreError`` if it is unknown or already ended."""
        checked = checked_value(RunOutcome, outcome)
        if checked == RunOutcome.RUNNING:
            raise StoreError("finish_run needs a final outcome, not 'running'")
        owner = self._run_state(run_id).owner(fencing_token)
        statement = (
            update(RunRow)
            .where(RunRow.id == run_id, RunRow.outcome == RunOutcome.RUNNING.value)
            .values(
                outcome=checked,
                counts=storable_json(counts),
                message=storable_or_none(message),
                finished_at=self._clock(),
            )
        )
        with database_errors("could not finish the run"), fenced(self._engine, owner) as connection:
            finished = connection.execute(statement).rowcount
        if finished != 1:
            raise StoreError(f"run {run_id} has already ended")

    def interrupt_running_runs(
        self,
        program_id: str,
        *,
        except_run_id: int | None = None,
        message: str = "the run stopped before it finished (found by a later run)",
        fencing_token: int | None = None,
    ) -> list[int]:
        """Mark the program's runs still ``running`` as ``interrupted``; returns their ids.

        Call it while holding the program lock: then no other run of the program is alive.
        """
        conditions = [RunRow.program_id == program_id, RunRow.outcome == RunOutcome.RUNNING.value]
        if except_run_id is not None:
            conditions.append(RunRow.id != except_run_id)
        statement = (
            update(RunRow)
            .where(*conditions)
            .values(
                outcome=RunOutcome.INTERRUPTED.value,
                message=storable_text(message),
                finished_at=self._clock(),
            )
            .returning(RunRow.id)
        )
        owner = Owner(program_id, fencing_token)
        with database_errors("could not mark interrupted runs"), fenced(self._engine, owner) as connection:
            return sorted(connection.execute(statement).scalars())

    def run(self, run_id: int) -> RunRecord | None:
        """One run, or ``None``."""
        with database_errors("could not read the run"), Session(self._engine) as session:
            row = session.get(RunRow, run_id)
            return None if row is None else to_run_record(row)

    def list_runs(self, program_id: str | None = None, limit: int = 50) -> list[RunRecord]:
        """The newest runs first, of one program or of all."""
        query = select(RunRow).order_by(RunRow.started_at.desc(), RunRow.id.desc()).limit(limit)
        if program_id is not None:
            query = query.where(RunRow.program_id == program_id)
        with database_errors("could not list runs"), Session(self._engine) as session:
            return [to_run_record(row) for row in session.scalars(query)]
