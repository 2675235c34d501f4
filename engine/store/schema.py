"""The decision store's tables, as typed SQLAlchemy 2.0 mappings.

Four tables: ``policy_versions`` (every policy text a run used, by content hash), ``runs``
(one row per dry or live run), ``decisions`` (a row when an enrollment's decision changed,
and for every change a live run planned; it is also the outbox of live runs) and
``program_locks`` (the lease that keeps one run per program).

Personal data (names, email, street address) is never stored: a ``Decision`` does not carry
it, and no column is made for it. API error locations keep the ``loc``/``path`` only.

The Alembic revisions in ``engine/store/migrations/versions`` create exactly this schema; a test
compares the two.
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    CheckConstraint,
    DateTime,
    Dialect,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeEngine

from engine.runs.states import ChangeState, PlanState, RunMode, RunOutcome

__all__ = [
    "Base",
    "DecisionRow",
    "PlanRow",
    "PolicyVersionRow",
    "ProgramLockRow",
    "RunRow",
    "UtcDateTime",
    "metadata",
]


class UtcDateTime(TypeDecorator[datetime]):
    """A timezone-aware datetime that always comes back aware and in UTC.

    SQLite has no timezone type, so values are stored there as naive UTC; PostgreSQL keeps
    ``timestamptz``. Naive datetimes are refused on the way in: they are a bug upstream.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: the store keeps aware datetimes only")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


def _json(*, nullable: bool = False) -> TypeEngine[Any]:
    """JSON, stored as JSONB on PostgreSQL; a Python ``None`` is SQL NULL when nullable."""
    return JSON(none_as_null=nullable).with_variant(JSONB(none_as_null=nullable), "postgresql")


# BIGINT on PostgreSQL; on SQLite only INTEGER PRIMARY KEY is the auto-numbered rowid.
_BigId = BigInteger().with_variant(Integer(), "sqlite")

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)


def _one_of(column: str, values: type[StrEnum]) -> str:
    quoted = ", ".join(f"'{member.value}'" for member in values)
    return f"{column} IN ({quoted})"


class Base(DeclarativeBase):
    metadata = metadata


