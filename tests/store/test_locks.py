"""Program locks: one run per program, leases, fencing tokens, and crashed holders."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine, text, update

from engine.errors import LockHeldError, StoreError
from engine.store import ProgramLock, Store, acquire_program_lock, upgrade
from engine.store.schema import RunRow

from .conftest import T0, FakeClock, make_decision, url_of

PROGRAM = "prog-locks"
REPO_ROOT = Path(__file__).resolve().parents[2]

# A holder that takes the lock and dies without releasing it (no finally, no atexit).
CRASHING_HOLDER = """
import os, sys
from engine.store import acquire_program_lock, create_engine_for_url
lock = acquire_program_lock(create_engine_for_url(sys.argv[1]), sys.argv[2], "crashed-host:4242")
print(lock.fencing_token, flush=True)
os._exit(0)
"""


@pytest.fixture
def migrated(store_engine: Engine) -> Engine:
    upgrade(store_engine)
    return store_engine


def crash_while_holding(engine: Engine, program: str = PROGRAM) -> int:
    done = subprocess.run(
        [sys.executable, "-c", CRASHING_HOLDER, url_of(engine), program],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return int(done.stdout.strip())


def test_a_second_holder_is_refused_with_who_holds_it(migrated: Engine, other_engine: Engine) -> None:
    with acquire_program_lock(migrated, PROGRAM, "host-a:1") as lock:
        with pytest.raises(LockHeldError) as refused:
            acquire_program_lock(other_engine, PROGRAM, "host-b:2")
        message = str(refused.value)
        assert PROGRAM in message
        assert "host-a:1" in message
        assert "expires at" in message
        lock.check()

        # Another program is not affected.
        acquire_program_lock(other_engine, "another-program", "host-b:2").release()


def test_release_lets_the_next_run_in_with_a_higher_token(migrated: Engine, other_engine: Engine) -> None:
    with acquire_program_lock(migrated, PROGRAM, "host-a:1") as first:
        token = first.fencing_token
    assert first.released
    first.release()  # idempotent

    with acquire_program_lock(other_engine, PROGRAM, "host-b:2") as second:
        assert second.fencing_token > token


def test_a_released_lock_cannot_be_used(migrated: Engine) -> None:
    lock = acquire_program_lock(migrated, PROGRAM, "host-a:1")
    lock.release()

    with pytest.raises(LockHeldError, match="released"):
        lock.renew()
    with pytest.raises(LockHeldError, match="released"):
        lock.check()


def test_only_one_of_many_concurrent_holders_wins(store_engine: Engine) -> None:
    upgrade(store_engine)
    engines = [Store.open(url_of(store_engine), migrate=False) for _ in range(6)]
    start = threading.Barrier(len(engines))
    won: list[ProgramLock] = []
    refused: list[LockHeldError] = []
    other: list[BaseException] = []

    def contend(store: Store, name: str) -> None:
        start.wait()
        try:
            won.append(acquire_program_lock(store.engine, PROGRAM, name))
        except LockHeldError as exc:
            refused.append(exc)
        except BaseException as exc:  # reported by the assertion below
            other.append(exc)

    threads = [threading.Thread(target=contend, args=(s, f"host-{i}")) for i, s in enumerate(engines)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        for lock in won:
            lock.release()
        for store in engines:
            store.close()

    assert other == []
    assert (len(won), len(refused)) == (1, len(engines) - 1)


def test_ttl_must_be_positive(migrated: Engine) -> None:
    with pytest.raises(StoreError, match="TTL"):
        acquire_program_lock(migrated, PROGRAM, "host-a:1", ttl_s=0)


# -- SQLite: leases that expire -----------------------------------------------------------


def test_an_expired_sqlite_lease_is_taken_over_and_the_old_holder_is_fenced(
    sqlite_engine: Engine, clock: FakeClock
) -> None:
    store = Store.open(sqlite_engine, clock=clock)
    old = acquire_program_lock(sqlite_engine, PROGRAM, "stalled:1", ttl_s=60, clock=clock)
    old_run = store.start_run(PROGRAM, "live", None, T0, holder=old.holder, fencing_token=old.fencing_token)
    store.add_decisions(old_run, PROGRAM, [make_decision("enr-1")])
    (old_change,) = store.planned_changes(old_run)

    clock.advance(30)
    with pytest.raises(LockHeldError, match="stalled:1"):
        acquire_program_lock(sqlite_engine, PROGRAM, "next:2", ttl_s=60, clock=clock)
    clock.advance(31)  # the old lease has expired
    new = acquire_program_lock(sqlite_engine, PROGRAM, "next:2", ttl_s=60, clock=clock)

    assert new.fencing_token == old.fencing_token + 1
    with pytest.raises(LockHeldError, match="taken over by 'next:2'"):
        store.add_decisions(old_run, PROGRAM, [make_decision("enr-2")])
    with pytest.raises(LockHeldError):
        store.mark_in_flight(old_change.decision_id)
    with pytest.raises(LockHeldError):
        store.record_outcome(old_change.decision_id, "applied")
    with pytest.raises(LockHeldError):
        store.finish_run(old_run, "completed", {})
    with pytest.raises(LockHeldError):
        store.start_run(PROGRAM, "live", None, T0, fencing_token=old.fencing_token)
    with pytest.raises(LockHeldError, match="no longer held"):
        old.renew()
    with pytest.raises(LockHeldError, match="no longer held"):
        old.check()
    old.release()  # must not free the new holder's lease
    new.check()

    # The new holder settles what the old run left, under its own token.
    (left,) = store.open_changes(PROGRAM)
    store.supersede([left.decision_id], "re-planned", fencing_token=new.fencing_token)
    store.finish_run(old_run, "interrupted", {}, fencing_token=new.fencing_token)
    new.release()
    assert len(store.run_decisions(old_run)) == 1


def test_a_sqlite_lease_must_be_renewed_within_its_ttl(sqlite_engine: Engine, clock: FakeClock) -> None:
    upgrade(sqlite_engine)
    with acquire_program_lock(sqlite_engine, PROGRAM, "host-a:1", ttl_s=60, clock=clock) as lock:
        clock.advance(50)
        assert lock.renew() == clock.now + timedelta(seconds=60) == lock.expires_at
        clock.advance(50)
        lock.check()  # renewed 50 s ago: still valid
        clock.advance(11)
        with pytest.raises(LockHeldError, match="expired"):
            lock.check()


def test_a_crashed_sqlite_holder_blocks_until_its_lease_expires(sqlite_engine: Engine) -> None:
    upgrade(sqlite_engine)
    crashed_token = crash_while_holding(sqlite_engine)

    with pytest.raises(LockHeldError, match="crashed-host:4242"):
        acquire_program_lock(sqlite_engine, PROGRAM, "next:2")
    later = FakeClock(T0.replace(year=2099))
    with acquire_program_lock(sqlite_engine, PROGRAM, "next:2", clock=later) as lock:
        assert lock.fencing_token == crashed_token + 1


# -- PostgreSQL: advisory locks on a connection --------------------------------------------


def acquire_soon(engine: Engine, holder: str) -> ProgramLock:
    """Acquire, allowing the server a moment to clean up a session that just died."""
    deadline = time.monotonic() + 10
    while True:
        try:
            return acquire_program_lock(engine, PROGRAM, holder)
        except LockHeldError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


@pytest.mark.postgres
def test_a_postgres_lock_is_freed_when_its_connection_closes(pg_engine: Engine) -> None:
    upgrade(pg_engine)
    crashed_token = crash_while_holding(pg_engine)

    # The lease row has not expired, but its holder's session is gone.
    lock = acquire_soon(pg_engine, "next:2")
    with lock:
        assert lock.fencing_token == crashed_token + 1
        lock.check()


@pytest.mark.postgres
def test_a_postgres_lock_holds_while_its_connection_lives_even_past_its_lease(
    pg_engine: Engine, clock: FakeClock
) -> None:
    upgrade(pg_engine)
    other = Store.open(url_of(pg_engine), migrate=False)
    try:
        with acquire_program_lock(pg_engine, PROGRAM, "host-a:1", ttl_s=1, clock=clock) as lock:
            clock.advance(3600)
            with pytest.raises(LockHeldError, match=r"host-a:1.*expired .* but its connection is still open"):
                acquire_program_lock(other.engine, PROGRAM, "host-b:2", clock=clock)
            lock.check()  # the advisory lock, not the lease time, decides on PostgreSQL
    finally:
        other.close()


@pytest.mark.postgres
def test_a_postgres_takeover_fences_the_old_run(pg_engine: Engine) -> None:
    upgrade(pg_engine)
    store = Store(pg_engine)
    crashed_token = crash_while_holding(pg_engine)
    old_run = store.start_run(PROGRAM, "live", None, T0)  # stands in for the crashed run's row
    with pg_engine.begin() as connection:  # as start_run under the crashed holder's lease would
        connection.execute(update(RunRow).where(RunRow.id == old_run).values(fencing_token=crashed_token))

    lock = acquire_soon(pg_engine, "next:2")
    with lock:
        with pytest.raises(LockHeldError, match="taken over"):
            store.add_decisions(old_run, PROGRAM, [make_decision()])
        assert store.interrupt_running_runs(PROGRAM, fencing_token=lock.fencing_token) == [old_run]


@pytest.mark.postgres
def test_a_postgres_holder_whose_connection_dies_learns_it_lost_the_lock(pg_engine: Engine) -> None:
    upgrade(pg_engine)
    lock = acquire_program_lock(pg_engine, PROGRAM, "host-a:1")
    other = Store.open(url_of(pg_engine), migrate=False)
    try:
        with other.engine.connect() as connection:  # an administrator, or a network cut
            connection.execute(
                text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                    " WHERE datname = current_database() AND pid <> pg_backend_pid()"
                )
            )
        with pytest.raises(LockHeldError, match="lost the connection"):
            lock.check()
        with acquire_soon(other.engine, "host-b:2") as taken_over:
            assert taken_over.fencing_token == lock.fencing_token + 1
    finally:
        lock.release()  # its connection is dead: discarded without an error
        other.close()
