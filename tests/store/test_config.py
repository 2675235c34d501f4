"""Where the database is (URL resolution), how engines are set up, and no I/O at import."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import Engine, event

from engine.clock import utc_now
from engine.config import Settings
from engine.errors import StoreError
from engine.store import (
    Store,
    create_engine_for_url,
    current_revision,
    head_revision,
    resolve_db_url,
)

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("sqlite:///autoapprove.db", "sqlite:///autoapprove.db"),
        ("sqlite:////data/aa.db", "sqlite:////data/aa.db"),
        ("postgresql://u@db/aa", "postgresql+psycopg://u@db/aa"),
        ("postgres://u:pw@db:5433/aa", "postgresql+psycopg://u:pw@db:5433/aa"),
        ("postgresql+psycopg://u@db/aa", "postgresql+psycopg://u@db/aa"),
        ("runs/decisions.db", "sqlite:///runs/decisions.db"),
    ],
)
def test_resolve_db_url(url: str, expected: str) -> None:
    assert resolve_db_url(url) == expected


def test_the_store_opens_where_the_settings_say(tmp_path: Path) -> None:
    target = tmp_path / "from-env.db"
    settings = Settings.load({"AUTOAPPROVE_DB": f"sqlite:///{target}"})

    with Store.open(settings.db_url) as store:
        assert store.engine.url.database == str(target)
        assert current_revision(store.engine) == head_revision()
    assert target.is_file()


def test_the_default_database_is_in_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)

    with Store.open(Settings.load({}).db_url) as store:
        store.start_run("p", "dry_run", None, utc_now())

    assert (tmp_path / "autoapprove.db").is_file()


def test_a_store_opened_from_a_url_disposes_of_its_engine(tmp_path: Path) -> None:
    store = Store.open(f"sqlite:///{tmp_path / 'a.db'}")
    opened: list[object] = []
    closed: list[object] = []
    event.listen(store.engine, "connect", lambda dbapi, _record: opened.append(dbapi))
    event.listen(store.engine, "close", lambda dbapi, _record: closed.append(dbapi))
    store.engine.dispose()  # start counting from an empty pool
    closed.clear()
    store.list_runs()
    store.close()

    assert len(opened) == 1
    assert closed == opened


def test_a_store_on_an_injected_engine_leaves_it_open(sqlite_engine: Engine) -> None:
    with Store.open(sqlite_engine) as store:
        store.list_runs()

    assert sqlite_engine.pool.checkedin() == 1  # still pooled: the caller owns it


def test_sqlite_files_get_wal_busy_timeout_and_foreign_keys(sqlite_engine: Engine) -> None:
    with sqlite_engine.connect() as connection:
        pragmas = {
            name: connection.exec_driver_sql(f"PRAGMA {name}").scalar()
            for name in ("journal_mode", "busy_timeout", "foreign_keys")
        }

    assert pragmas == {"journal_mode": "wal", "busy_timeout": 5000, "foreign_keys": 1}


def test_foreign_keys_are_enforced(sqlite_engine: Engine) -> None:
    with Store.open(sqlite_engine) as store, pytest.raises(StoreError, match="FOREIGN KEY"):
        store.start_run("p", "live", 999, utc_now())


def test_in_memory_sqlite_works_without_wal() -> None:
    engine = create_engine_for_url("sqlite://")
    try:
        with Store.open(engine) as store:
            run_id = store.start_run("p", "dry_run", None, utc_now())
            assert [r.id for r in store.list_runs()] == [run_id]
    finally:
        engine.dispose()


def test_a_bad_url_is_a_store_error() -> None:
    with pytest.raises(StoreError, match="engine"):
        create_engine_for_url("nosuchdb+driver://x/y")


def test_importing_the_store_does_no_io_and_no_http(tmp_path: Path) -> None:
    probe = (
        "import sys, engine.store, engine.store.migrations, engine.store.locks, engine.store.schema\n"
        "assert 'httpx' not in sys.modules, 'the store must not import httpx'\n"
    )
    subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, check=True, timeout=60, env=_env())

    assert list(tmp_path.iterdir()) == []  # no database file was created


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
