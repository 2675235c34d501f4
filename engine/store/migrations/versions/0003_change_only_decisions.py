"""Change-only decisions: a digest per decision, an index for each enrollment's latest row,
and an existing store converted to keep one row per unchanged streak.

Until this revision a run stored a row for every enrollment; from now on a run stores one
only when the decision differs from the enrollment's latest (``engine.runs.digest``), and
"what run N decided" is the latest row at or before run N. Converting keeps, of each
enrollment's run of consecutive identical ``none`` rows, the oldest one (the run that first
decided it: every later run of the streak then reads it as the latest at or before itself),
and every row that recorded a change (a state other than ``none``), so no answer changes.

The digest is computed here with a frozen copy of the algorithm, so this revision means
the same thing whatever later code does with ``engine.runs.digest`` (a later change of the
algorithm would only cost one extra row per enrollment, never a lost one).

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01
"""

from __future__ import annotations

import hashlib
import json
import marshal
from collections.abc import Iterator, Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_BATCH = 2000
_COLUMNS = (
    "id", "enrollment_id", "current_status", "status", "reason", "rule_id", "group_ids",
    "current_group_ids", "action", "warnings", "error", "facts_fingerprint", "change_state",
)  # fmt: skip


def _listed(value: Any) -> tuple[Any, ...]:
    if isinstance(value, str):  # SQLite hands JSON back as text
        value = json.loads(value)
    return tuple(value or ())


def _digest(row: Any, policy_version_id: int | None) -> int:
    values = (
        row.current_status, row.status, row.reason, row.rule_id, _listed(row.group_ids),
        _listed(row.current_group_ids), row.action, _listed(row.warnings), row.error,
        row.facts_fingerprint, policy_version_id,
    )  # fmt: skip
    try:
        data = marshal.dumps(values, 0)
    except ValueError:
        data = repr(values).encode("utf-8", "backslashreplace")
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "big", signed=True)


def _rows(connection: sa.Connection) -> Iterator[Any]:
    """Every decision with an enrollment id, by enrollment then id, read in pages."""
    decisions, runs = sa.table("decisions", *map(sa.column, _COLUMNS), sa.column("run_id")), sa.table(
        "runs", sa.column("id"), sa.column("policy_version_id")
    )
    query = (
        sa.select(*(decisions.c[name] for name in _COLUMNS), runs.c.policy_version_id)
        .join(runs, runs.c.id == decisions.c.run_id)
        .where(decisions.c.enrollment_id.is_not(None))
        .order_by(decisions.c.enrollment_id, decisions.c.id)
    )
    # Options on the statement: Connection.execution_options would change the connection itself.
    yield from connection.execute(query.execution_options(stream_results=True, yield_per=_BATCH))


def _flush(connection: sa.Connection, digests: list[dict[str, Any]], doomed: list[int]) -> None:
    decisions = sa.table("decisions", sa.column("id"), sa.column("decision_digest"))
    if digests:
        connection.execute(
            decisions.update().where(decisions.c.id == sa.bindparam("row_id")),
            digests,
        )
    for start in range(0, len(doomed), _BATCH):
        connection.execute(decisions.delete().where(decisions.c.id.in_(doomed[start : start + _BATCH])))


def upgrade() -> None:
    with op.batch_alter_table("decisions") as batch:
        batch.add_column(sa.Column("decision_digest", sa.BigInteger(), nullable=True))
    op.create_index(
        op.f("ix_decisions_program_id_enrollment_id_id"),
        "decisions",
        ["program_id", "enrollment_id", "id"],
        unique=False,
    )
    connection = op.get_bind()
    # Written in pages while the read goes on (the same connection and transaction), so
    # memory stays flat for a store of any size; the updates and deletes touch rows the
    # read has already passed.
    digests: list[dict[str, Any]] = []
    doomed: list[int] = []
    previous: tuple[str, int] | None = None
    for row in _rows(connection):
        digest = _digest(row, row.policy_version_id)
        if previous == (row.enrollment_id, digest) and row.change_state == "none":
            doomed.append(row.id)  # the same decision as the row before it: a streak
        else:
            digests.append({"row_id": row.id, "decision_digest": digest})
        # A row that recorded a change ends a streak: the next row is kept whatever it says.
        previous = (row.enrollment_id, digest) if row.change_state == "none" else None
        if len(digests) + len(doomed) >= _BATCH:
            _flush(connection, digests, doomed)
            digests, doomed = [], []
    _flush(connection, digests, doomed)


def downgrade() -> None:
    # The rows removed by the conversion are not brought back: an older release reads the
    # remaining ones as it would read a store it pruned.
    op.drop_index(op.f("ix_decisions_program_id_enrollment_id_id"), table_name="decisions")
    with op.batch_alter_table("decisions") as batch:
        batch.drop_column("decision_digest")
