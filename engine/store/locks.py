"""One run per program at a time: the program lock, its lease and fencing token.

Every holder gets a *fencing token*, a number that grows each time the lock changes hands.
The store refuses a write made under a token that is no longer the program's current one,
so a run that lost its lock (it stalled past its lease, or its connection dropped) cannot
overwrite the work of the run that took over.

* **SQLite**: the lock is a lease row in ``program_locks``. It is taken by one conditional
  upsert (a single write statement, so atomic; a concurrent writer waits on the engine's
  ``busy_timeout``). A lease that has expired can be taken over; the token then goes up.
* **PostgreSQL**: ``pg_try_advisory_lock`` on a connection kept open for the whole run
  decides who holds the lock. The server frees it when that connection closes, so a
  crashed process never blocks the next run. The lease row is still written, for its
  fencing token and so that a refused caller learns who holds the lock.

This module also holds the write-transaction helper the store uses: on SQLite a write
transaction starts with ``BEGIN IMMEDIATE`` so that a read followed by a write never fails
with "database is locked" halfway through.
"""

from __future__ import annotations

import hashlib
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from types import TracebackType

from sqlalchemy import Connection, Engine, func, or_, select, text, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import DBAPIError, SQLAlchemyError
from sqlalchemy.sql.dml import Insert

from engine.clock import Clock, utc_now
from engine.config import DEFAULT_LOCK_TTL_S
from engine.errors import LockHeldError, StoreError
from engine.store.schema import ProgramLockRow

__all__ = [
    "ProgramLock",
    "acquire_program_lock",
    "check_fencing_token",
    "database_errors",
    "write_transaction",
]

# A bigint advisory key shows in pg_locks as two 32-bit halves, with objsubid 1.
_HELD_ADVISORY_LOCKS = text(
    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted"
    " AND pid = pg_backend_pid() AND classid::bigint = :high"
    " AND objid::bigint = :low AND objsubid = 1"
)


def _describe(exc: SQLAlchemyError) -> str:
    # The driver's own message: SQLAlchemy's full text repeats the statement and parameters.
    if isinstance(exc, DBAPIError) and exc.orig is not None:
        return f"{type(exc.orig).__name__}: {exc.orig}".strip()
    return str(exc)


@contextmanager
def database_errors(action: str) -> Iterator[None]:
    """Turn SQLAlchemy's errors raised inside the block into ``StoreError``."""
    try:
        yield
    except SQLAlchemyError as exc:
        raise StoreError(f"{action}: {_describe(exc)}") from exc


@contextmanager
def write_transaction(engine: Engine) -> Iterator[Connection]:
    """A short write transaction; ``BEGIN IMMEDIATE`` on SQLite (see the module docstring)."""
    with engine.connect() as connection, connection.begin():
        if connection.dialect.name == "sqlite":
            dbapi_connection = connection.connection.dbapi_connection
            # pysqlite's default mode has not begun yet; an engine set up to emit BEGIN
            # itself already has, and then its own BEGIN stands.
            if not getattr(dbapi_connection, "in_transaction", True):
                connection.exec_driver_sql("BEGIN IMMEDIATE")
        yield connection


@dataclass(frozen=True, slots=True)
class _Lease:
    holder: str | None
    fencing_token: int
    acquired_at: datetime
    expires_at: datetime


def _lease_of(connection: Connection, program_id: str) -> _Lease | None:
    row = connection.execute(
        select(
            ProgramLockRow.holder,
            ProgramLockRow.fencing_token,
            ProgramLockRow.acquired_at,
            ProgramLockRow.expires_at,
        ).where(ProgramLockRow.program_id == program_id)
    ).one_or_none()
    return None if row is None else _Lease(*row)


def holder_is_dead(holder: str | None) -> bool:
    """Whether a ``host:pid`` holder is a process of this machine that no longer exists.

    Only a sure "no such process" counts: another host, an unreadable holder or a process
    we may not signal all count as alive, so a live run is never taken over.
    """
    host, _, pid = (holder or "").rpartition(":")
    if host != socket.gethostname() or not pid.isdigit() or int(pid) == os.getpid():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except OSError:
        return False
    return False


