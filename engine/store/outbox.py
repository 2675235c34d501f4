"""The outbox of live runs: each change moves planned -> in_flight -> an outcome."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, select, update

from engine.errors import ApiError, StoreError
from engine.runs.ports import Outcome
from engine.runs.states import MOVABLE_STATES, OUTCOME_STATES, ChangeState
from engine.store.base import BATCH_SIZE, StoreBase, checked_value, fenced
from engine.store.locks import database_errors
from engine.store.schema import DecisionRow
from engine.store.storable import clean_locations, storable_or_none, storable_text


def _outcome_values(target: ChangeState, outcome: Outcome, now: datetime) -> dict[str, Any]:
    values: dict[str, Any] = {
        "change_state": target.value,
        "http_status": outcome.http_status,
        "api_error_code": storable_or_none(outcome.api_error_code),
        "api_error_locations": clean_locations(outcome.api_error_locations),
        "error_message": storable_or_none(outcome.error_message),
        "updated_at": now,
    }
    if outcome.attempts is not None:
        values["attempts"] = outcome.attempts
    if target in (ChangeState.APPLIED, ChangeState.RECOVERED):
        values["applied_at"] = now
    return values


def api_error_locations(error: ApiError) -> list[Any]:
    """Where an API error points (``detail[].loc`` and ``errors[].path``), without messages.

    The API's messages may quote what was sent or stored, personal data included, so the
    store keeps the locations only.
    """
    return error.locations()


class Outbox(StoreBase):
    """Where each change of a live run stands: attempts started, outcomes recorded."""

    def mark_in_flight(self, decision_id: int, *, fencing_token: int | None = None) -> None:
        """About to send this change: it becomes ``in_flight`` and its attempts grow by one.

        Allowed from ``planned``, ``in_flight`` (a retry after a crash), ``failed_retryable``,
        ``deferred`` and ``held``.
        """
        values = {
            "change_state": ChangeState.IN_FLIGHT.value,
            "attempts": DecisionRow.attempts + 1,
            "updated_at": self._clock(),
        }
        self._move(decision_id, ChangeState.IN_FLIGHT, values, fencing_token)

    def record_outcome(
        self,
        decision_id: int,
        state: ChangeState,
        *,
        attempts: int | None = None,
        http_status: int | None = None,
        api_error_code: str | None = None,
        api_error_locations: Sequence[Any] | None = None,
        error_message: str | None = None,
        fencing_token: int | None = None,
    ) -> None:
        """Record what became of a change; ``applied``/``recovered`` also set ``applied_at``.

        The HTTP status, API error code, error locations (``loc``/``path`` only; see
        ``api_error_locations``) and our own ``error_message`` describe this latest outcome
        and replace earlier ones; ``attempts`` replaces the count when given. A change in a
        final state (applied, recovered, failed_permanent, superseded) cannot move again;
        recording the same final state twice is a no-op.
        """
        target = ChangeState(checked_value(ChangeState, state))
        if target not in OUTCOME_STATES:
            raise StoreError(
                f"record_outcome takes an outcome, not {target.value!r} "
                "(use mark_in_flight to start an attempt)"
            )
        outcome = Outcome(
            decision_id, target, attempts, http_status, api_error_code, api_error_locations, error_message
        )
        values = _outcome_values(target, outcome, self._clock())
        self._move(decision_id, target, values, fencing_token)

    def mark_in_flight_many(self, decision_ids: Sequence[int], *, fencing_token: int | None = None) -> None:
        """``mark_in_flight`` for several changes in one transaction (a live run's batches).

        All or nothing: if any of them cannot start an attempt, nothing is marked.
        """
        if not decision_ids:
            return
        values = {
            "change_state": ChangeState.IN_FLIGHT.value,
            "attempts": DecisionRow.attempts + 1,
            "updated_at": self._clock(),
        }
        self._move_many(
            [(decision_id, values) for decision_id in decision_ids], ChangeState.IN_FLIGHT, fencing_token
        )

    def release_in_flight(self, decision_ids: Sequence[int], *, fencing_token: int | None = None) -> None:
        """Changes marked ``in_flight`` but never sent go back to ``planned`` (attempt undone)."""
        if not decision_ids:
            return
        statement = (
            update(DecisionRow)
            .where(
                DecisionRow.id.in_(list(decision_ids)),
                DecisionRow.change_state == ChangeState.IN_FLIGHT.value,
            )
            .values(
                change_state=ChangeState.PLANNED.value,
                attempts=DecisionRow.attempts - 1,
                updated_at=self._clock(),
            )
        )
        owners = self._decision_owners(list(decision_ids), fencing_token)
        with database_errors("could not release changes"), fenced(self._engine, *owners) as connection:
            connection.execute(statement)

    def record_outcomes(self, outcomes: Sequence[Outcome], *, fencing_token: int | None = None) -> None:
        """``record_outcome`` for several changes in one transaction (all or nothing)."""
        moves: list[tuple[int, dict[str, Any], ChangeState]] = []
        now = self._clock()
        for outcome in outcomes:
            target = ChangeState(checked_value(ChangeState, outcome.state))
            if target not in OUTCOME_STATES:
                raise StoreError(f"record_outcomes takes outcomes, not {target.value!r}")
            values = _outcome_values(target, outcome, now)
            moves.append((outcome.decision_id, values, target))
        for target in {move[2] for move in moves}:
            self._move_many([(i, v) for i, v, t in moves if t is target], target, fencing_token)

    def supersede(self, decision_ids: Iterable[int], reason: str, *, fencing_token: int | None = None) -> int:
        """Mark changes ``superseded`` (a newer decision or fresh data replaced them), with
        ``reason`` as their error message. Changes already final are left as they are.
        Returns how many were superseded."""
        ids = sorted(set(decision_ids))
        superseded = 0
        for start in range(0, len(ids), BATCH_SIZE):
            chunk = ids[start : start + BATCH_SIZE]
            owners = self._decision_owners(chunk, fencing_token)
            statement = (
                update(DecisionRow)
                .where(
                    DecisionRow.id.in_(chunk),
                    DecisionRow.change_state.in_([s.value for s in MOVABLE_STATES]),
                )
                .values(
                    change_state=ChangeState.SUPERSEDED.value,
                    error_message=storable_text(reason),
                    updated_at=self._clock(),
                )
            )
            with database_errors("could not supersede changes"), fenced(self._engine, *owners) as connection:
                superseded += connection.execute(statement).rowcount
        return superseded

    def _move(
        self,
        decision_id: int,
        target: ChangeState,
        values: Mapping[str, Any],
        fencing_token: int | None,
    ) -> None:
        owners = self._decision_owners([decision_id], fencing_token)
        if not owners:
            raise StoreError(f"no decision {decision_id}")
        statement = (
            update(DecisionRow)
            .where(
                DecisionRow.id == decision_id,
                DecisionRow.change_state.in_([s.value for s in MOVABLE_STATES]),
            )
            .values(values)
        )
        with database_errors("could not update the change"), fenced(self._engine, *owners) as connection:
            moved = connection.execute(statement).rowcount
            current = None if moved else self._change_state(connection, decision_id)
        if not moved and current != target.value:
            raise StoreError(f"decision {decision_id} is {current!r}: it cannot become {target.value!r}")

    def _move_many(
        self,
        moves: Sequence[tuple[int, Mapping[str, Any]]],
        target: ChangeState,
        fencing_token: int | None,
    ) -> None:
        """Several ``_move``s in one fenced transaction; any refused move refuses them all."""
        if not moves:
            return
        owners = self._decision_owners([decision_id for decision_id, _ in moves], fencing_token)
        movable = [s.value for s in MOVABLE_STATES]
        with database_errors("could not update the changes"), fenced(self._engine, *owners) as connection:
            for decision_id, values in moves:
                statement = (
                    update(DecisionRow)
                    .where(DecisionRow.id == decision_id, DecisionRow.change_state.in_(movable))
                    .values(values)
                )
                if connection.execute(statement).rowcount:
                    continue
                current = self._change_state(connection, decision_id)
                if current != target.value:  # raising rolls the whole transaction back
                    raise StoreError(
                        f"decision {decision_id} is {current!r}: it cannot become {target.value!r}"
                    )

    @staticmethod
    def _change_state(connection: Connection, decision_id: int) -> str | None:
        query = select(DecisionRow.change_state).where(DecisionRow.id == decision_id)
        return connection.execute(query).scalar_one_or_none()
