"""What this tool itself decided: the status each enrollment's last applied change set.

A backtest leaves out enrollments whose current status came from this tool (they are the
policy's own decisions, not a person's). Read-only, one query, no schema of its own.
"""

from __future__ import annotations

from sqlalchemy import Engine, or_, select

from engine.runs.states import APPLIED_STATES
from engine.store.locks import database_errors
from engine.store.schema import DecisionRow


def applied_statuses(engine: Engine, program_id: str) -> dict[str, str]:
    """``{enrollment_id: status}`` of the newest applied (or recovered) status change of each
    enrollment of ``program_id``; group-only changes do not count."""
    query = (
        select(DecisionRow.enrollment_id, DecisionRow.status)
        .where(
            DecisionRow.program_id == program_id,
            DecisionRow.change_state.in_(sorted(APPLIED_STATES)),
            DecisionRow.status.is_not(None),
            or_(DecisionRow.current_status.is_(None), DecisionRow.status != DecisionRow.current_status),
        )
        .order_by(DecisionRow.id)
    )
    found: dict[str, str] = {}
    with database_errors("could not read applied changes"), engine.connect() as connection:
        for enrollment_id, status in connection.execute(query):
            if enrollment_id is not None and status is not None:
                found[enrollment_id] = status  # in id order: the newest wins
    return found
