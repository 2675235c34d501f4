"""One live run per program: the lock, its lease, fencing, and what a dead holder leaves.

* Two ``cli.py run --live`` processes started together on one program and database: one
  applies, the other exits 4 and says who holds the lock (SQLite and PostgreSQL).
* An expired SQLite lease is taken over, and the old holder's writes are refused.
* A killed run does not block the next one: on PostgreSQL at once, on SQLite once its lease
  has run out.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cli_process import CLI, REPO_ROOT, cli_environment, run_cli
from crashing_cli import crashing_entry
from sqlalchemy import select

from engine.errors import LockHeldError
from engine.flip.client import ApiSettings, FlipClient, Secret
from engine.policy.decision import Action, Decision
from engine.runs.service import RunService, RunSettings
from engine.store import ProgramLock, Store, acquire_program_lock
from engine.store.schema import ProgramLockRow

from .conftest import (
    BACKENDS,
    CRASH_EXIT,
    EXIT_LOCKED,
    FAST_API,
    NOW,
    PROGRAM,
    Product,
    assert_converged,
    open_store,
)


class SettableClock:
    """A clock for leases that moves only when told."""

    def __init__(self, start: datetime) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


def _decision(enrollment_id: str = "enr-1") -> Decision:
    return Decision(
        enrollment_id=enrollment_id,
        current_status="SUBMITTED",
        status="ACTIVE",
        reason="meets the requirements",
        rule_id="approve",
        group_ids=[],
        current_group_ids=[],
        groups_added=[],
        groups_removed=[],
        action=Action.UPDATE,
    )


# --- two runs at once -------------------------------------------------------------------------


def _two_runs_at_once(product: Product) -> dict[int, str]:
    """Start two identical live runs together; {exit code: stderr} once both have ended."""
    command = [sys.executable, str(CLI), *product.run_args()]
    processes = [
        subprocess.Popen(
            command,
            cwd=REPO_ROOT,
            env=cli_environment(product.env),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    errors = [process.communicate(timeout=240)[1] for process in processes]
    return {process.returncode: error[-1500:] for process, error in zip(processes, errors, strict=True)}


@pytest.mark.parametrize("backend", BACKENDS)
def test_two_runs_started_together_one_applies_the_other_exits_4(
    backend: str, make_product: Callable[..., Product]
) -> None:
    product = make_product(backend, count=160)
    migrated = run_cli(["db", "upgrade", "--db", product.db_url], product.env)
    assert migrated.code == 0, migrated.stderr
    # Every request takes 40 ms: the winner holds the lock for seconds, far longer than the
    # gap between the two processes' attempts to take it.
    product.sim.set_faults(latency_s=0.04)
    results = _two_runs_at_once(product)
    assert sorted(results) == [0, EXIT_LOCKED], results
    loser = results[EXIT_LOCKED]
    assert f"program {PROGRAM!r} is locked by" in loser, loser
    assert "lease expires at" in loser, loser
    assert "Traceback" not in loser

    product.sim.clear_faults()
    summary = assert_converged(product, max_applied_patches=1)
    with open_store(product.db_url) as store:
        runs = store.list_runs(PROGRAM)
    # The refused run never started: it recorded nothing.
    assert [r.outcome.value for r in runs if r.mode.value == "live"] == ["completed"], runs
    print(f"\n[two at once, {backend}] {summary}")


@pytest.mark.parametrize("backend", BACKENDS)
def test_two_first_runs_on_a_brand_new_database_do_not_trip_over_the_migration(
    backend: str, make_product: Callable[..., Product]
) -> None:
    """Nobody ran ``db upgrade``: both runs migrate the empty database at the same moment."""
    product = make_product(backend, count=160)
    product.sim.set_faults(latency_s=0.04)
    results = _two_runs_at_once(product)
    assert sorted(results) == [0, EXIT_LOCKED], results


# --- an expired lease -------------------------------------------------------------------------


@pytest.fixture
def sqlite_store(tmp_path: Path) -> Iterator[Store]:
    with Store.open(f"sqlite:///{tmp_path / 'locks.db'}") as store:
        yield store


def test_a_live_lease_is_not_taken_over(sqlite_store: Store) -> None:
    clock = SettableClock(NOW)
    with acquire_program_lock(sqlite_store.engine, PROGRAM, "host-a:1", ttl_s=30, clock=clock):
        clock.advance(29)
        expected = r"locked by 'host-a:1' .*lease expires at 2026-11-25 00:00:30"
        with pytest.raises(LockHeldError, match=expected):
            acquire_program_lock(sqlite_store.engine, PROGRAM, "host-b:2", ttl_s=30, clock=clock)


def test_an_expired_lease_is_taken_over_and_the_old_holders_writes_are_refused(sqlite_store: Store) -> None:
    store, clock = sqlite_store, SettableClock(NOW)
    old = acquire_program_lock(store.engine, PROGRAM, "host-a:1", ttl_s=5, clock=clock)
    old_run = store.start_run(PROGRAM, "live", None, NOW, holder=old.holder, fencing_token=old.fencing_token)
    store.add_decisions(old_run, PROGRAM, [_decision("enr-1")], fencing_token=old.fencing_token)
    (planned,) = store.planned_changes(old_run)

    clock.advance(6)  # host-a stalled past its lease
    new = acquire_program_lock(store.engine, PROGRAM, "host-b:2", ttl_s=5, clock=clock)
    assert new.fencing_token > old.fencing_token

    refused: list[Callable[[], object]] = [
        lambda: store.start_run(PROGRAM, "live", None, NOW, fencing_token=old.fencing_token),
        lambda: store.add_decisions(old_run, PROGRAM, [_decision("enr-2")], fencing_token=old.fencing_token),
        lambda: store.add_decisions(old_run, PROGRAM, [_decision("enr-2")]),  # the run's own token
        lambda: store.mark_in_flight(planned.decision_id, fencing_token=old.fencing_token),
        lambda: store.mark_in_flight(planned.decision_id),
        lambda: store.record_outcome(planned.decision_id, "applied", fencing_token=old.fencing_token),
        lambda: store.supersede([planned.decision_id], "stale", fencing_token=old.fencing_token),
        lambda: store.finish_run(old_run, "completed", {}, fencing_token=old.fencing_token),
        old.renew,
        old.check,
    ]
    for write in refused:
        with pytest.raises(LockHeldError):
            write()
    assert store.decision_by_id(planned.decision_id).change_state.value == "planned"

    old.release()  # the old holder giving up must not free the new holder's lock
    new.check()
    with pytest.raises(LockHeldError, match="host-b:2"):
        acquire_program_lock(store.engine, PROGRAM, "host-c:3", ttl_s=5, clock=clock)
    # The new holder settles what the old one left.
    new_run = store.start_run(PROGRAM, "live", None, NOW, holder=new.holder, fencing_token=new.fencing_token)
    store.supersede([planned.decision_id], "re-planned", fencing_token=new.fencing_token)
    store.finish_run(new_run, "completed", {}, fencing_token=new.fencing_token)
    new.release()


def test_a_lease_taken_over_after_waiting_out_a_short_ttl(sqlite_store: Store) -> None:
    """The same with the real clock: a 0.3 s lease, waited out."""
    old = acquire_program_lock(sqlite_store.engine, PROGRAM, "host-a:1", ttl_s=0.3)
    with pytest.raises(LockHeldError):
        acquire_program_lock(sqlite_store.engine, PROGRAM, "host-b:2", ttl_s=0.3)
    time.sleep(0.4)
    with acquire_program_lock(sqlite_store.engine, PROGRAM, "host-b:2", ttl_s=30) as new:
        assert new.fencing_token == old.fencing_token + 1
        with pytest.raises(LockHeldError):
            old.renew()


def test_a_run_whose_lease_is_taken_over_mid_run_sends_nothing_more(
    make_product: Callable[..., Product],
) -> None:
    """The old holder's next store write is refused, and the outbox records a change before
    it is sent: so a run that lost its lock stops before its first PATCH."""
    product = make_product("sqlite", count=60)
    with Store.open(product.db_url) as store:

        @contextmanager
        def short_lease(program: str, holder: str) -> Iterator[ProgramLock]:
            with acquire_program_lock(store.engine, program, holder, ttl_s=1) as lock:
                yield lock

        def take_over(stage: str, done: int, total: int) -> None:
            if stage == "evaluating" and total and done == total:
                later = datetime.now(UTC) + timedelta(seconds=5)  # the stalled run's lease ran out
                usurper = acquire_program_lock(
                    store.engine, PROGRAM, "usurper:9", ttl_s=60, clock=lambda: later
                )
                taken.append(usurper)

        taken: list[ProgramLock] = []
        api = ApiSettings(
            api_key=Secret(product.sim.config.api_key), base_url=product.sim.base_url, **FAST_API
        )
        with FlipClient(api) as client:
            service = RunService(
                product.policy,
                client,
                store,
                RunSettings(live=True, now=NOW),
                lock_factory=short_lease,
                progress=take_over,
            )
            with pytest.raises(LockHeldError, match="usurper:9"):
                service.run()
        assert taken, "the takeover hook did not run"
        counts = product.sim.request_counts()
        assert counts.get("PATCH", 0) == 0, counts
        assert counts.get("POST", 0) == 0, counts
        taken[0].release()


# --- a dead holder ----------------------------------------------------------------------------


def test_after_a_crash_on_sqlite_the_next_cli_run_takes_over_the_dead_holders_lease(
    make_product: Callable[..., Product],
) -> None:
    """The lease names its holder as host:pid; when that process is gone from this host the
    next run takes the lease at once instead of waiting 300 s for it to expire."""
    product = make_product("sqlite", count=40)
    killed = run_cli(product.run_args(), product.env, entry=crashing_entry("in_flight"))
    assert killed.code == CRASH_EXIT
    again = run_cli(product.run_args(), product.env)
    assert again.code == 0, again.stderr[-800:]
    assert "Traceback" not in again.stderr


def test_a_live_holder_on_this_host_is_never_taken_over(tmp_path: Path) -> None:
    from engine.store import Store, acquire_program_lock

    with Store.open(f"sqlite:///{tmp_path / 'lease.db'}") as store:
        holder = f"{socket.gethostname()}:{os.getppid()}"  # a live process: our parent
        with (
            acquire_program_lock(store.engine, PROGRAM, holder),
            pytest.raises(LockHeldError, match="is locked by"),
        ):
            acquire_program_lock(store.engine, PROGRAM, "other:1")


_LIBRARY_RUN = textwrap.dedent(
    """
    import sys
    from datetime import datetime, UTC
    sys.path.insert(0, "tests")
    from crashing_cli import CrashAt
    from engine.bootstrap import run_policy
    from engine.config import Settings
    from engine.policy.document import load_policy
    from engine.runs.service import RunSettings

    policy_path, db_url, ttl, crash_at, holder = sys.argv[1:6]
    config = Settings.load(db_url=db_url, lock_ttl_s=float(ttl))
    now = datetime(2026, 11, 25, tzinfo=UTC)
    settings = RunSettings(live=True, now=now, holder=holder)
    run_policy(load_policy(policy_path), config, settings, checkpoint=CrashAt(crash_at))
    """
)


def test_a_killed_runs_short_lease_runs_out_and_the_next_run_succeeds_on_sqlite(
    make_product: Callable[..., Product],
) -> None:
    # The killed run names a holder on another host: it looks alive (no dead-holder
    # takeover), so only its lease running out can free the program.
    alive_elsewhere = "build-host-2.example:4242"
    product = make_product("sqlite", count=60)
    killed = subprocess.run(
        [sys.executable, "-c", _LIBRARY_RUN, str(product.policy_path), product.db_url, "3.0", "in_flight:3",
         alive_elsewhere],
        cwd=REPO_ROOT,
        env=cli_environment(product.env),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )  # fmt: skip
    assert killed.returncode == CRASH_EXIT, killed.stderr[-800:]
    with open_store(product.db_url) as store:
        with store.engine.connect() as connection:
            query = select(ProgramLockRow.holder, ProgramLockRow.expires_at)
            ((holder, lease_until),) = connection.execute(query).all()
        assert holder == alive_elsewhere
        if datetime.now(UTC) < lease_until:  # the lease still stands: refused
            with pytest.raises(LockHeldError, match="is locked by"):
                acquire_program_lock(store.engine, PROGRAM, "unit-test:1")
    time.sleep(max(0.0, (lease_until - datetime.now(UTC)).total_seconds() + 0.1))
    again = run_cli(product.run_args(), product.env)
    assert again.code == 0, again.stderr[-800:]
    assert_converged(product)


@pytest.mark.postgres
def test_a_killed_run_does_not_block_the_next_run_on_postgresql(make_product: Callable[..., Product]) -> None:
    product = make_product("postgresql", count=60)
    killed = run_cli(product.run_args(), product.env, entry=crashing_entry("after_patch:3"))
    assert killed.code == CRASH_EXIT, killed.stderr[-800:]
    again = run_cli(product.run_args(), product.env)  # at once: no lease to wait out
    assert again.code == 0, again.stderr[-800:]
    assert_converged(product)
