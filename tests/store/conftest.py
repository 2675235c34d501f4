"""Fixtures for the store: fresh SQLite files, fresh PostgreSQL databases, a settable clock.

PostgreSQL tests run when ``AUTOAPPROVE_TEST_POSTGRES_URL`` names a server (any database
on it: a fresh one is created per test through the server's ``postgres`` database, and
dropped after). Without it they are skipped with that reason.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from postgres_databases import fresh_postgres_database
from sqlalchemy import Engine

from engine.policy.decision import Action, Decision, RuleTrace
from engine.store import Store, create_engine_for_url

T0 = datetime(2026, 11, 25, 8, 0, tzinfo=UTC)


class FakeClock:
    """A clock tests move by hand."""

    def __init__(self, start: datetime = T0) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> datetime:
        self.now += timedelta(seconds=seconds)
        return self.now


def url_of(engine: Engine) -> str:
    return engine.url.render_as_string(hide_password=False)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'store.db'}"


@pytest.fixture
def sqlite_engine(sqlite_url: str) -> Iterator[Engine]:
    """A fresh, empty SQLite file in ``tmp_path`` (not migrated)."""
    engine = create_engine_for_url(sqlite_url)
    yield engine
    engine.dispose()


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A fresh, empty PostgreSQL database, dropped after the test."""
    with fresh_postgres_database("store") as url:
        yield url


@pytest.fixture
def pg_engine(pg_url: str) -> Iterator[Engine]:
    engine = create_engine_for_url(pg_url)
    yield engine
    engine.dispose()


ENGINE_FIXTURES = {"sqlite": "sqlite_engine", "postgresql": "pg_engine"}


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def store_engine(request: pytest.FixtureRequest) -> Engine:
    """A fresh empty database on each backend (not migrated)."""
    engine: Engine = request.getfixturevalue(ENGINE_FIXTURES[request.param])
    return engine


@pytest.fixture
def other_engine(store_engine: Engine) -> Iterator[Engine]:
    """A second engine on the same database: another process, as far as locks can tell."""
    engine = create_engine_for_url(url_of(store_engine))
    yield engine
    engine.dispose()


@pytest.fixture
def store(store_engine: Engine, clock: FakeClock) -> Iterator[Store]:
    """A migrated store on a fresh database, on the fake clock."""
    with Store.open(store_engine, clock=clock) as opened:
        yield opened


def make_decision(
    enrollment_id: str | None = "enr-1",
    *,
    action: Action = Action.UPDATE,
    current_status: str | None = "SUBMITTED",
    status: str | None = "ACTIVE",
    group_ids: list[str] | None = None,
    current_group_ids: list[str] | None = None,
    **overrides: Any,
) -> Decision:
    """A decision as the evaluator makes one; ``update`` by default (SUBMITTED -> ACTIVE)."""
    groups = ["zone-a"] if group_ids is None else group_ids
    current = [] if current_group_ids is None else current_group_ids
    fields: dict[str, Any] = {
        "enrollment_id": enrollment_id,
        "current_status": current_status,
        "status": status,
        "reason": "meets every rule",
        "rule_id": "approve-battery",
        "group_ids": groups,
        "current_group_ids": current,
        "groups_added": sorted(set(groups) - set(current)),
        "groups_removed": sorted(set(current) - set(groups)),
        "action": action,
        "warnings": [],
        "trace": [RuleTrace("approve-battery", "rule", True, {"devices.count": 1})],
        "error": None,
        "updated_at": "2026-11-24T10:00:00Z",
        "facts_fingerprint": f"fp-{enrollment_id}",
    }
    fields.update(overrides)
    return Decision(**fields)


def unchanged(enrollment_id: str) -> Decision:
    """A decision that needs nothing sent."""
    return make_decision(
        enrollment_id,
        action=Action.NONE,
        current_status="ACTIVE",
        status="ACTIVE",
        group_ids=["zone-a"],
        current_group_ids=["zone-a"],
    )