def _when(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _held_message(program_id: str, lease: _Lease | None, now: datetime) -> str:
    if lease is None or lease.holder is None:
        return f"program {program_id!r} is locked by another run (holder unknown)"
    held = f"program {program_id!r} is locked by {lease.holder!r} since {_when(lease.acquired_at)}"
    if lease.expires_at > now:
        return f"{held}; its lease expires at {_when(lease.expires_at)}"
    # PostgreSQL: the holder's connection, not the lease time, keeps the lock.
    return f"{held}; its lease expired at {_when(lease.expires_at)} but its connection is still open"


def check_fencing_token(connection: Connection, program_id: str, token: int) -> None:
    """Refuse (``LockHeldError``) unless ``token`` is still the program's current token.

    Call it first inside the write transaction it guards. On PostgreSQL the lease row is
    read ``FOR SHARE``, so a takeover waits until the guarded write has committed; on
    SQLite the transaction already holds the database's write lock.
    """
    current = connection.execute(
        select(ProgramLockRow.fencing_token, ProgramLockRow.holder)
        .where(ProgramLockRow.program_id == program_id)
        .with_for_update(read=True)
    ).one_or_none()
    if current is None:
        raise LockHeldError(
            f"write refused: program {program_id!r} has no lock, so fencing token {token} is not valid"
        )
    if current.fencing_token != token:
        raise LockHeldError(
            f"write refused: the lock of program {program_id!r} was taken over by "
            f"{current.holder!r} (fencing token {current.fencing_token}, ours {token})"
        )


def _upsert_lease(
    connection: Connection,
    program_id: str,
    holder: str,
    now: datetime,
    expires_at: datetime,
    *,
    take_over_live_lease: bool,
) -> int | None:
    """Take the lease row; the new fencing token, or ``None`` when a live lease stands."""
    values = {
        "program_id": program_id,
        "holder": holder,
        "fencing_token": 1,
        "acquired_at": now,
        "expires_at": expires_at,
    }
    changes = {
        "holder": holder,
        "fencing_token": ProgramLockRow.fencing_token + 1,
        "acquired_at": now,
        "expires_at": expires_at,
    }
    free = None
    if not take_over_live_lease:
        free = or_(ProgramLockRow.holder.is_(None), ProgramLockRow.expires_at <= now)
    conflict = [ProgramLockRow.program_id]
    statement: Insert
    dialect = connection.dialect.name
    if dialect == "postgresql":
        statement = (
            pg_insert(ProgramLockRow)
            .values(values)
            .on_conflict_do_update(index_elements=conflict, set_=changes, where=free)
        )
    elif dialect == "sqlite":
        statement = (
            sqlite_insert(ProgramLockRow)
            .values(values)
            .on_conflict_do_update(index_elements=conflict, set_=changes, where=free)
        )
    else:
        raise StoreError(f"program locks support SQLite and PostgreSQL, not {dialect}")
    returning = statement.returning(ProgramLockRow.fencing_token)
    token = connection.execute(returning).scalar_one_or_none()
    return None if token is None else int(token)


def _advisory_key(program_id: str) -> int:
    """A stable signed 64-bit key for ``pg_try_advisory_lock``."""
    digest = hashlib.sha256(f"flip-autoapprove:program:{program_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


class ProgramLock:
    """The lock of one program, held by one run. Use it as a context manager.

    ``fencing_token`` is what the store's writes are checked against: pass it to
    ``Store.start_run`` (and to writes on changes left by earlier runs).
    """

    def __init__(
        self,
        engine: Engine,
        program_id: str,
        holder: str,
        fencing_token: int,
        expires_at: datetime,
        *,
        ttl_s: float,
        clock: Clock,
        advisory_connection: Connection | None = None,
    ) -> None:
        self._engine = engine
        self.program_id = program_id
        self.holder = holder
        self.fencing_token = fencing_token
        self.expires_at = expires_at
        self._ttl = timedelta(seconds=ttl_s)
        self._clock = clock
        self._advisory_connection = advisory_connection
        self._released = False

    def __repr__(self) -> str:
        return (
            f"ProgramLock(program_id={self.program_id!r}, holder={self.holder!r}, "
            f"fencing_token={self.fencing_token}, released={self._released})"
        )

    def __enter__(self) -> ProgramLock:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.release()

    @property
    def released(self) -> bool:
        return self._released

    def renew(self) -> datetime:
        """Extend the lease by the TTL from now; ``LockHeldError`` if it was taken over."""
        self._ensure_not_released()
        now = self._clock()
        expires_at = now + self._ttl
        with (
            database_errors("could not renew the program lock"),
            write_transaction(self._engine) as connection,
        ):
            renewed = connection.execute(
                update(ProgramLockRow)
                .where(ProgramLockRow.program_id == self.program_id)
                .where(ProgramLockRow.fencing_token == self.fencing_token)
                .values(expires_at=expires_at)
            ).rowcount
        if renewed != 1:
            raise LockHeldError(self._lost_message())
        self.expires_at = expires_at
        return expires_at

    def check(self) -> None:
        """Raise ``LockHeldError`` unless this run still holds the lock.

        On SQLite the lease must also not have expired (anyone may take an expired lease);
        on PostgreSQL the advisory lock must still be held by our open connection.
        """
        self._ensure_not_released()
        with database_errors("could not check the program lock"):
            with self._engine.connect() as connection:
                lease = _lease_of(connection, self.program_id)
            if lease is None or lease.fencing_token != self.fencing_token:
                raise LockHeldError(self._lost_message())
            if self._advisory_connection is not None:
                self._check_advisory_lock(self._advisory_connection)
            elif lease.expires_at <= self._clock():
                raise LockHeldError(
                    f"the lease on program {self.program_id!r} expired at "
                    f"{_when(lease.expires_at)}: renew() it more often than its TTL"
                )

    def release(self) -> None:
        """Give the lock up (idempotent). The token stays, so the next holder's is higher."""
        if self._released:
            return
        self._released = True
        try:
            self._clear_lease()
        finally:
            self._close_advisory_connection()

    def _ensure_not_released(self) -> None:
        if self._released:
            raise LockHeldError(f"the lock on program {self.program_id!r} was released")

    def _lost_message(self) -> str:
        return (
            f"the lock on program {self.program_id!r} is no longer held by {self.holder!r} "
            f"(fencing token {self.fencing_token}): another run took it over"
        )

    def _clear_lease(self) -> None:
        with (
            database_errors("could not release the program lock"),
            write_transaction(self._engine) as connection,
        ):
            connection.execute(
                update(ProgramLockRow)
                .where(ProgramLockRow.program_id == self.program_id)
                .where(ProgramLockRow.fencing_token == self.fencing_token)
                .values(holder=None, expires_at=self._clock())
            )

    def _check_advisory_lock(self, connection: Connection) -> None:
        key = _advisory_key(self.program_id) & 0xFFFFFFFFFFFFFFFF
        halves = {"high": key >> 32, "low": key & 0xFFFFFFFF}
        try:
            held = connection.execute(_HELD_ADVISORY_LOCKS, halves).scalar_one()
            connection.commit()
        except SQLAlchemyError as exc:
            raise LockHeldError(
                f"lost the connection holding the lock on program {self.program_id!r}: {_describe(exc)}"
            ) from exc
        if not held:
            raise LockHeldError(f"the advisory lock on program {self.program_id!r} is no longer held")

    def _close_advisory_connection(self) -> None:
        connection = self._advisory_connection
        if connection is None:
            return
        self._advisory_connection = None
        try:
            connection.execute(select(func.pg_advisory_unlock(_advisory_key(self.program_id))))
            connection.commit()
        except SQLAlchemyError:
            # The connection is broken: the server has dropped the session and its lock.
            # Discard it rather than return it to the pool.
            connection.invalidate()
        finally:
            connection.close()


def acquire_program_lock(
    engine: Engine,
    program_id: str,
    holder: str,
    ttl_s: float = DEFAULT_LOCK_TTL_S,
    clock: Clock = utc_now,
) -> ProgramLock:
    """Take the lock of ``program_id`` for ``holder`` or raise ``LockHeldError``.

    The message of the error names the program, the holder and when its lease expires.
    ``ttl_s`` is the lease time; call ``renew()`` well within it during a long run.
    """
    if ttl_s <= 0:
        raise StoreError(f"lock TTL must be positive, not {ttl_s}")
    if engine.dialect.name == "postgresql":
        return _acquire_on_postgresql(engine, program_id, holder, ttl_s, clock)
    return _acquire_lease(engine, program_id, holder, ttl_s, clock)


def _acquire_lease(engine: Engine, program_id: str, holder: str, ttl_s: float, clock: Clock) -> ProgramLock:
    now = clock()
    expires_at = now + timedelta(seconds=ttl_s)
    with (
        database_errors(f"could not lock program {program_id!r}"),
        write_transaction(engine) as connection,
    ):
        token = _upsert_lease(connection, program_id, holder, now, expires_at, take_over_live_lease=False)
        lease = _lease_of(connection, program_id) if token is None else None
        if lease is not None and holder_is_dead(lease.holder):
            # A crashed run on this machine: no need to wait for its lease to expire.
            token = _upsert_lease(connection, program_id, holder, now, expires_at, take_over_live_lease=True)
    if token is None:
        raise LockHeldError(_held_message(program_id, lease, now))
    return ProgramLock(engine, program_id, holder, token, expires_at, ttl_s=ttl_s, clock=clock)


def _acquire_on_postgresql(
    engine: Engine, program_id: str, holder: str, ttl_s: float, clock: Clock
) -> ProgramLock:
    with database_errors(f"could not lock program {program_id!r}"):
        connection = engine.connect()
        try:
            return _lock_on_connection(connection, program_id, holder, ttl_s, clock)
        except BaseException:
            # Closing the session is what frees an advisory lock taken on it.
            connection.invalidate()
            connection.close()
            raise


def _lock_on_connection(
    connection: Connection, program_id: str, holder: str, ttl_s: float, clock: Clock
) -> ProgramLock:
    locked = connection.execute(select(func.pg_try_advisory_lock(_advisory_key(program_id)))).scalar_one()
    connection.commit()
    if not locked:
        lease = _lease_of(connection, program_id)
        connection.rollback()
        raise LockHeldError(_held_message(program_id, lease, clock()))
    now = clock()
    expires_at = now + timedelta(seconds=ttl_s)
    with connection.begin():
        # We hold the advisory lock, so whoever wrote the lease row is gone: take it over.
        token = _upsert_lease(connection, program_id, holder, now, expires_at, take_over_live_lease=True)
    if token is None:  # pragma: no cover - an unconditional upsert always returns a row
        raise StoreError(f"could not write the lease of program {program_id!r}")
    return ProgramLock(
        connection.engine,
        program_id,
        holder,
        token,
        expires_at,
        ttl_s=ttl_s,
        clock=clock,
        advisory_connection=connection,
    )
