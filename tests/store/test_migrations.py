"""Migrations: from an empty database to a schema equal to the ORM metadata, on both backends."""

from __future__ import annotations

import threading
from importlib.resources import files

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Engine, inspect, text

from engine.errors import StoreError
from engine.store import Store, current_revision, head_revision, upgrade
from engine.store.schema import metadata


def schema_differences(engine: Engine) -> list[object]:
    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        return list(compare_metadata(context, metadata))


def test_upgrade_from_empty_builds_the_orm_schema(store_engine: Engine) -> None:
    assert current_revision(store_engine) is None

    upgrade(store_engine)

    assert current_revision(store_engine) == head_revision()
    assert schema_differences(store_engine) == []
    tables = set(inspect(store_engine).get_table_names())
    assert {"policy_versions", "runs", "decisions", "program_locks"} <= tables


def test_upgrade_twice_is_a_no_op(store_engine: Engine) -> None:
    upgrade(store_engine)
    upgrade(store_engine)

    assert current_revision(store_engine) == head_revision()


def test_the_indexes_the_queries_need_exist(store_engine: Engine) -> None:
    upgrade(store_engine)
    inspector = inspect(store_engine)

    decision_indexes = {tuple(ix["column_names"]) for ix in inspector.get_indexes("decisions")}
    run_indexes = {tuple(ix["column_names"]) for ix in inspector.get_indexes("runs")}

    assert {("enrollment_id", "id"), ("run_id",), ("program_id", "change_state")} <= decision_indexes
    assert ("program_id", "started_at") in run_indexes


def test_no_column_for_personal_data() -> None:
    personal = {"first_name", "last_name", "email", "street_address", "street_address2", "company_name"}
    columns = {column.name for table in metadata.tables.values() for column in table.columns}
    assert not columns & personal


def test_store_does_not_migrate_unless_asked(store_engine: Engine) -> None:
    Store(store_engine).close()
    assert current_revision(store_engine) is None

    Store.open(store_engine, migrate=False).close()
    assert current_revision(store_engine) is None

    Store.open(store_engine).close()
    assert current_revision(store_engine) == head_revision()


def test_concurrent_upgrades_of_a_fresh_database_both_succeed(
    store_engine: Engine, other_engine: Engine
) -> None:
    failures: list[BaseException] = []

    def migrate(engine: Engine) -> None:
        try:
            upgrade(engine)
        except BaseException as exc:  # collected for the assertion below
            failures.append(exc)

    threads = [threading.Thread(target=migrate, args=(e,)) for e in (store_engine, other_engine)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert failures == []
    assert schema_differences(store_engine) == []


def test_a_database_from_a_newer_version_is_refused(store_engine: Engine) -> None:
    upgrade(store_engine)
    with store_engine.begin() as connection:
        connection.execute(text("UPDATE alembic_version SET version_num = '9999_future'"))

    with pytest.raises(StoreError, match="could not migrate"):
        upgrade(store_engine)


def test_migrations_ship_inside_the_engine_package() -> None:
    package = files("engine.store.migrations")
    assert package.joinpath("env.py").is_file()
    assert package.joinpath("script.py.mako").is_file()
    assert package.joinpath("versions", "0001_initial.py").is_file()
