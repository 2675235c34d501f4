"""The decision store: policy versions, runs, decisions, and the outbox of live runs.

``Store`` takes an SQLAlchemy ``Engine`` (``Store.open``/``Store.from_url`` build one from a
URL). Every method runs its own short transaction and returns plain frozen dataclasses, so
no transaction or session ever stays open between calls.

The outbox: a live run's decisions with action ``update`` are stored ``planned`` with the
PATCH body to send and a ``change_key``. The applier moves each one through
``mark_in_flight`` and ``record_outcome``; a run that finds changes an earlier run left
open (``open_changes``) re-checks them and records them ``recovered`` or ``superseded``.

Fencing: a run started under a program lock records the lock's fencing token, and every
later write for that run (its decisions, its outcome) is refused with ``LockHeldError`` once
another holder has taken the lock. Writes on decisions of an *earlier* run must pass the
current lease's ``fencing_token`` explicitly; without it they are checked against the token
of the run that made the decision, which fails once the lock has changed hands.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import datetime
from itertools import islice
from json.encoder import encode_basestring_ascii
from operator import attrgetter
from typing import Any, Self

from sqlalchemy import (
    Connection,
    Dialect,
    Engine,
    Row,
    Select,
    create_engine,
    event,
    insert,
    select,
    update,
)
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.orm import Session

from engine.errors import ApiError, StoreError
from engine.flip.models import EnrollmentStatus
from engine.policy.decision import Action, Decision, RuleTrace
from engine.runs.ports import Outcome
from engine.store.locks import (
    Clock,
    check_fencing_token,
    database_errors,
    utc_now,
    write_transaction,
)
from engine.store.migrations import upgrade
from engine.store.schema import (
    ChangeState,
    DecisionRow,
    PlanRow,
    PlanState,
    PolicyVersionRow,
    RunMode,
    RunOutcome,
    RunRow,
)

__all__ = [
    "BATCH_SIZE",
    "DB_URL_ENV",
    "DEFAULT_DB_URL",
    "DecisionRecord",
    "Outcome",
    "PlanRecord",
    "PlannedChange",
    "PolicyVersionRecord",
    "ReviewRecord",
    "RunRecord",
    "Store",
    "api_error_locations",
    "change_key",
    "create_engine_for_url",
    "resolve_db_url",
]

DEFAULT_DB_URL = "sqlite:///autoapprove.db"
"""A SQLite file in the working directory."""

DB_URL_ENV = "AUTOAPPROVE_DB"
BATCH_SIZE = 1000
SQLITE_BUSY_TIMEOUT_MS = 5000

# Changes that may still need sending; ``held`` waits for a person and is not among them.
OPEN_STATES = frozenset(
    {ChangeState.PLANNED, ChangeState.IN_FLIGHT, ChangeState.FAILED_RETRYABLE, ChangeState.DEFERRED}
)
# States a change can still leave; the others are final.
MOVABLE_STATES = frozenset({*OPEN_STATES, ChangeState.HELD, ChangeState.AWAITING_APPROVAL})
FINAL_STATES = frozenset(
    {
        ChangeState.APPLIED,
        ChangeState.RECOVERED,
        ChangeState.FAILED_PERMANENT,
        ChangeState.SUPERSEDED,
        ChangeState.REFUSED,
        ChangeState.STALE,
    }
)
# What record_outcome may set: anything but planned, in_flight and none (and refused, which
# only a person's ``refuse`` sets).
OUTCOME_STATES = frozenset(
    {
        *(FINAL_STATES - {ChangeState.REFUSED}),
        ChangeState.FAILED_RETRYABLE,
        ChangeState.DEFERRED,
        ChangeState.HELD,
        ChangeState.AWAITING_APPROVAL,
    }
)


# Enum lookups by value, without Enum.__call__ (measurably slow over 100,000 rows).
_CHANGE_STATES = {state.value: state for state in ChangeState}
_ACTIONS = {action.value: action for action in Action}


# -- URLs and engines ------------------------------------------------------------------


def resolve_db_url(url: str | None = None, environ: Mapping[str, str] | None = None) -> str:
    """The database URL to use: ``url``, else ``environ["AUTOAPPROVE_DB"]``, else the default.

    ``postgresql://`` and ``postgres://`` become ``postgresql+psycopg://``; a bare path
    becomes a SQLite file URL. The caller passes the environment in (e.g. ``os.environ``).
    """
    chosen = url or (environ or {}).get(DB_URL_ENV) or DEFAULT_DB_URL
    if "://" not in chosen:
        return f"sqlite:///{chosen}"
    for prefix in ("postgresql://", "postgres://"):
        if chosen.startswith(prefix):
            return "postgresql+psycopg://" + chosen.removeprefix(prefix)
    return chosen


def _is_sqlite_file(url: URL) -> bool:
    return url.database not in (None, "", ":memory:") and not url.database.startswith("file:")


def _sqlite_setup(file_backed: bool) -> Callable[[Any, Any], None]:
    def on_connect(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        try:
            # Concurrent processes wait for the write lock instead of failing at once.
            cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
            cursor.execute("PRAGMA foreign_keys = ON")
            if file_backed:
                # Readers never block the writer (and the reverse) in WAL mode.
                cursor.execute("PRAGMA journal_mode = WAL")
                cursor.execute("PRAGMA synchronous = NORMAL")
        finally:
            cursor.close()

    return on_connect


def create_engine_for_url(url: str) -> Engine:
    """An engine set up for the store (no connection is made until first use).

    SQLite files get WAL, a 5 s ``busy_timeout`` and foreign keys; PostgreSQL uses psycopg 3.
    """
    parsed = make_url(resolve_db_url(url))
    with database_errors("could not set up the database engine"):
        if parsed.get_backend_name() != "sqlite":
            return create_engine(parsed, pool_pre_ping=True)
        engine = create_engine(parsed)
    event.listen(engine, "connect", _sqlite_setup(_is_sqlite_file(parsed)))
    return engine


# -- Records handed to callers ---------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PolicyVersionRecord:
    """A policy text exactly as a run used it."""

    id: int
    program_id: str
    name: str
    version: str | None
    content_hash: str
    source_text: str
    first_seen_at: datetime


@dataclass(frozen=True, slots=True)
class RunRecord:
    """One run. ``now`` is the time the policy was evaluated at (kept for replays)."""

    id: int
    program_id: str
    mode: RunMode
    policy_version_id: int | None
    started_at: datetime
    finished_at: datetime | None
    now: datetime
    outcome: RunOutcome
    message: str | None
    counts: dict[str, Any]
    holder: str | None
    fencing_token: int | None
    plan_id: int | None = None  # the plan a ``plan`` run saved, or an ``apply`` run applies
    applied_by: str | None = None  # who applied the plan or approved the changes


@dataclass(frozen=True, slots=True)
class PlanRecord:
    """A saved plan, with what its plan run recorded."""

    id: int
    program_id: str
    run_id: int
    api_url: str
    created_at: datetime
    state: PlanState
    apply_run_id: int | None
    applied_by: str | None
    applied_at: datetime | None
    policy_version_id: int | None
    evaluation_now: datetime
    run_outcome: RunOutcome
    counts: dict[str, Any]


@dataclass(frozen=True, slots=True)
class ReviewRecord:
    """A change in the review queue (waiting, or refused by a person)."""

    decision_id: int
    run_id: int
    program_id: str
    enrollment_id: str
    change_state: ChangeState
    current_status: str | None
    status: str | None
    reason: str | None
    rule_id: str | None
    current_group_ids: list[str]
    group_ids: list[str]
    body: dict[str, Any]
    enrollment_updated_at: str | None
    facts_fingerprint: str | None
    policy_version_id: int | None
    policy_hash: str | None
    since: datetime
    reviewed_by: str | None
    reviewed_at: datetime | None
    review_note: str | None
    attempts: int


@dataclass(frozen=True, slots=True)
class DecisionRecord:
    """One stored decision, with its run and where its change stands in the outbox."""

    id: int
    run_id: int
    program_id: str
    decision: Decision
    run_mode: RunMode
    run_started_at: datetime
    run_now: datetime
    run_outcome: RunOutcome
    policy_version_id: int | None
    planned_patch: dict[str, Any] | None
    change_key: str | None
    change_state: ChangeState
    attempts: int
    http_status: int | None
    api_error_code: str | None
    api_error_locations: list[Any] | None
    error_message: str | None
    applied_at: datetime | None
    updated_at: datetime
    reviewed_by: str | None = None
    reviewed_at: datetime | None = None
    review_note: str | None = None
    run_plan_id: int | None = None
    run_applied_by: str | None = None


@dataclass(frozen=True, slots=True)
class PlannedChange:
    """A change to send: the PATCH body for one enrollment and what it was decided from."""

    decision_id: int
    run_id: int
    enrollment_id: str
    body: dict[str, Any]
    change_key: str | None
    change_state: ChangeState
    group_ids: list[str]
    status: str | None
    facts_fingerprint: str | None
    enrollment_updated_at: str | None
    attempts: int


def _outcome_values(target: ChangeState, outcome: Outcome, now: datetime) -> dict[str, Any]:
    values: dict[str, Any] = {
        "change_state": target.value,
        "http_status": outcome.http_status,
        "api_error_code": _storable_or_none(outcome.api_error_code),
        "api_error_locations": _clean_locations(outcome.api_error_locations),
        "error_message": _storable_or_none(outcome.error_message),
        "updated_at": now,
    }
    if outcome.attempts is not None:
        values["attempts"] = outcome.attempts
    if target in (ChangeState.APPLIED, ChangeState.RECOVERED):
        values["applied_at"] = now
    return values


# -- Pure helpers ----------------------------------------------------------------------


_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def change_key(program_id: str, enrollment_id: str, body: Mapping[str, Any]) -> str:
    """A deterministic key for "this enrollment should end up in this state".

    The sha256 of canonical JSON of the program, the enrollment and the PATCH body (with
    group ids sorted: the API keeps a set). Equal keys mean the same change.
    """
    desired = dict(body)
    if isinstance(desired.get("group_ids"), list):
        desired["group_ids"] = sorted(desired["group_ids"])
    canonical = _CANONICAL.encode(
        {"program_id": program_id, "enrollment_id": enrollment_id, "desired": desired}
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


def api_error_locations(error: ApiError) -> list[Any]:
    """Where an API error points (``detail[].loc`` and ``errors[].path``), without messages.

    The API's messages may quote what was sent or stored, personal data included, so the
    store keeps the locations only.
    """
    return error.locations()


def _clean_locations(locations: Sequence[Any] | None) -> list[Any] | None:
    if locations is None:
        return None
    cleaned: list[Any] = []
    for location in locations:
        if isinstance(location, str):
            cleaned.append(_storable_text(location))
        elif isinstance(location, Sequence):
            cleaned.append(
                [part if isinstance(part, int) else _storable_text(str(part)) for part in location]
            )
        else:
            cleaned.append(_storable_text(str(location)))
    return cleaned


# -- What the databases can hold ------------------------------------------------------
# PostgreSQL refuses NUL characters in text and JSON, and no driver can encode a lone
# surrogate (which a lenient JSON parser lets through from the API). Such characters become
# U+FFFD on every backend, so one odd value never fails a batch and both behave the same.

_TEXT_FIELDS = (
    "enrollment_id",
    "current_status",
    "status",
    "reason",
    "rule_id",
    "error",
    "updated_at",
    "facts_fingerprint",
)
_LIST_FIELDS = ("group_ids", "current_group_ids", "groups_added", "groups_removed", "warnings")


def _is_storable(text: str) -> bool:
    if "\x00" in text:
        return False
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _storable_text(text: str) -> str:
    if _is_storable(text):
        return text
    text = text.replace("\x00", "\ufffd")
    # Pairs a split surrogate pair back together; a lone surrogate becomes U+FFFD.
    return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")


def _storable_or_none(text: str | None) -> str | None:
    return None if text is None else _storable_text(text)


def _storable_json(value: Any) -> Any:
    """``value`` as JSON the databases accept: finite numbers, storable text, lists, objects."""
    if value is None or isinstance(value, bool | int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, str):
        return _storable_text(value)
    if isinstance(value, Mapping):
        return {_storable_text(str(key)): _storable_json(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_storable_json(item) for item in value]
    return _storable_text(str(value))


_texts_of = attrgetter(*_TEXT_FIELDS)
_lists_of = attrgetter(*_LIST_FIELDS)
# A JSON encode tells whether a trace needs the (slower) cleaning: it fails on non-finite
# numbers and non-JSON values, escapes NUL as \u0000, and leaves a lone surrogate in its
# output, where encoding to UTF-8 then fails.
_CHECKER = json.JSONEncoder(ensure_ascii=False, allow_nan=False)


def _texts_are_storable(decision: Decision) -> bool:
    """One check over all of a decision's text at once (the fast path for 100,000 rows)."""
    texts = [text for text in _texts_of(decision) if text is not None]
    for items in _lists_of(decision):
        texts.extend(items)
    try:
        return _is_storable("".join(texts))
    except TypeError:  # something that is not text: let the slow path look at it
        return False


