"""Alembic environment: runs only on a connection handed in by ``engine.store.migrations``.

There is no ``alembic.ini`` and no URL here: ``engine.store.migrations.upgrade(engine)`` builds
the configuration in code and passes its open connection in ``config.attributes``.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy.engine import Connection

from engine.errors import StoreError
from engine.store.schema import metadata


def _run_on(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def _main() -> None:
    connection = context.config.attributes.get("connection")
    if not isinstance(connection, Connection):
        raise StoreError(
            "migrations run only through engine.store.migrations.upgrade(engine), "
            "which passes its connection in"
        )
    _run_on(connection)


_main()
