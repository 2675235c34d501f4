"""Saved plans: a plan run's changes kept to be applied later, exactly once."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import cast

from sqlalchemy import insert, select, update
from sqlalchemy.orm import Session

from engine.errors import StoreError
from engine.runs.records import DecisionRecord, PlannedChange, PlanRecord, RunCounts
from engine.runs.states import OPEN_STATES, ChangeState, PlanState, RunOutcome
from engine.store.base import Owner, StoreBase, fenced
from engine.store.locks import database_errors, write_transaction
from engine.store.records import PLANNED_COLUMNS, to_planned_change
from engine.store.schema import DecisionRow, PlanRow, RunRow
from engine.store.storable import storable_text


class SavedPlans(StoreBase):
    """Plans saved by ``plan`` runs, claimed and finished by ``apply`` runs."""

    def create_plan(self, program_id: str, run_id: int, api_url: str) -> int:
        """Save the changes of ``plan`` run ``run_id`` as a plan; returns the plan id."""
        values = {
            "program_id": program_id,
            "run_id": run_id,
            "api_url": storable_text(api_url),
            "created_at": self._clock(),
            "state": PlanState.SAVED.value,
        }
        statement = insert(PlanRow).values(values).returning(PlanRow.id)
        with database_errors("could not save the plan"), write_transaction(self._engine) as connection:
            plan_id: int = connection.execute(statement).scalar_one()
            connection.execute(update(RunRow).where(RunRow.id == run_id).values(plan_id=plan_id))
            return plan_id

    def plan(self, plan_id: int) -> PlanRecord | None:
        """One saved plan with its plan run's policy, time and counts, or ``None``."""
        query = select(PlanRow, RunRow).join(RunRow, RunRow.id == PlanRow.run_id).where(PlanRow.id == plan_id)
        with database_errors("could not read the plan"), Session(self._engine) as session:
            found = session.execute(query).one_or_none()
            if found is None:
                return None
            plan, run = found
            return PlanRecord(
                id=plan.id,
                program_id=plan.program_id,
                run_id=plan.run_id,
                api_url=plan.api_url,
                created_at=plan.created_at,
                state=PlanState(plan.state),
                apply_run_id=plan.apply_run_id,
                applied_by=plan.applied_by,
                applied_at=plan.applied_at,
                policy_version_id=run.policy_version_id,
                evaluation_now=run.evaluation_now,
                run_outcome=RunOutcome(run.outcome),
                counts=cast(RunCounts, run.counts),
            )

    def claim_plan(
        self, plan_id: int, apply_run_id: int, applied_by: str, *, fencing_token: int | None
    ) -> None:
        """An apply run takes a plan (``saved``, or ``applying`` after a killed apply).

        In the same transaction the plan's unsettled changes are marked approved by
        ``applied_by``: applying a plan is approving what it holds. Refused with
        ``StoreError`` when the plan is already ``applied``.
        """
        plan = self.plan(plan_id)
        if plan is None:
            raise StoreError(f"no plan {plan_id}")
        now = self._clock()
        claim = (
            update(PlanRow)
            .where(PlanRow.id == plan_id, PlanRow.state != PlanState.APPLIED.value)
            .values(
                state=PlanState.APPLYING.value,
                apply_run_id=apply_run_id,
                applied_by=storable_text(applied_by),
            )
        )
        approve = (
            update(DecisionRow)
            .where(
                DecisionRow.run_id == plan.run_id,
                DecisionRow.change_state.in_(sorted(OPEN_STATES)),
                DecisionRow.reviewed_by.is_(None),
            )
            .values(reviewed_by=storable_text(applied_by), reviewed_at=now)
        )
        owner = Owner(plan.program_id, fencing_token)
        with database_errors("could not claim the plan"), fenced(self._engine, owner) as connection:
            if connection.execute(claim).rowcount != 1:
                raise StoreError(f"plan {plan_id} has already been applied")
            connection.execute(approve)

    def finish_plan(self, plan_id: int, *, fencing_token: int | None) -> None:
        """Every change of the plan is settled: the plan is ``applied`` and never applies again."""
        plan = self.plan(plan_id)
        if plan is None:
            raise StoreError(f"no plan {plan_id}")
        statement = (
            update(PlanRow)
            .where(PlanRow.id == plan_id)
            .values(state=PlanState.APPLIED.value, applied_at=self._clock())
        )
        owner = Owner(plan.program_id, fencing_token)
        with database_errors("could not finish the plan"), fenced(self._engine, owner) as connection:
            connection.execute(statement)

    def run_changes(self, run_id: int, states: Iterable[ChangeState] | None = None) -> list[DecisionRecord]:
        """A run's decisions that carry a PATCH body (in ``states`` when given), in order."""
        query = (
            select(DecisionRow, RunRow)
            .join(RunRow, RunRow.id == DecisionRow.run_id)
            .where(DecisionRow.run_id == run_id, DecisionRow.planned_patch.is_not(None))
            .order_by(DecisionRow.id)
        )
        if states is not None:
            query = query.where(
                DecisionRow.change_state.in_(sorted(ChangeState(state).value for state in states))
            )
        return self._decision_records(query)

    def changes_by_id(self, decision_ids: Sequence[int]) -> list[PlannedChange]:
        """The outbox view (``PlannedChange``) of these decisions, in id order."""
        query = (
            select(*PLANNED_COLUMNS).where(DecisionRow.id.in_(list(decision_ids))).order_by(DecisionRow.id)
        )
        with database_errors("could not read changes"), self._engine.connect() as connection:
            return [to_planned_change(row) for row in connection.execute(query)]