def _json_is_storable(value: Any) -> bool:
    try:
        encoded = _CHECKER.encode(value)
    except (TypeError, ValueError):
        return False
    return "\\u0000" not in encoded and (encoded.isascii() or _is_storable(encoded))


def _storable_decision(decision: Decision) -> Decision:
    """``decision`` with every text made storable (``decision`` itself when nothing changes)."""
    changes: dict[str, Any] = {}
    for name in _TEXT_FIELDS:
        text = getattr(decision, name)
        if isinstance(text, str) and not _is_storable(text):
            changes[name] = _storable_text(text)
    for name in _LIST_FIELDS:
        items = getattr(decision, name)
        if not all(_is_storable(item) for item in items if isinstance(item, str)):
            changes[name] = [_storable_json(item) for item in items]
    return replace(decision, **changes) if changes else decision


def _trace_to_json(trace: Iterable[RuleTrace]) -> list[dict[str, Any]]:
    return [{"rule_id": t.rule_id, "kind": t.kind, "matched": t.matched, "reads": t.reads} for t in trace]


def _storable_parts(decision: Decision) -> tuple[Decision, list[dict[str, Any]]]:
    """The decision and its JSON trace, cleaned only when something in them needs it."""
    trace = _trace_to_json(decision.trace)
    if trace and not _json_is_storable(trace):
        trace = _storable_json(trace)
    if not _texts_are_storable(decision):
        decision = _storable_decision(decision)
    return decision, trace


