"""Initial schema: policy versions, runs, decisions (the outbox) and program locks.

Revision ID: 0001
Revises:
Create Date: 2026-11-25
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

RUN_MODES = ("dry_run", "live")
RUN_OUTCOMES = ("running", "completed", "failed", "aborted", "interrupted")
CHANGE_STATES = (
    "none",
    "planned",
    "in_flight",
    "applied",
    "recovered",
    "failed_retryable",
    "failed_permanent",
    "superseded",
    "held",
    "deferred",
)


def _json(*, nullable: bool = False) -> sa.types.TypeEngine[Any]:
    return sa.JSON(none_as_null=nullable).with_variant(
        postgresql.JSONB(none_as_null=nullable), "postgresql"
    )


def _one_of(column: str, values: Sequence[str]) -> str:
    return f"{column} IN ({', '.join(repr(value) for value in values)})"


def _when() -> sa.DateTime:
    return sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "policy_versions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("program_id", sa.String(), nullable=False),
        sa.Column("name", sa.String(), nullable=False),
        sa.Column("version", sa.String(), nullable=True),
        sa.Column("content_hash", sa.String(), nullable=False),
        sa.Column("source_text", sa.Text(), nullable=False),
        sa.Column("first_seen_at", _when(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_policy_versions")),
        sa.UniqueConstraint(
            "program_id", "content_hash", name=op.f("uq_policy_versions_program_id_content_hash")
        ),
    )
    op.create_table(
        "runs",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("program_id", sa.String(), nullable=False),
        sa.Column("mode", sa.String(length=16), nullable=False),
        sa.Column("policy_version_id", sa.Integer(), nullable=True),
        sa.Column("started_at", _when(), nullable=False),
        sa.Column("finished_at", _when(), nullable=True),
        sa.Column("evaluation_now", _when(), nullable=False),
        sa.Column("outcome", sa.String(length=16), nullable=False),
        sa.Column("message", sa.Text(), nullable=True),
        sa.Column("counts", _json(), nullable=False),
        sa.Column("holder", sa.String(), nullable=True),
        sa.Column("fencing_token", sa.BigInteger(), nullable=True),
        sa.CheckConstraint(_one_of("mode", RUN_MODES), name=op.f("ck_runs_mode")),
        sa.CheckConstraint(_one_of("outcome", RUN_OUTCOMES), name=op.f("ck_runs_outcome")),
        sa.ForeignKeyConstraint(
            ["policy_version_id"],
            ["policy_versions.id"],
            name=op.f("fk_runs_policy_version_id_policy_versions"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_runs")),
    )
    op.create_index(
        op.f("ix_runs_program_id_started_at"), "runs", ["program_id", "started_at"], unique=False
    )
    op.create_table(
        "decisions",
        sa.Column(
            "id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("program_id", sa.String(), nullable=False),
        sa.Column("enrollment_id", sa.String(), nullable=True),
        sa.Column("current_status", sa.String(), nullable=True),
        sa.Column("status", sa.String(), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("rule_id", sa.String(), nullable=True),
        sa.Column("group_ids", _json(), nullable=False),
        sa.Column("current_group_ids", _json(), nullable=False),
        sa.Column("groups_added", _json(), nullable=False),
        sa.Column("groups_removed", _json(), nullable=False),
        sa.Column("action", sa.String(length=16), nullable=False),
        sa.Column("warnings", _json(), nullable=False),
        sa.Column("trace", sa.JSON(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("enrollment_updated_at", sa.String(), nullable=True),
        sa.Column("facts_fingerprint", sa.String(), nullable=True),
        sa.Column("planned_patch", _json(nullable=True), nullable=True),
        sa.Column("change_key", sa.String(), nullable=True),
        sa.Column("change_state", sa.String(length=32), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("http_status", sa.Integer(), nullable=True),
        sa.Column("api_error_code", sa.String(), nullable=True),
        sa.Column("api_error_locations", _json(nullable=True), nullable=True),
        sa.Column("error_message", sa.Text(), nullable=True),
        sa.Column("applied_at", _when(), nullable=True),
        sa.Column("updated_at", _when(), nullable=False),
        sa.CheckConstraint(
            _one_of("change_state", CHANGE_STATES), name=op.f("ck_decisions_change_state")
        ),
        sa.ForeignKeyConstraint(
            ["run_id"], ["runs.id"], name=op.f("fk_decisions_run_id_runs")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_decisions")),
    )
    op.create_index(
        op.f("ix_decisions_enrollment_id_id"), "decisions", ["enrollment_id", "id"], unique=False
    )
    op.create_index(op.f("ix_decisions_run_id"), "decisions", ["run_id"], unique=False)
    op.create_index(
        op.f("ix_decisions_program_id_change_state"),
        "decisions",
        ["program_id", "change_state"],
        unique=False,
    )
    op.create_table(
        "program_locks",
        sa.Column("program_id", sa.String(), nullable=False),
        sa.Column("holder", sa.String(), nullable=True),
        sa.Column("fencing_token", sa.BigInteger(), nullable=False),
        sa.Column("acquired_at", _when(), nullable=False),
        sa.Column("expires_at", _when(), nullable=False),
        sa.PrimaryKeyConstraint("program_id", name=op.f("pk_program_locks")),
    )


def downgrade() -> None:
    op.drop_table("program_locks")
    op.drop_index(op.f("ix_decisions_program_id_change_state"), table_name="decisions")
    op.drop_index(op.f("ix_decisions_run_id"), table_name="decisions")
    op.drop_index(op.f("ix_decisions_enrollment_id_id"), table_name="decisions")
    op.drop_table("decisions")
    op.drop_index(op.f("ix_runs_program_id_started_at"), table_name="runs")
    op.drop_table("runs")
    op.drop_table("policy_versions")
