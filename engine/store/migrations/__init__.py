"""The store's schema migrations (Alembic), run in code on an engine the caller owns.

No ``alembic.ini`` is needed: the configuration is built here, with ``script_location``
pointing at this package's folder, so an installed wheel finds its revisions.

On PostgreSQL the upgrade takes a transaction-scoped advisory lock and runs in one
transaction (DDL is transactional there), so two processes opening a fresh database at
once cannot both create the tables. On SQLite the upgrade runs inside ``BEGIN IMMEDIATE``
for the same reason.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from sqlalchemy import func, select
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import SQLAlchemyError

from engine.errors import StoreError

__all__ = ["current_revision", "downgrade", "head_revision", "upgrade"]

# An arbitrary fixed key for pg_advisory_xact_lock: "migrate" in ASCII.
_PG_MIGRATION_LOCK_KEY = 0x6D696772617465


def _config(connection: Connection | None = None) -> Config:
    config = Config()
    # configparser interpolation: a "%" in the path must be doubled.
    location = str(Path(__file__).resolve().parent).replace("%", "%%")
    config.set_main_option("script_location", location)
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def head_revision() -> str:
    """The newest revision this code knows."""
    head = ScriptDirectory.from_config(_config()).get_current_head()
    if head is None:  # pragma: no cover - the package always ships revisions
        raise StoreError("no migrations found in the engine.store.migrations package")
    return head


def current_revision(engine: Engine) -> str | None:
    """The revision the database is at, or ``None`` for a database never migrated."""
    try:
        with engine.connect() as connection:
            return MigrationContext.configure(connection).get_current_revision()
    except SQLAlchemyError as exc:
        raise StoreError(f"could not read the schema revision: {exc}") from exc


def _serialize(connection: Connection) -> None:
    """Make a concurrent upgrade wait for this one (see the module docstring)."""
    if connection.dialect.name == "postgresql":
        connection.execute(select(func.pg_advisory_xact_lock(_PG_MIGRATION_LOCK_KEY)))
    elif connection.dialect.name == "sqlite":
        # Only when the driver has not begun a transaction itself (pysqlite's default mode).
        dbapi_connection = connection.connection.dbapi_connection
        if not getattr(dbapi_connection, "in_transaction", True):
            connection.exec_driver_sql("BEGIN IMMEDIATE")


@contextmanager
def _foreign_keys_off(connection: Connection) -> Iterator[None]:
    """SQLite: foreign keys off while a migration rebuilds tables, on again afterwards.

    SQLite changes a constraint by copying the table, dropping the old one and renaming the
    copy; with foreign keys on, dropping a table others refer to fails. The pragma only
    takes effect outside a transaction, so it is set before the migration's transaction
    begins; the revisions that rebuild tables run ``PRAGMA foreign_key_check`` before commit.
    """
    sqlite = connection.dialect.name == "sqlite"
    if sqlite:
        connection.exec_driver_sql("PRAGMA foreign_keys = OFF")
        connection.commit()  # SQLAlchemy's autobegin opened a transaction for the pragma
    try:
        yield
    finally:
        if sqlite:
            connection.exec_driver_sql("PRAGMA foreign_keys = ON")
            connection.commit()


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Bring the database to ``revision`` (default: the newest); a no-op when it is there."""
    try:
        with engine.connect() as connection, _foreign_keys_off(connection), connection.begin():
            _serialize(connection)
            command.upgrade(_config(connection), revision)
    except CommandError as exc:  # e.g. a database written by a newer version of this code
        raise StoreError(f"could not migrate the store: {exc}") from exc
    except SQLAlchemyError as exc:
        raise StoreError(f"could not migrate the store: {exc}") from exc


def downgrade(engine: Engine, revision: str) -> None:
    """Take the database back to ``revision`` (for tests of the migrations and for operators)."""
    try:
        with engine.connect() as connection, _foreign_keys_off(connection), connection.begin():
            _serialize(connection)
            command.downgrade(_config(connection), revision)
    except (CommandError, SQLAlchemyError) as exc:
        raise StoreError(f"could not migrate the store: {exc}") from exc