def _trace_from_json(items: list[dict[str, Any]]) -> list[RuleTrace]:
    return [
        RuleTrace(
            rule_id=item["rule_id"],
            kind=item["kind"],
            matched=item["matched"],
            reads=item.get("reads") or {},
        )
        for item in items
    ]


# -- The PATCH body of an update ------------------------------------------------------
# ``Decision.patch()`` validates the body with pydantic (``EnrollmentPatch``), which costs
# more than everything else about a row. Most bodies are plainly valid: a documented status
# and group ids of ASCII word characters. Those are built here directly, exactly as
# ``EnrollmentPatch.body()`` would build them; anything else goes through pydantic, so a
# status or group id the API would refuse is still refused, with pydantic's message.

_STATUS_VALUES = frozenset(status.value for status in EnrollmentStatus)
# A subset of the API's pattern for group ids (``GROUP_ID_PATTERN``, ``^[\w-]+$``).
_PLAIN_GROUP_ID = re.compile(r"[A-Za-z0-9_-]+")


def _plain_body(decision: Decision) -> dict[str, Any] | None:
    """``decision.patch().body()`` for an ``update`` whose values need no pydantic check,
    else ``None`` (then ask pydantic)."""
    body: dict[str, Any] = {}
    if decision.status_changes and decision.status:
        status, reason = decision.status, decision.reason
        if type(status) is not str or status not in _STATUS_VALUES:
            return None
        body["status"] = status
        if reason is not None:
            if type(reason) is not str:
                return None
            body["status_reason"] = reason
    if decision.groups_change:
        group_ids = list(decision.group_ids)
        if not all(type(group_id) is str and _PLAIN_GROUP_ID.fullmatch(group_id) for group_id in group_ids):
            return None
        body["group_ids"] = group_ids
    return body


