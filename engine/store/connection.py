"""The database URL and the SQLAlchemy engine the store runs on (SQLite PRAGMAs, psycopg)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import URL, make_url

from engine.store.locks import database_errors

SQLITE_BUSY_TIMEOUT_MS = 5000


def resolve_db_url(url: str) -> str:
    """The SQLAlchemy URL of a store URL as users write it (``AUTOAPPROVE_DB``, ``--db``).

    ``postgresql://`` and ``postgres://`` become ``postgresql+psycopg://``; a bare path
    becomes a SQLite file URL. Which URL to use (and its default) is ``engine.config``'s.
    """
    chosen = url
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
