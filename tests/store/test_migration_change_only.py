"""Migration 0003 (change-only decisions) on a store made by the release before it (the fixture
``data/release_0001_store.json``, dumped from real runs of that release): every answer of
"what did run N decide for X" stays the same, every recorded change stays, and the rows of
unchanged streaks go."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import JSON, DateTime, Engine, MetaData, Table, func, select
from sqlalchemy.dialects.postgresql import JSONB

from engine.runs.digest import decision_digest
from engine.store import Store, current_revision, head_revision, upgrade
from engine.store.schema import DecisionRow

FIXTURE = Path(__file__).parent / "data" / "release_0001_store.json"
TABLES = ("policy_versions", "runs", "decisions")
FIELDS = ("current_status", "status", "reason", "rule_id", "group_ids", "current_group_ids",
          "groups_added", "groups_removed", "action", "warnings", "error", "facts_fingerprint")  # fmt: skip


def typed(value: Any, column: Any, dialect: str) -> Any:
    if value is None:
        return None
    if isinstance(column.type, DateTime):
        moment = datetime.fromisoformat(value)
        return moment.replace(tzinfo=UTC) if dialect == "postgresql" else moment
    if isinstance(column.type, JSON | JSONB):
        return json.loads(value)
    return value


def load_release_store(engine: Engine) -> dict[str, list[dict[str, Any]]]:
    """The fixture's rows in a database at revision 0001, as that release left them."""
    dump = json.loads(FIXTURE.read_text(encoding="utf-8"))
    upgrade(engine, "0001")
    metadata = MetaData()
    with engine.begin() as connection:
        for name in TABLES:
            table = Table(name, metadata, autoload_with=connection)
            rows = [
                {k: typed(v, table.c[k], engine.dialect.name) for k, v in row.items()} for row in dump[name]
            ]
            connection.execute(table.insert(), rows)
    return dump


def listed(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) and value[:1] in "[{" else value


def test_the_fixture_is_a_release_store() -> None:
    dump = json.loads(FIXTURE.read_text(encoding="utf-8"))
    assert dump["alembic_version"] == [{"version_num": "0001"}]
    per_run = {(r["run_id"], r["enrollment_id"]) for r in dump["decisions"]}
    assert len(per_run) == len(dump["decisions"])  # a full row per enrollment per run
    assert {r["change_state"] for r in dump["decisions"]} >= {"none", "applied"}


def test_upgrading_a_release_store_keeps_every_answer(store_engine: Engine) -> None:
    dump = load_release_store(store_engine)
    upgrade(store_engine)
    assert current_revision(store_engine) == head_revision()

    with Store.open(store_engine) as store:
        for row in dump["decisions"]:
            record = store.decision_as_of(row["enrollment_id"], row["run_id"])
            assert record is not None
            got = record.decision.to_dict()
            assert {k: got[k] for k in FIELDS} == {k: listed(row[k]) for k in FIELDS}, row["id"]
        with store_engine.connect() as connection:
            kept = {r.id: r for r in connection.execute(select(DecisionRow))}
            assert len(kept) < len(dump["decisions"])  # unchanged streaks went
            changes = [r["id"] for r in dump["decisions"] if r["change_state"] != "none"]
            assert changes
            assert set(changes) <= set(kept)  # every recorded change stays
            assert all(r.decision_digest is not None for r in kept.values())
        # The migration's frozen digest is the one runs compute: nothing looks changed.
        for row_id, row in kept.items():
            record = store.decision_by_id(row_id)
            assert record is not None
            assert row.decision_digest == decision_digest(record.decision, record.policy_version_id)


def test_latest_digests_answer_for_each_enrollment(store_engine: Engine) -> None:
    dump = load_release_store(store_engine)
    upgrade(store_engine)
    program = dump["runs"][0]["program_id"]
    with Store.open(store_engine) as store:
        latest = store.latest_digests(program)
        enrollments = {r["enrollment_id"] for r in dump["decisions"] if r["program_id"] == program}
        assert set(latest) == enrollments
        with store_engine.connect() as connection:
            newest = dict(
                connection.execute(
                    select(DecisionRow.enrollment_id, func.max(DecisionRow.id))
                    .where(DecisionRow.program_id == program)
                    .group_by(DecisionRow.enrollment_id)
                ).all()
            )
        for enrollment_id, digest in latest.items():
            record = store.decision_by_id(newest[enrollment_id])
            assert record is not None
            assert digest == decision_digest(record.decision, record.policy_version_id)