def _planned_body(decision: Decision) -> tuple[dict[str, Any] | None, str | None]:
    """The PATCH body of an ``update`` decision, or why none can be sent."""
    if decision.action is not Action.UPDATE:
        return None, None
    if not decision.enrollment_id:
        return None, "the decision has no enrollment id to send a change to"
    body = _plain_body(decision)
    if body is None:
        try:
            patch = decision.patch()
        except ValueError as exc:  # pydantic refuses a status or group id the API would refuse
            return None, f"no valid PATCH body: {exc}"
        body = patch.body() if patch is not None else {}
    return (body or None), None


# -- Decision rows, built and inserted in bulk ----------------------------------------
# A row is a tuple in ``_ROW_COLUMNS`` order, with its JSON columns already encoded by
# ``json.dumps`` (what SQLAlchemy's JSON type would send) and ``updated_at`` already in the
# form the dialect stores: SQLAlchemy's per-value type processing is skipped on purpose.
# SQLite gets one ``executemany``; PostgreSQL (psycopg) gets ``COPY ... FROM STDIN``, where
# the server reads the JSON text as ``jsonb``/``json`` exactly as it would for an insert.
# The outcome columns (``_OUTCOME_COLUMNS``) are left out: a new decision has no outcome,
# and those columns have no default, so they are NULL.

_ROW_COLUMNS = (
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
    "planned_patch",
    "change_key",
    "change_state",
    "attempts",
    "error_message",
    "updated_at",
)
_OUTCOME_COLUMNS = (
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


def _decision_rows(
    decisions: Iterable[Decision],
    *,
    run_id: int,
    program_id: str,
    live: bool,
    updated_at: Any,
    change_keys: Callable[[Decision], str | None] | None,
) -> list[tuple[Any, ...]]:
    """The rows to insert for ``decisions`` (``updated_at`` as the dialect stores it)."""
    rows: list[tuple[Any, ...]] = []
    for original in decisions:
        decision, trace = _storable_parts(original)
        body, problem = _planned_body(decision)
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
                None if body is None else _json_text(body),
                key,
                state,
                0,  # attempts
                problem,  # error_message
                updated_at,
            )
        )
    return rows


def _stored_form(dialect: Dialect, column: str, value: Any) -> Any:
    """``value`` as the ``decisions`` column's type binds it on ``dialect``."""
    process = _DECISIONS.c[column].type.dialect_impl(dialect).bind_processor(dialect)
    return value if process is None else process(value)


