"""Saved plans and the review queue.

Adds the ``plans`` table; ``runs.plan_id`` and ``runs.applied_by`` (who applied a plan or
approved changes); ``decisions.reviewed_by``, ``reviewed_at`` and ``review_note``; the run
modes ``plan``, ``apply`` and ``approve``; the change states ``awaiting_approval``,
``refused`` and ``stale``. The check constraints are widened, so every existing row stays
valid. On SQLite that rebuilds ``runs`` and ``decisions`` (batch mode); the upgrade runs
with foreign keys off there, as SQLite's table-rebuild procedure requires, and checks them
before it commits.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

OLD_RUN_MODES = ("dry_run", "live")
RUN_MODES = (*OLD_RUN_MODES, "plan", "apply", "approve")
OLD_CHANGE_STATES = (
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
CHANGE_STATES = (*OLD_CHANGE_STATES, "awaiting_approval", "refused", "stale")
PLAN_STATES = ("saved", "applying", "applied")


def _one_of(column: str, values: Sequence[str]) -> str:
    return f"{column} IN ({', '.join(repr(value) for value in values)})"


def _when() -> sa.DateTime:
    return sa.DateTime(timezone=True)


def _replace_check(table: str, name: str, column: str, values: Sequence[str]) -> None:
    with op.batch_alter_table(table, recreate="auto") as batch:
        batch.drop_constraint(op.f(f"ck_{table}_{name}"), type_="check")
        batch.create_check_constraint(op.f(f"ck_{table}_{name}"), _one_of(column, values))


def _check_foreign_keys() -> None:
    """SQLite rebuilt tables with foreign keys off: make sure every reference still holds."""
    bind = op.get_bind()
    if bind.dialect.name == "sqlite":
        broken = bind.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
        if broken:
            raise RuntimeError(f"foreign keys broken by the migration: {broken[:5]}")


def upgrade() -> None:
    op.create_table(
        "plans",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("program_id", sa.String(), nullable=False),
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("api_url", sa.String(), nullable=False),
        sa.Column("created_at", _when(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("apply_run_id", sa.Integer(), nullable=True),
        sa.Column("applied_by", sa.String(), nullable=True),
        sa.Column("applied_at", _when(), nullable=True),
        sa.CheckConstraint(_one_of("state", PLAN_STATES), name=op.f("ck_plans_state")),
        sa.ForeignKeyConstraint(["run_id"], ["runs.id"], name=op.f("fk_plans_run_id_runs")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_plans")),
        sa.UniqueConstraint("run_id", name=op.f("uq_plans_run_id")),
    )
    op.create_index(op.f("ix_plans_program_id"), "plans", ["program_id"], unique=False)
    with op.batch_alter_table("runs", recreate="auto") as batch:
        batch.add_column(sa.Column("plan_id", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("applied_by", sa.String(), nullable=True))
    _replace_check("runs", "mode", "mode", RUN_MODES)
    with op.batch_alter_table("decisions", recreate="auto") as batch:
        batch.add_column(sa.Column("reviewed_by", sa.String(), nullable=True))
        batch.add_column(sa.Column("reviewed_at", _when(), nullable=True))
        batch.add_column(sa.Column("review_note", sa.Text(), nullable=True))
    _replace_check("decisions", "change_state", "change_state", CHANGE_STATES)
    _check_foreign_keys()


def downgrade() -> None:
    _replace_check("decisions", "change_state", "change_state", OLD_CHANGE_STATES)
    with op.batch_alter_table("decisions", recreate="auto") as batch:
        batch.drop_column("review_note")
        batch.drop_column("reviewed_at")
        batch.drop_column("reviewed_by")
    _replace_check("runs", "mode", "mode", OLD_RUN_MODES)
    with op.batch_alter_table("runs", recreate="auto") as batch:
        batch.drop_column("applied_by")
        batch.drop_column("plan_id")
    op.drop_index(op.f("ix_plans_program_id"), table_name="plans")
    op.drop_table("plans")
    _check_foreign_keys()
