"""Revision 0002 (plans and the review queue) upgrades a store made by the previous release."""

from __future__ import annotations

import pytest
from sqlalchemy import Engine, inspect, text
from sqlalchemy.exc import IntegrityError

from engine.store import current_revision, head_revision, upgrade
from engine.store.migrations import downgrade
from engine.store.schema import ChangeState, RunMode

T = "2026-11-25 08:00:00"
DECISION_COLUMNS = (
    "run_id, program_id, enrollment_id, group_ids, current_group_ids, groups_added, groups_removed, "
    "action, warnings, trace, change_state, attempts, updated_at"
)


def _fill_release_0001(engine: Engine) -> None:
    """A run and two decisions, written as the 0001 schema has them (raw SQL)."""
    with engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO runs (id, program_id, mode, started_at, evaluation_now, outcome, counts) "
                "VALUES (1, 'prog', 'live', :t, :t, 'completed', '{}')"
            ),
            {"t": T},
        )
        for number, state in ((1, "applied"), (2, "held")):
            connection.execute(
                text(
                    f"INSERT INTO decisions (id, {DECISION_COLUMNS}) VALUES "
                    f"({number}, 1, 'prog', 'e-{number}', '[]', '[]', '[]', '[]', 'update', '[]', '[]', "
                    f"'{state}', 1, :t)"
                ),
                {"t": T},
            )


def test_upgrade_keeps_the_rows_and_allows_the_new_states(store_engine: Engine) -> None:
    upgrade(store_engine, "0001")
    _fill_release_0001(store_engine)

    upgrade(store_engine)

    assert current_revision(store_engine) == head_revision()
    with store_engine.begin() as connection:
        rows = connection.execute(text("SELECT id, change_state, reviewed_by FROM decisions ORDER BY id"))
        assert [tuple(row) for row in rows] == [(1, "applied", None), (2, "held", None)]
        connection.execute(text("UPDATE decisions SET change_state = 'awaiting_approval' WHERE id = 2"))
        connection.execute(text("UPDATE runs SET mode = 'apply', applied_by = 'alice' WHERE id = 1"))
    assert "plans" in inspect(store_engine).get_table_names()


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE decisions SET change_state = 'approved_maybe' WHERE id = 1",
        "UPDATE runs SET mode = 'sometimes' WHERE id = 1",
        "UPDATE decisions SET run_id = 999 WHERE id = 1",  # foreign keys are on again
    ],
)
def test_the_constraints_still_hold_after_the_upgrade(store_engine: Engine, statement: str) -> None:
    upgrade(store_engine, "0001")
    _fill_release_0001(store_engine)
    upgrade(store_engine)
    with pytest.raises(IntegrityError), store_engine.begin() as connection:
        connection.execute(text(statement))


def test_downgrade_returns_to_the_previous_schema(store_engine: Engine) -> None:
    upgrade(store_engine, "0001")
    _fill_release_0001(store_engine)
    upgrade(store_engine)
    downgrade(store_engine, "0001")
    assert "plans" not in inspect(store_engine).get_table_names()
    with store_engine.connect() as connection:
        assert connection.execute(text("SELECT count(*) FROM decisions")).scalar_one() == 2


def test_every_state_and_mode_the_code_knows_is_allowed_by_the_migrated_database(
    store_engine: Engine,
) -> None:
    upgrade(store_engine, "0001")
    _fill_release_0001(store_engine)
    upgrade(store_engine)
    with store_engine.begin() as connection:
        for state in ChangeState:
            connection.execute(
                text("UPDATE decisions SET change_state = :s WHERE id = 1"), {"s": state.value}
            )
        for mode in RunMode:
            connection.execute(text("UPDATE runs SET mode = :m WHERE id = 1"), {"m": mode.value})