class PolicyVersionRow(Base):
    """One policy text as a run used it; the same text (hash) is kept once per program."""

    __tablename__ = "policy_versions"
    __table_args__ = (UniqueConstraint("program_id", "content_hash"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    program_id: Mapped[str] = mapped_column(String)
    name: Mapped[str] = mapped_column(String)
    version: Mapped[str | None] = mapped_column(String)
    content_hash: Mapped[str] = mapped_column(String)
    source_text: Mapped[str] = mapped_column(Text)
    first_seen_at: Mapped[datetime] = mapped_column(UtcDateTime)


class RunRow(Base):
    """One run: its mode, policy, evaluation time, outcome and summary counts."""

    __tablename__ = "runs"
    __table_args__ = (
        CheckConstraint(_one_of("mode", RunMode), name="mode"),
        CheckConstraint(_one_of("outcome", RunOutcome), name="outcome"),
        Index(None, "program_id", "started_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    program_id: Mapped[str] = mapped_column(String)
    mode: Mapped[str] = mapped_column(String(16))
    policy_version_id: Mapped[int | None] = mapped_column(ForeignKey("policy_versions.id"))
    started_at: Mapped[datetime] = mapped_column(UtcDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    evaluation_now: Mapped[datetime] = mapped_column(UtcDateTime)
    outcome: Mapped[str] = mapped_column(String(16))
    message: Mapped[str | None] = mapped_column(Text)
    counts: Mapped[dict[str, Any]] = mapped_column(_json())
    holder: Mapped[str | None] = mapped_column(String)
    fencing_token: Mapped[int | None] = mapped_column(BigInteger)
    plan_id: Mapped[int | None] = mapped_column(Integer)  # the plan an ``apply`` run applies
    applied_by: Mapped[str | None] = mapped_column(String)  # who applied or approved (apply, approve)


class DecisionRow(Base):
    """One decision of one run, and (for changes) its place in the outbox."""

    __tablename__ = "decisions"
    __table_args__ = (
        CheckConstraint(_one_of("change_state", ChangeState), name="change_state"),
        Index(None, "enrollment_id", "id"),
        Index(None, "run_id"),
        Index(None, "program_id", "change_state"),
        Index(None, "program_id", "enrollment_id", "id"),  # each enrollment's latest decision
    )

    id: Mapped[int] = mapped_column(_BigId, primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id"))
    program_id: Mapped[str] = mapped_column(String)  # denormalised from runs for the outbox index
    enrollment_id: Mapped[str | None] = mapped_column(String)
    current_status: Mapped[str | None] = mapped_column(String)
    status: Mapped[str | None] = mapped_column(String)
    reason: Mapped[str | None] = mapped_column(Text)
    rule_id: Mapped[str | None] = mapped_column(String)
    group_ids: Mapped[list[str]] = mapped_column(_json())
    current_group_ids: Mapped[list[str]] = mapped_column(_json())
    groups_added: Mapped[list[str]] = mapped_column(_json())
    groups_removed: Mapped[list[str]] = mapped_column(_json())
    action: Mapped[str] = mapped_column(String(16))
    warnings: Mapped[list[str]] = mapped_column(_json())
    # Plain JSON (text kept verbatim) even on PostgreSQL: JSONB rewrites numbers, and a
    # large float read by a rule must come back as the same float for explanations.
    trace: Mapped[list[dict[str, Any]]] = mapped_column(JSON())
    error: Mapped[str | None] = mapped_column(Text)
    # The enrollment's own ``updated_at`` exactly as the API sent it (a string, kept verbatim).
    enrollment_updated_at: Mapped[str | None] = mapped_column(String)
    facts_fingerprint: Mapped[str | None] = mapped_column(String)
    # What the decision says (engine.runs.digest): a run stores a row only when it differs
    # from the enrollment's latest one (NULL: no enrollment id, so always stored).
    decision_digest: Mapped[int | None] = mapped_column(BigInteger)
    planned_patch: Mapped[dict[str, Any] | None] = mapped_column(_json(nullable=True))
    change_key: Mapped[str | None] = mapped_column(String)
    change_state: Mapped[str] = mapped_column(String(32))
    attempts: Mapped[int] = mapped_column(Integer)
    http_status: Mapped[int | None] = mapped_column(Integer)
    api_error_code: Mapped[str | None] = mapped_column(String)
    # ``loc`` lists and ``path`` strings only: the API's messages may quote personal data.
    api_error_locations: Mapped[list[Any] | None] = mapped_column(_json(nullable=True))
    error_message: Mapped[str | None] = mapped_column(Text)  # our own text, never the API's
    applied_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)
    # The review queue: who approved or refused the change, when, and their note.
    reviewed_by: Mapped[str | None] = mapped_column(String)
    reviewed_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    review_note: Mapped[str | None] = mapped_column(Text)


class PlanRow(Base):
    """A saved plan: the changes of one ``plan`` run, applied at most once (``apply``)."""

    __tablename__ = "plans"
    __table_args__ = (
        CheckConstraint(_one_of("state", PlanState), name="state"),
        UniqueConstraint("run_id"),
        Index(None, "program_id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    program_id: Mapped[str] = mapped_column(String)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id"))  # the plan run; its decisions
    api_url: Mapped[str] = mapped_column(String)  # the API the plan was made against
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    state: Mapped[str] = mapped_column(String(16))
    apply_run_id: Mapped[int | None] = mapped_column(Integer)  # the latest run applying it
    applied_by: Mapped[str | None] = mapped_column(String)
    applied_at: Mapped[datetime | None] = mapped_column(UtcDateTime)  # when every change settled


class ProgramLockRow(Base):
    """The lease that lets one run at a time work on a program, with its fencing token."""

    __tablename__ = "program_locks"

    program_id: Mapped[str] = mapped_column(String, primary_key=True)
    holder: Mapped[str | None] = mapped_column(String)  # NULL once released
    fencing_token: Mapped[int] = mapped_column(BigInteger)
    acquired_at: Mapped[datetime] = mapped_column(UtcDateTime)
    expires_at: Mapped[datetime] = mapped_column(UtcDateTime)
