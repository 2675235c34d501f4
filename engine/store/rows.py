"""Decision rows: the change key, the planned PATCH body (``engine.runs.patch``), and rows
encoded and inserted in bulk (``executemany`` on SQLite, ``COPY`` on PostgreSQL).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Mapping
from json.encoder import encode_basestring_ascii
from typing import Any

from sqlalchemy import Connection, Dialect
from sqlalchemy.exc import DBAPIError

from engine.errors import StoreError
from engine.policy.decision import Action, Decision
from engine.runs.digest import decision_digest
from engine.runs.patch import comparable_body, planned_body
from engine.runs.states import ChangeState
from engine.store.schema import DecisionRow
from engine.store.storable import storable_parts

_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def change_key(program_id: str, enrollment_id: str, body: Mapping[str, Any]) -> str:
    """A deterministic key for "this enrollment should end up in this state".

    The sha256 of canonical JSON of the program, the enrollment and the PATCH body (with
    group ids sorted: the API keeps a set). Equal keys mean the same change.
    """
    canonical = _CANONICAL.encode(
        {"program_id": program_id, "enrollment_id": enrollment_id, "desired": comparable_body(body)}
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


# -- Decision rows, built and inserted in bulk ----------------------------------------
# A row is a tuple in ``ROW_COLUMNS`` order, with its JSON columns already encoded by
# ``json.dumps`` (what SQLAlchemy's JSON type would send) and ``updated_at`` already in the
# form the dialect stores: SQLAlchemy's per-value type processing is skipped on purpose.
# SQLite gets one ``executemany``; PostgreSQL (psycopg) gets ``COPY ... FROM STDIN``, where
# the server reads the JSON text as ``jsonb``/``json`` exactly as it would for an insert.
# The outcome columns (``OUTCOME_COLUMNS``) are left out: a new decision has no outcome,
# and those columns have no default, so they are NULL.

ROW_COLUMNS = (
    "run_id",
    "program_id",
    "enrollment_id",
    "current_status",
    "status",
    "reason",
    "rule_id",
    "group_ids",
    "current_group_ids",
    "groups_added",
    "groups_removed",
    "action",
    "warnings",
    "trace",
    "error",
    "enrollment_updated_at",
    "facts_fingerprint",
    "decision_digest",
    "planned_patch",
    "change_key",
    "change_state",
    "attempts",
    "error_message",
    "updated_at",
)
OUTCOME_COLUMNS = (
    "http_status", "api_error_code", "api_error_locations", "applied_at",
    "reviewed_by", "reviewed_at", "review_note",
)  # fmt: skip
_DECISIONS = DecisionRow.__table__
# ``json.dumps`` with its defaults, as SQLAlchemy's JSON type (and psycopg's) encode.
_JSON = json.JSONEncoder()


def _json_text(value: Any) -> str:
    """``json.dumps(value)``, with short cuts for a row's usual lists: empty, or all text."""
    if type(value) is list:
        if not value:
            return "[]"
        try:  # what the encoder writes for a list of strings
            return "[" + ", ".join(map(encode_basestring_ascii, value)) + "]"
        except TypeError:  # not all strings
            pass
    return _JSON.encode(value)


_NONE, _PLANNED, _FAILED_PERMANENT = (
    ChangeState.NONE.value,
    ChangeState.PLANNED.value,
    ChangeState.FAILED_PERMANENT.value,
)
_ACTION_VALUES = {action.value: action.value for action in Action}


def _action_value(action: Any) -> str:
    """``Action(action).value``."""
    try:
        return _ACTION_VALUES[action]
    except (KeyError, TypeError):
        return Action(action).value


def decision_rows(
    decisions: Iterable[Decision],
    *,
    run_id: int,
    program_id: str,
    live: bool,
    updated_at: Any,
    change_keys: Callable[[Decision], str | None] | None,
    policy_version_id: int | None = None,
) -> list[tuple[Any, ...]]:
    """The rows to insert for ``decisions`` (``updated_at`` as the dialect stores it)."""
    rows: list[tuple[Any, ...]] = []
    for original in decisions:
        decision, trace = storable_parts(original)
        body, problem = planned_body(decision)
        key = None
        if body is not None:
            enrollment_id = decision.enrollment_id or ""
            key = change_keys(decision) if change_keys else change_key(program_id, enrollment_id, body)
        if not live:
            state = _NONE  # a dry run sends nothing; its body and key show what it would
        elif problem is not None:
            state = _FAILED_PERMANENT
        else:
            state = _NONE if body is None else _PLANNED
        rows.append(
            (
                run_id,
                program_id,
                decision.enrollment_id,
                decision.current_status,
                decision.status,
                decision.reason,
                decision.rule_id,
                _json_text(decision.group_ids),
                _json_text(decision.current_group_ids),
                _json_text(decision.groups_added),
                _json_text(decision.groups_removed),
                _action_value(decision.action),
                _json_text(decision.warnings),
                _json_text(trace),
                decision.error,
                decision.updated_at,
                decision.facts_fingerprint,
                decision_digest(original, policy_version_id) if decision.enrollment_id else None,
                None if body is None else _json_text(body),
                key,
                state,
                0,  # attempts
                problem,  # error_message
                updated_at,
            )
        )
    return rows


def stored_form(dialect: Dialect, column: str, value: Any) -> Any:
    """``value`` as the ``decisions`` column's type binds it on ``dialect``."""
    process = _DECISIONS.c[column].type.dialect_impl(dialect).bind_processor(dialect)
    return value if process is None else process(value)


def insert_rows(connection: Connection, rows: list[tuple[Any, ...]]) -> None:
    """Insert decision rows (``ROW_COLUMNS`` tuples) in the connection's transaction."""
    preparer = connection.dialect.identifier_preparer
    # Identifiers from the table definition, quoted by the dialect; the values are bound.
    table = preparer.format_table(_DECISIONS)
    columns = ", ".join(preparer.quote(name) for name in ROW_COLUMNS)
    if connection.dialect.driver == "psycopg":
        _copy_rows(connection, f"COPY {table} ({columns}) FROM STDIN", rows)
    else:  # SQLite's qmark, or the format style of other drivers
        marker = "?" if connection.dialect.paramstyle == "qmark" else "%s"
        markers = ", ".join([marker] * len(ROW_COLUMNS))
        connection.exec_driver_sql(f"INSERT INTO {table} ({columns}) VALUES ({markers})", rows)  # noqa: S608


def _copy_rows(connection: Connection, statement: str, rows: list[tuple[Any, ...]]) -> None:
    """``COPY ... FROM STDIN`` through psycopg, on the connection's own transaction."""
    dialect = connection.dialect
    driver_connection = connection.connection.driver_connection
    if driver_connection is None:
        raise StoreError("the database connection is closed")
    try:
        with driver_connection.cursor() as cursor, cursor.copy(statement) as copy:
            for row in rows:
                copy.write_row(row)
    except dialect.loaded_dbapi.Error as exc:
        # What SQLAlchemy raises for a failed statement, so ``database_errors`` reports it.
        raise DBAPIError.instance(statement, None, exc, dialect.loaded_dbapi.Error, dialect=dialect) from exc