def _insert_rows(connection: Connection, rows: list[tuple[Any, ...]]) -> None:
    """Insert decision rows (``_ROW_COLUMNS`` tuples) in the connection's transaction."""
    preparer = connection.dialect.identifier_preparer
    # Identifiers from the table definition, quoted by the dialect; the values are bound.
    table = preparer.format_table(_DECISIONS)
    columns = ", ".join(preparer.quote(name) for name in _ROW_COLUMNS)
    if connection.dialect.driver == "psycopg":
        _copy_rows(connection, f"COPY {table} ({columns}) FROM STDIN", rows)
    else:  # SQLite's qmark, or the format style of other drivers
        marker = "?" if connection.dialect.paramstyle == "qmark" else "%s"
        markers = ", ".join([marker] * len(_ROW_COLUMNS))
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


def _to_decision(row: DecisionRow) -> Decision:
    return Decision(
        enrollment_id=row.enrollment_id,
        current_status=row.current_status,
        status=row.status,
        reason=row.reason,
        rule_id=row.rule_id,
        group_ids=row.group_ids,
        current_group_ids=row.current_group_ids,
        groups_added=row.groups_added,
        groups_removed=row.groups_removed,
        action=_ACTIONS[row.action],
        warnings=row.warnings,
        trace=_trace_from_json(row.trace),
        error=row.error,
        updated_at=row.enrollment_updated_at,
        facts_fingerprint=row.facts_fingerprint,
    )


def _to_run_record(row: RunRow) -> RunRecord:
    return RunRecord(
        id=row.id,
        program_id=row.program_id,
        mode=RunMode(row.mode),
        policy_version_id=row.policy_version_id,
        started_at=row.started_at,
        finished_at=row.finished_at,
        now=row.evaluation_now,
        outcome=RunOutcome(row.outcome),
        message=row.message,
        counts=row.counts,
        holder=row.holder,
        fencing_token=row.fencing_token,
        plan_id=row.plan_id,
        applied_by=row.applied_by,
    )


def _to_review_record(
    row: DecisionRow, policy_version_id: int | None, policy_hash: str | None
) -> ReviewRecord:
    return ReviewRecord(
        decision_id=row.id,
        run_id=row.run_id,
        program_id=row.program_id,
        enrollment_id=row.enrollment_id or "",
        change_state=_CHANGE_STATES[row.change_state],
        current_status=row.current_status,
        status=row.status,
        reason=row.reason,
        rule_id=row.rule_id,
        current_group_ids=row.current_group_ids,
        group_ids=row.group_ids,
        body=row.planned_patch or {},
        enrollment_updated_at=row.enrollment_updated_at,
        facts_fingerprint=row.facts_fingerprint,
        policy_version_id=policy_version_id,
        policy_hash=policy_hash,
        since=row.updated_at,
        reviewed_by=row.reviewed_by,
        reviewed_at=row.reviewed_at,
        review_note=row.review_note,
        attempts=row.attempts,
    )


def _to_decision_record(row: DecisionRow, run: RunRow) -> DecisionRecord:
    return DecisionRecord(
        id=row.id,
        run_id=row.run_id,
        program_id=row.program_id,
        decision=_to_decision(row),
        run_mode=RunMode(run.mode),
        run_started_at=run.started_at,
        run_now=run.evaluation_now,
        run_outcome=RunOutcome(run.outcome),
        policy_version_id=run.policy_version_id,
        planned_patch=row.planned_patch,
        change_key=row.change_key,
        change_state=_CHANGE_STATES[row.change_state],
        attempts=row.attempts,
        http_status=row.http_status,
        api_error_code=row.api_error_code,
        api_error_locations=row.api_error_locations,
        error_message=row.error_message,
        applied_at=row.applied_at,
        updated_at=row.updated_at,
        reviewed_by=row.reviewed_by,
        reviewed_at=row.reviewed_at,
        review_note=row.review_note,
        run_plan_id=run.plan_id,
        run_applied_by=run.applied_by,
    )


_PLANNED_COLUMNS = (
    DecisionRow.id,
    DecisionRow.run_id,
    DecisionRow.enrollment_id,
    DecisionRow.planned_patch,
    DecisionRow.change_key,
    DecisionRow.change_state,
    DecisionRow.group_ids,
    DecisionRow.status,
    DecisionRow.facts_fingerprint,
    DecisionRow.enrollment_updated_at,
    DecisionRow.attempts,
)


