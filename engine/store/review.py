"""The review queue: changes waiting for a person's approval, approved or refused."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from engine.errors import StoreError
from engine.runs.records import ReviewRecord
from engine.runs.states import ChangeState, RunMode
from engine.store.base import StoreBase, fenced
from engine.store.locks import database_errors
from engine.store.records import to_review_record
from engine.store.schema import DecisionRow, PolicyVersionRow, RunRow
from engine.store.storable import storable_or_none, storable_text


class ReviewQueue(StoreBase):
    """Changes waiting for approval, and a person's approve or refuse."""

    def review_queue(
        self,
        program_id: str | None = None,
        *,
        states: Iterable[ChangeState] = (ChangeState.AWAITING_APPROVAL,),
        decision_ids: Sequence[int] | None = None,
    ) -> list[ReviewRecord]:
        """Changes in ``states`` (default: waiting for approval), oldest first."""
        query = (
            select(DecisionRow, RunRow.policy_version_id, PolicyVersionRow.content_hash)
            .join(RunRow, RunRow.id == DecisionRow.run_id)
            .outerjoin(PolicyVersionRow, PolicyVersionRow.id == RunRow.policy_version_id)
            .where(
                DecisionRow.change_state.in_(sorted(ChangeState(state).value for state in states)),
                RunRow.mode != RunMode.PLAN.value,  # a plan's changes are applied with ``apply``
            )
            .order_by(DecisionRow.id)
        )
        if program_id is not None:
            query = query.where(DecisionRow.program_id == program_id)
        if decision_ids is not None:
            query = query.where(DecisionRow.id.in_(list(decision_ids)))
        with database_errors("could not read the review queue"), Session(self._engine) as session:
            return [
                to_review_record(row, version, content_hash)
                for row, version, content_hash in session.execute(query)
            ]

    def refused_changes(self, program_id: str) -> list[ReviewRecord]:
        """Each enrollment's newest refused change in the program."""
        newest: dict[str, ReviewRecord] = {}
        for record in self.review_queue(program_id, states=(ChangeState.REFUSED,)):
            newest[record.enrollment_id] = record
        return list(newest.values())

    def approve(self, decision_ids: Sequence[int], reviewed_by: str, *, fencing_token: int | None) -> None:
        """Waiting changes become ``planned``, approved by ``reviewed_by`` (all or nothing)."""
        values = {"change_state": ChangeState.PLANNED.value, "reviewed_by": storable_text(reviewed_by)}
        self._review(decision_ids, values, "could not approve the changes", fencing_token)

    def carry_approvals(self, pairs: Sequence[tuple[int, int]], *, fencing_token: int | None) -> None:
        """Each ``(approved, replacement)``: the replacement, the same change planned again by
        a later run, takes the approval (who and when) of the change it replaces."""
        if not pairs:
            return
        approvals = select(DecisionRow.id, DecisionRow.reviewed_by, DecisionRow.reviewed_at).where(
            DecisionRow.id.in_(sorted({old for old, _new in pairs}))
        )
        owners = self._decision_owners([new for _old, new in pairs], fencing_token)
        now = self._clock()
        failure = "could not carry the approvals over"
        with database_errors(failure), fenced(self._engine, *owners) as connection:
            found = {row.id: row for row in connection.execute(approvals)}
            for old, new in pairs:
                who, when = found[old].reviewed_by, found[old].reviewed_at
                statement = update(DecisionRow).where(DecisionRow.id == new)
                connection.execute(statement.values(reviewed_by=who, reviewed_at=when, updated_at=now))

    def refuse(
        self, decision_ids: Sequence[int], reviewed_by: str, note: str | None, *, fencing_token: int | None
    ) -> None:
        """Waiting changes become ``refused`` by ``reviewed_by`` with ``note`` (all or nothing)."""
        values = {
            "change_state": ChangeState.REFUSED.value,
            "reviewed_by": storable_text(reviewed_by),
            "review_note": storable_or_none(note),
        }
        self._review(decision_ids, values, "could not refuse the changes", fencing_token)

    def _review(
        self, decision_ids: Sequence[int], values: dict[str, Any], failure: str, fencing_token: int | None
    ) -> None:
        ids = sorted(set(decision_ids))
        if not ids:
            return
        now = self._clock()
        statement = (
            update(DecisionRow)
            .where(DecisionRow.id.in_(ids), DecisionRow.change_state == ChangeState.AWAITING_APPROVAL.value)
            .values({**values, "reviewed_at": now, "updated_at": now})
        )
        owners = self._decision_owners(ids, fencing_token)
        with database_errors(failure), fenced(self._engine, *owners) as connection:
            moved = connection.execute(statement).rowcount
            if moved != len(ids):  # raising rolls the whole transaction back
                raise StoreError(f"only {moved} of {len(ids)} changes were waiting for approval")
