"""Stored decisions: a run's decisions written in bulk, its changes, an enrollment's history."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from sqlalchemy import Connection, Row, func, select

from engine.errors import StoreError
from engine.policy.decision import Decision
from engine.runs.records import DecisionRecord, PlannedChange
from engine.runs.states import OPEN_STATES, ChangeState, RunMode, RunOutcome
from engine.store.base import BATCH_SIZE, StoreBase, batches, fenced
from engine.store.locks import database_errors
from engine.store.records import PLANNED_COLUMNS, to_planned_change
from engine.store.rows import decision_rows, insert_rows, stored_form
from engine.store.schema import DecisionRow, RunRow


class Decisions(StoreBase):
    """The decisions of runs: stored in batches, read back as records and changes."""

    def add_decisions(
        self,
        run_id: int,
        program_id: str,
        decisions: Iterable[Decision],
        change_keys: Callable[[Decision], str | None] | None = None,
        *,
        fencing_token: int | None = None,
    ) -> None:
        """Store a run's decisions in batches of ``BATCH_SIZE`` rows, one transaction each.

        ``decisions`` may be a generator: it is consumed between transactions, never inside
        one. In a live run, ``update`` decisions become ``planned`` changes with their PATCH
        body and a change key (``change_keys(decision)`` if given, else ``change_key(...)``);
        an ``update`` that cannot be sent (no enrollment id, a status or group id the API
        would refuse) is stored ``failed_permanent`` with the reason; the rest are ``none``.
        A dry run stores the body and key of what it would send, in state ``none``.
        If a batch fails, the batches before it stay stored.
        """
        run = self._run_state(run_id)
        if run.outcome != RunOutcome.RUNNING:
            raise StoreError(f"run {run_id} has already ended ({run.outcome})")
        if run.program_id != program_id:
            raise StoreError(f"run {run_id} belongs to program {run.program_id!r}, not {program_id!r}")
        owner = run.owner(fencing_token)
        for batch in batches(decisions, BATCH_SIZE):
            try:
                updated_at = stored_form(self._engine.dialect, "updated_at", self._clock())
            except (AttributeError, TypeError, ValueError) as exc:  # e.g. a naive datetime
                raise StoreError(f"could not store decisions: {exc}") from exc
            rows = decision_rows(
                batch,
                run_id=run_id,
                program_id=program_id,
                live=run.mode in (RunMode.LIVE, RunMode.PLAN),  # a plan's changes wait to be applied
                updated_at=updated_at,
                change_keys=change_keys,
                policy_version_id=run.policy_version_id,
            )
            with database_errors("could not store decisions"), fenced(self._engine, owner) as connection:
                insert_rows(connection, rows)

    def planned_changes(self, run_id: int) -> list[PlannedChange]:
        """The run's changes still ``planned``, in decision order."""
        query = (
            select(*PLANNED_COLUMNS)
            .where(DecisionRow.run_id == run_id, DecisionRow.change_state == ChangeState.PLANNED.value)
            .order_by(DecisionRow.id)
        )
        with database_errors("could not read planned changes"), self._engine.connect() as connection:
            return [to_planned_change(row) for row in connection.execute(query)]

    def open_changes(self, program_id: str, *, before_run_id: int | None = None) -> list[PlannedChange]:
        """Changes earlier live runs left ``planned``, ``in_flight``, ``failed_retryable`` or
        ``deferred``: for each enrollment, its newest live decision if that one is open.

        An older open change of an enrollment that a later live run decided again is left
        out: the later decision replaced it. ``before_run_id`` leaves out that run and
        later ones (pass the current run's id). Dry runs never leave open changes.
        """
        # Plain indexed queries, filtered further here: the planner's choice for one query
        # with a correlated subquery, right after a bulk insert (no statistics yet), took
        # minutes on PostgreSQL.
        candidates = (
            select(*PLANNED_COLUMNS)
            .where(
                DecisionRow.program_id == program_id,
                DecisionRow.change_state.in_(sorted(OPEN_STATES)),
                DecisionRow.enrollment_id.is_not(None),
                # An approved change is finished by ``review approve``, never re-planned.
                DecisionRow.reviewed_by.is_(None),
            )
            .order_by(DecisionRow.id)
        )
        live_runs = select(RunRow.id).where(
            RunRow.program_id == program_id, RunRow.mode == RunMode.LIVE.value
        )
        if before_run_id is not None:
            live_runs = live_runs.where(RunRow.id < before_run_id)
        with database_errors("could not read open changes"), self._engine.connect() as connection:
            live = set(connection.execute(live_runs).scalars())
            newest_open = {
                row.enrollment_id: row for row in connection.execute(candidates) if row.run_id in live
            }
            replaced = self._decided_again(connection, newest_open, live)
        return [
            to_planned_change(row)
            for key, row in sorted(newest_open.items(), key=lambda item: item[1].id)
            if key not in replaced
        ]

    @staticmethod
    def _decided_again(
        connection: Connection, newest_open: Mapping[str, Row[Any]], live: set[int]
    ) -> set[str]:
        """The enrollments among ``newest_open`` that a later live run decided again."""
        replaced: set[str] = set()
        if not newest_open:
            return replaced
        ordered = sorted(newest_open)
        oldest = min(row.id for row in newest_open.values())
        for start in range(0, len(ordered), BATCH_SIZE):
            query = select(DecisionRow.enrollment_id, DecisionRow.id, DecisionRow.run_id).where(
                DecisionRow.enrollment_id.in_(ordered[start : start + BATCH_SIZE]), DecisionRow.id > oldest
            )
            for row in connection.execute(query):
                key = row.enrollment_id or ""
                if row.run_id in live and row.id > newest_open[key].id:
                    replaced.add(key)
        return replaced

    def decision_by_id(self, decision_id: int) -> DecisionRecord | None:
        """One stored decision with its run, or ``None``."""
        records = self._decision_records(
            select(DecisionRow, RunRow)
            .join(RunRow, RunRow.id == DecisionRow.run_id)
            .where(DecisionRow.id == decision_id)
        )
        return records[0] if records else None

    def run_decisions(
        self, run_id: int, *, offset: int = 0, limit: int | None = None
    ) -> list[DecisionRecord]:
        """A run's decisions in the order they were stored (a page of them with offset/limit)."""
        query = (
            select(DecisionRow, RunRow)
            .join(RunRow, RunRow.id == DecisionRow.run_id)
            .where(DecisionRow.run_id == run_id)
            .order_by(DecisionRow.id)
            .offset(offset)
            .limit(limit)
        )
        return self._decision_records(query)

    def history(self, enrollment_id: str) -> list[DecisionRecord]:
        """Every decision (and where its change went) for one enrollment, oldest first."""
        return self._decision_records(
            select(DecisionRow, RunRow)
            .join(RunRow, RunRow.id == DecisionRow.run_id)
            .where(DecisionRow.enrollment_id == enrollment_id)
            .order_by(DecisionRow.id)
        )

    def latest_digests(self, program_id: str) -> dict[str, int]:
        """Each enrollment's latest stored decision digest (``engine.runs.digest``) in a
        program: what a run compares its decisions with to store only what changed."""
        latest = (
            select(func.max(DecisionRow.id).label("id"))
            .where(DecisionRow.program_id == program_id, DecisionRow.enrollment_id.is_not(None))
            .group_by(DecisionRow.enrollment_id)
            .subquery()
        )
        query = select(DecisionRow.enrollment_id, DecisionRow.decision_digest).join(
            latest, DecisionRow.id == latest.c.id
        )
        with database_errors("could not read the latest decisions"), self._engine.connect() as connection:
            return {
                row.enrollment_id: row.decision_digest
                for row in connection.execute(query)
                if row.decision_digest is not None
            }

    def decision_as_of(self, enrollment_id: str, run_id: int) -> DecisionRecord | None:
        """What run ``run_id`` decided for an enrollment: the enrollment's latest decision in
        that run's program stored by that run or an earlier one (a run stores only what
        changed, so an unchanged enrollment is answered by the row that first decided it)."""
        program = select(RunRow.program_id).where(RunRow.id == run_id).scalar_subquery()
        records = self._decision_records(
            select(DecisionRow, RunRow)
            .join(RunRow, RunRow.id == DecisionRow.run_id)
            .where(
                DecisionRow.enrollment_id == enrollment_id,
                DecisionRow.program_id == program,
                DecisionRow.run_id <= run_id,
            )
            .order_by(DecisionRow.id.desc())
            .limit(1)
        )
        return records[0] if records else None

    def latest_decision(self, enrollment_id: str) -> DecisionRecord | None:
        """The newest decision for one enrollment, of any run, or ``None``."""
        records = self._decision_records(
            select(DecisionRow, RunRow)
            .join(RunRow, RunRow.id == DecisionRow.run_id)
            .where(DecisionRow.enrollment_id == enrollment_id)
            .order_by(DecisionRow.id.desc())
            .limit(1)
        )
        return records[0] if records else None