def _to_planned_change(row: Row[Any]) -> PlannedChange:
    return PlannedChange(
        decision_id=row.id,
        run_id=row.run_id,
        enrollment_id=row.enrollment_id or "",
        body=row.planned_patch or {},
        change_key=row.change_key,
        change_state=_CHANGE_STATES[row.change_state],
        group_ids=row.group_ids,
        status=row.status,
        facts_fingerprint=row.facts_fingerprint,
        enrollment_updated_at=row.enrollment_updated_at,
        attempts=row.attempts,
    )


def _batches(items: Iterable[Decision], size: int) -> Iterator[list[Decision]]:
    iterator = iter(items)
    while batch := list(islice(iterator, size)):
        yield batch


def _checked(enum: type[RunMode] | type[RunOutcome] | type[ChangeState], value: str) -> str:
    try:
        return enum(value).value
    except ValueError as exc:
        allowed = ", ".join(member.value for member in enum)
        raise StoreError(f"{value!r} is not a {enum.__name__} (one of: {allowed})") from exc


@dataclass(frozen=True, slots=True)
class _Owner:
    """Which program and fencing token a write belongs to."""

    program_id: str
    fencing_token: int | None


@dataclass(frozen=True, slots=True)
class _RunState:
    program_id: str
    fencing_token: int | None
    mode: RunMode
    outcome: RunOutcome

    def owner(self, fencing_token: int | None) -> _Owner:
        """Whose lease a write for this run needs: the caller's token, else the run's own."""
        return _Owner(self.program_id, fencing_token if fencing_token is not None else self.fencing_token)


# -- The store -------------------------------------------------------------------------


