"""Bulk inserts of decisions: the same rows as the ORM would write, and failures reported."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, text

from engine.errors import StoreError
from engine.policy.decision import Action, Decision, RuleTrace
from engine.policy.statuses import EnrollmentStatus
from engine.runs.patch import planned_body
from engine.store import BATCH_SIZE, ChangeState, Store, change_key
from engine.store.rows import OUTCOME_COLUMNS, ROW_COLUMNS
from engine.store.schema import DecisionRow

from .conftest import T0, FakeClock, make_decision

PROGRAM = "prog-bulk"

# Statuses and group ids on both sides of what the API accepts (and of the store's plain
# fast path: ASCII word characters), reasons of any text.
statuses = st.none() | st.sampled_from(
    [*(s.value for s in EnrollmentStatus), *EnrollmentStatus, "", "active", "ACTIVE ", "NOPE", "ACTIVE\n"]
)
group_ids = st.sampled_from(
    ["zone-a", "zone-b", "LZ_HOUSTON", "a_1", "-", "zoné", "日本", "", "zone a", "x\n"]
)
updates = st.builds(
    make_decision,
    enrollment_id=st.sampled_from(["enr-1", "enr-2", "", None]),
    current_status=statuses,
    status=statuses,
    group_ids=st.lists(group_ids, max_size=3),
    current_group_ids=st.lists(group_ids, max_size=2),
    reason=st.none() | st.text(max_size=8),
)


def expected_outbox(decision: Decision) -> tuple[dict[str, Any] | None, ChangeState, str | None]:
    """What a live run stores for an update: the planned body (``engine.runs.patch``, itself
    checked against the API's wire model in tests/unit/test_patch.py) or why none."""
    body, problem = planned_body(decision)
    if problem is not None:
        return None, ChangeState.FAILED_PERMANENT, problem
    return body, ChangeState.NONE if body is None else ChangeState.PLANNED, None


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(batch=st.lists(updates, min_size=1, max_size=6))
def test_planned_bodies_are_what_the_builder_plans_and_refusals_stay_refused(
    store: Store, batch: list[Decision]
) -> None:
    run_id = store.start_run(PROGRAM, "live", None, T0)
    store.add_decisions(run_id, PROGRAM, batch)

    for decision, record in zip(batch, store.run_decisions(run_id), strict=True):
        body, state, message = expected_outbox(decision)
        assert (record.planned_patch, record.change_state, record.error_message) == (body, state, message)
        if body is not None:
            assert record.change_key == change_key(PROGRAM, decision.enrollment_id or "", body)
        else:
            assert record.change_key is None


def test_rows_name_every_column_but_the_id() -> None:
    columns = {column.name for column in DecisionRow.__table__.columns}

    assert len(set(ROW_COLUMNS)) == len(ROW_COLUMNS)
    assert {"id", *ROW_COLUMNS, *OUTCOME_COLUMNS} == columns
    assert not set(ROW_COLUMNS) & set(OUTCOME_COLUMNS)
    for name in OUTCOME_COLUMNS:  # left out of the insert: they must come out NULL
        column = DecisionRow.__table__.c[name]
        assert column.nullable
        assert column.default is None
        assert column.server_default is None


def test_json_is_stored_as_json_dumps_writes_it(store: Store, store_engine: Engine) -> None:
    """The text SQLAlchemy's JSON type wrote (json.dumps): verbatim in SQLite and in the
    trace (plain JSON) on PostgreSQL; equal as JSON in the others (jsonb)."""
    decision = make_decision(
        "enr-1",
        reason="Größe \U0001f600",
        group_ids=["zone-a", "zoné"],
        current_group_ids=['z"q\\'],
        warnings=["w\t1", "ünïcode"],
        trace=[RuleTrace("r-1", "rule", True, {"x": 1.5, "s": "é", "n": None, "l": [1, "a"]})],
    )
    run_id = store.start_run(PROGRAM, "dry_run", None, T0)
    store.add_decisions(run_id, PROGRAM, [decision])
    (record,) = store.run_decisions(run_id)
    values = {
        "group_ids": decision.group_ids,
        "current_group_ids": decision.current_group_ids,
        "groups_added": decision.groups_added,
        "groups_removed": decision.groups_removed,
        "warnings": decision.warnings,
        "trace": [{"rule_id": "r-1", "kind": "rule", "matched": True, "reads": decision.trace[0].reads}],
        "planned_patch": record.planned_patch,
    }

    names = ", ".join(f"CAST({name} AS TEXT)" for name in values)
    with store_engine.connect() as connection:
        stored = connection.execute(text(f"SELECT {names} FROM decisions WHERE id = {record.id}")).one()

    for (name, value), raw in zip(values.items(), stored, strict=True):
        if store_engine.dialect.name == "sqlite" or name == "trace":
            assert raw == json.dumps(value), name
        else:
            assert json.loads(raw) == value, name


def test_a_failed_batch_leaves_the_earlier_ones_and_the_store_usable(
    store: Store, store_engine: Engine
) -> None:
    with store_engine.begin() as connection:  # make the server refuse one row
        if store_engine.dialect.name == "sqlite":
            connection.execute(
                text(
                    "CREATE TRIGGER refuse_boom BEFORE INSERT ON decisions WHEN NEW.enrollment_id = 'boom'"
                    " BEGIN SELECT RAISE(ABORT, 'boom refused'); END"
                )
            )
        else:
            connection.execute(
                text(
                    "ALTER TABLE decisions ADD CONSTRAINT refuse_boom"
                    " CHECK (enrollment_id <> 'boom') NOT VALID"
                )
            )
    decisions = [make_decision(f"enr-{i}") for i in range(BATCH_SIZE)]
    decisions += [make_decision("enr-x"), make_decision("boom")]
    run_id = store.start_run(PROGRAM, "live", None, T0)

    with pytest.raises(StoreError, match=r"could not store decisions.*boom"):
        store.add_decisions(run_id, PROGRAM, decisions)

    assert len(store.run_decisions(run_id)) == BATCH_SIZE
    store.add_decisions(run_id, PROGRAM, [make_decision("enr-after")])
    assert store.run_decisions(run_id, offset=BATCH_SIZE)[0].decision.enrollment_id == "enr-after"


def test_a_value_the_driver_cannot_send_is_a_store_error(store: Store) -> None:
    odd = make_decision("enr-1", action=Action.NONE, rule_id=object())
    run_id = store.start_run(PROGRAM, "live", None, T0)

    with pytest.raises(StoreError, match="could not store decisions"):
        store.add_decisions(run_id, PROGRAM, [odd])

    store.add_decisions(run_id, PROGRAM, [make_decision("enr-2")])
    assert [r.decision.enrollment_id for r in store.run_decisions(run_id)] == ["enr-2"]


def test_a_naive_clock_is_refused(store: Store, clock: FakeClock) -> None:
    run_id = store.start_run(PROGRAM, "live", None, T0)
    clock.now = T0.replace(tzinfo=None)

    with pytest.raises(StoreError, match="naive datetime"):
        store.add_decisions(run_id, PROGRAM, [make_decision("enr-1")])


def test_new_decisions_have_no_outcome_yet(store: Store, clock: FakeClock) -> None:
    run_id = store.start_run(PROGRAM, "live", None, T0)
    store.add_decisions(run_id, PROGRAM, [make_decision("enr-1"), make_decision(None)])

    for record in store.run_decisions(run_id):
        assert record.attempts == 0
        assert (record.http_status, record.api_error_code, record.api_error_locations) == (None, None, None)
        assert record.applied_at is None
        assert record.updated_at == clock.now
