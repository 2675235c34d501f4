"""A fresh PostgreSQL database per test, for every suite that runs on PostgreSQL."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

from engine.store import resolve_db_url

PG_ENV = "AUTOAPPROVE_TEST_POSTGRES_URL"


@contextmanager
def fresh_postgres_database(label: str = "test") -> Iterator[str]:
    """A new, empty database on the server ``AUTOAPPROVE_TEST_POSTGRES_URL`` names, dropped
    afterwards with any sessions left on it; yields its URL. Skips visibly without the variable."""
    base = os.environ.get(PG_ENV)
    if not base:
        pytest.skip(f"{PG_ENV} is not set: PostgreSQL tests skipped")
    server = make_url(resolve_db_url(base))
    name = f"autoapprove_{label}_{uuid.uuid4().hex[:12]}"
    admin = create_engine(server.set(database="postgres"), isolation_level="AUTOCOMMIT", poolclass=NullPool)
    try:
        with admin.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}"'))
        try:
            yield server.set(database=name).render_as_string(hide_password=False)
        finally:
            with admin.connect() as connection:
                connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        admin.dispose()