class Store:
    """The decision store over an injected engine. Does not migrate: see ``Store.open``."""

    def __init__(self, engine: Engine, *, clock: Clock = utc_now, owns_engine: bool = False) -> None:
        self._engine = engine
        self._clock = clock
        self._owns_engine = owns_engine

    @classmethod
    def open(
        cls,
        target: str | Engine | None = None,
        *,
        migrate: bool = True,
        environ: Mapping[str, str] | None = None,
        clock: Clock = utc_now,
    ) -> Self:
        """A store on an engine or URL (resolved as in ``resolve_db_url``), migrated to head.

        A store opened from a URL owns its engine and disposes of it in ``close()``.
        """
        if isinstance(target, Engine):
            store = cls(target, clock=clock)
        else:
            engine = create_engine_for_url(resolve_db_url(target, environ))
            store = cls(engine, clock=clock, owns_engine=True)
        if migrate:
            try:
                store.migrate()
            except BaseException:
                store.close()
                raise
        return store

    @classmethod
    def from_url(
        cls,
        url: str | None = None,
        *,
        environ: Mapping[str, str] | None = None,
        migrate: bool = True,
        clock: Clock = utc_now,
    ) -> Self:
        """``Store.open`` for a URL: explicit, else ``AUTOAPPROVE_DB`` in ``environ``, else
        ``DEFAULT_DB_URL``."""
        return cls.open(resolve_db_url(url, environ), migrate=migrate, clock=clock)

    @property
    def engine(self) -> Engine:
        return self._engine

    def migrate(self) -> None:
        """Bring the schema to the newest revision (a no-op when it is there)."""
        upgrade(self._engine)

    def close(self) -> None:
        """Dispose of the engine if this store created it."""
        if self._owns_engine:
            self._engine.dispose()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    # -- policy versions ---------------------------------------------------------------

    def save_policy_version(
        self, program_id: str, name: str, version: str | None, content_hash: str, source_text: str
    ) -> int:
        """Keep a policy text; returns its id. The same hash for the same program is kept
        once: saving it again returns the existing id."""
        with database_errors("could not save the policy version"):
            existing = self._policy_version_id(program_id, content_hash)
            if existing is not None:
                return existing
            values = {
                "program_id": program_id,
                "name": _storable_text(name),
                "version": _storable_or_none(version),
                "content_hash": content_hash,
                "source_text": _storable_text(source_text),
                "first_seen_at": self._clock(),
            }
            statement = insert(PolicyVersionRow).values(values).returning(PolicyVersionRow.id)
            try:
                with write_transaction(self._engine) as connection:
                    return connection.execute(statement).scalar_one()
            except IntegrityError:
                # Another process saved the same text in between.
                existing = self._policy_version_id(program_id, content_hash)
                if existing is None:
                    raise
                return existing

    def _policy_version_id(self, program_id: str, content_hash: str) -> int | None:
        query = select(PolicyVersionRow.id).where(
            PolicyVersionRow.program_id == program_id,
            PolicyVersionRow.content_hash == content_hash,
        )
        with self._engine.connect() as connection:
            return connection.execute(query).scalar_one_or_none()

    def policy_version(self, policy_version_id: int) -> PolicyVersionRecord | None:
        """The policy text a run used, so its decisions can be explained and replayed."""
        with database_errors("could not read the policy version"), Session(self._engine) as s:
            row = s.get(PolicyVersionRow, policy_version_id)
            if row is None:
                return None
            return PolicyVersionRecord(
                id=row.id,
                program_id=row.program_id,
                name=row.name,
                version=row.version,
                content_hash=row.content_hash,
                source_text=row.source_text,
                first_seen_at=row.first_seen_at,
            )

    # -- runs --------------------------------------------------------------------------

    def start_run(
        self,
        program_id: str,
        mode: RunMode | str,
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
            "mode": _checked(RunMode, mode),
            "policy_version_id": policy_version_id,
            "started_at": self._clock(),
            "evaluation_now": now,
            "outcome": RunOutcome.RUNNING.value,
            "message": None,
            "counts": {},
            "holder": _storable_or_none(holder),
            "fencing_token": fencing_token,
            "plan_id": plan_id,
            "applied_by": _storable_or_none(applied_by),
        }
        with database_errors("could not start the run"), write_transaction(self._engine) as connection:
            if fencing_token is not None:
                check_fencing_token(connection, program_id, fencing_token)
            statement = insert(RunRow).values(values).returning(RunRow.id)
            return connection.execute(statement).scalar_one()

    def finish_run(
        self,
        run_id: int,
        outcome: RunOutcome | str,
        counts: Mapping[str, Any],
        message: str | None = None,
        *,
        fencing_token: int | None = None,
    ) -> None:
        """Record how a running run ended; ``StoreError`` if it is unknown or already ended."""
        checked = _checked(RunOutcome, outcome)
        if checked == RunOutcome.RUNNING:
            raise StoreError("finish_run needs a final outcome, not 'running'")
        owner = self._run_state(run_id).owner(fencing_token)
        statement = (
            update(RunRow)
            .where(RunRow.id == run_id, RunRow.outcome == RunOutcome.RUNNING.value)
            .values(
                outcome=checked,
                counts=_storable_json(counts),
                message=_storable_or_none(message),
                finished_at=self._clock(),
            )
        )
        with database_errors("could not finish the run"), _fenced(self._engine, owner) as connection:
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
                message=_storable_text(message),
                finished_at=self._clock(),
            )
            .returning(RunRow.id)
        )
        owner = _Owner(program_id, fencing_token)
        with database_errors("could not mark interrupted runs"), _fenced(self._engine, owner) as connection:
            return sorted(connection.execute(statement).scalars())

    def run(self, run_id: int) -> RunRecord | None:
        """One run, or ``None``."""
        with database_errors("could not read the run"), Session(self._engine) as session:
            row = session.get(RunRow, run_id)
            return None if row is None else _to_run_record(row)

    def list_runs(self, program_id: str | None = None, limit: int = 50) -> list[RunRecord]:
        """The newest runs first, of one program or of all."""
        query = select(RunRow).order_by(RunRow.started_at.desc(), RunRow.id.desc()).limit(limit)
        if program_id is not None:
            query = query.where(RunRow.program_id == program_id)
        with database_errors("could not list runs"), Session(self._engine) as session:
            return [_to_run_record(row) for row in session.scalars(query)]

    # -- decisions ---------------------------------------------------------------------

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
        for batch in _batches(decisions, BATCH_SIZE):
            try:
                updated_at = _stored_form(self._engine.dialect, "updated_at", self._clock())
            except (AttributeError, TypeError, ValueError) as exc:  # e.g. a naive datetime
                raise StoreError(f"could not store decisions: {exc}") from exc
            rows = _decision_rows(
                batch,
                run_id=run_id,
                program_id=program_id,
                live=run.mode in (RunMode.LIVE, RunMode.PLAN),  # a plan's changes wait to be applied
                updated_at=updated_at,
                change_keys=change_keys,
            )
            with database_errors("could not store decisions"), _fenced(self._engine, owner) as connection:
                _insert_rows(connection, rows)

    def planned_changes(self, run_id: int) -> list[PlannedChange]:
        """The run's changes still ``planned``, in decision order."""
        query = (
            select(*_PLANNED_COLUMNS)
            .where(DecisionRow.run_id == run_id, DecisionRow.change_state == ChangeState.PLANNED.value)
            .order_by(DecisionRow.id)
        )
        with database_errors("could not read planned changes"), self._engine.connect() as connection:
            return [_to_planned_change(row) for row in connection.execute(query)]

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
            select(*_PLANNED_COLUMNS)
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
            _to_planned_change(row)
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

    def _decision_records(self, query: Select[DecisionRow, RunRow]) -> list[DecisionRecord]:
        with database_errors("could not read decisions"), Session(self._engine) as session:
            return [_to_decision_record(row, run) for row, run in session.execute(query)]

    # -- the outbox --------------------------------------------------------------------

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
        state: ChangeState | str,
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
        target = ChangeState(_checked(ChangeState, state))
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
        with database_errors("could not release changes"), _fenced(self._engine, *owners) as connection:
            connection.execute(statement)

    def record_outcomes(self, outcomes: Sequence[Outcome], *, fencing_token: int | None = None) -> None:
        """``record_outcome`` for several changes in one transaction (all or nothing)."""
        moves: list[tuple[int, dict[str, Any], ChangeState]] = []
        now = self._clock()
        for outcome in outcomes:
            target = ChangeState(_checked(ChangeState, outcome.state))
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
                    error_message=_storable_text(reason),
                    updated_at=self._clock(),
                )
            )
            with database_errors("could not supersede changes"), _fenced(self._engine, *owners) as connection:
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
        with database_errors("could not update the change"), _fenced(self._engine, *owners) as connection:
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
        with database_errors("could not update the changes"), _fenced(self._engine, *owners) as connection:
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

    # -- saved plans -------------------------------------------------------------------

    def create_plan(self, program_id: str, run_id: int, api_url: str) -> int:
        """Save the changes of ``plan`` run ``run_id`` as a plan; returns the plan id."""
        values = {
            "program_id": program_id,
            "run_id": run_id,
            "api_url": _storable_text(api_url),
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
                counts=run.counts,
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
                applied_by=_storable_text(applied_by),
            )
        )
        approve = (
            update(DecisionRow)
            .where(
                DecisionRow.run_id == plan.run_id,
                DecisionRow.change_state.in_(sorted(OPEN_STATES)),
                DecisionRow.reviewed_by.is_(None),
            )
            .values(reviewed_by=_storable_text(applied_by), reviewed_at=now)
        )
        owner = _Owner(plan.program_id, fencing_token)
        with database_errors("could not claim the plan"), _fenced(self._engine, owner) as connection:
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
        owner = _Owner(plan.program_id, fencing_token)
        with database_errors("could not finish the plan"), _fenced(self._engine, owner) as connection:
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
            select(*_PLANNED_COLUMNS).where(DecisionRow.id.in_(list(decision_ids))).order_by(DecisionRow.id)
        )
        with database_errors("could not read changes"), self._engine.connect() as connection:
            return [_to_planned_change(row) for row in connection.execute(query)]

    # -- the review queue --------------------------------------------------------------

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
                _to_review_record(row, version, content_hash)
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
        values = {"change_state": ChangeState.PLANNED.value, "reviewed_by": _storable_text(reviewed_by)}
        self._review(decision_ids, values, "approve", fencing_token)

    def refuse(
        self, decision_ids: Sequence[int], reviewed_by: str, note: str | None, *, fencing_token: int | None
    ) -> None:
        """Waiting changes become ``refused`` by ``reviewed_by`` with ``note`` (all or nothing)."""
        values = {
            "change_state": ChangeState.REFUSED.value,
            "reviewed_by": _storable_text(reviewed_by),
            "review_note": _storable_or_none(note),
        }
        self._review(decision_ids, values, "refuse", fencing_token)

    def _review(
        self, decision_ids: Sequence[int], values: dict[str, Any], verb: str, fencing_token: int | None
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
        with database_errors(f"could not {verb} the changes"), _fenced(self._engine, *owners) as connection:
            moved = connection.execute(statement).rowcount
            if moved != len(ids):  # raising rolls the whole transaction back
                raise StoreError(f"only {moved} of {len(ids)} changes were waiting for approval")

    # -- fencing -----------------------------------------------------------------------

    def _run_state(self, run_id: int) -> _RunState:
        query = select(RunRow.program_id, RunRow.fencing_token, RunRow.mode, RunRow.outcome).where(
            RunRow.id == run_id
        )
        with database_errors("could not read the run"), self._engine.connect() as connection:
            row = connection.execute(query).one_or_none()
        if row is None:
            raise StoreError(f"no run {run_id}")
        return _RunState(row.program_id, row.fencing_token, RunMode(row.mode), RunOutcome(row.outcome))

    def _decision_owners(self, decision_ids: Sequence[int], fencing_token: int | None) -> list[_Owner]:
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
            _Owner(row.program_id, fencing_token if fencing_token is not None else row.fencing_token)
            for row in rows
        }
        return sorted(owners, key=lambda owner: owner.program_id)


@contextmanager
def _fenced(engine: Engine, *owners: _Owner) -> Iterator[Connection]:
    """A write transaction that first checks each owner's fencing token (when it has one)."""
    with write_transaction(engine) as connection:
        for owner in owners:
            if owner.fencing_token is not None:
                check_fencing_token(connection, owner.program_id, owner.fencing_token)
        yield connection
