"""The lease keeper on its own: when it renews a program lock's lease, and when it does not.

The run service's tests (``test_run_service.py``) show the lease kept through each long
stage of a run; these pin the schedule: every 60 s for a lease that does not expire, a third
of what is left of a short one, and counted from the last renewal.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from engine.runs.lease import LeaseKeeper

from .fakes import FakeClock, StillLock


def keeper(expires_in_s: float | None) -> tuple[LeaseKeeper, StillLock, FakeClock]:
    """A keeper of a lock whose lease runs out in ``expires_in_s`` (``None``: never)."""
    clock = FakeClock()
    clock.advance(1000.0)  # intervals count from the keeper's start, not from zero
    expires_at = None if expires_in_s is None else datetime.now(UTC) + timedelta(seconds=expires_in_s)
    lock = StillLock(expires_at)
    return LeaseKeeper(lock, clock), lock, clock


def renewals_at(lease: LeaseKeeper, lock: StillLock, clock: FakeClock, *after_s: float) -> list[int]:
    """The lock's renewal count after ``keep`` at each of the times ``after_s`` (from now)."""
    start = clock()
    counts = []
    for at in after_s:
        clock.advance(start + at - clock())
        lease.keep()
        counts.append(lock.renewals)
    return counts


def test_a_lease_that_does_not_expire_is_renewed_every_minute() -> None:
    lease, lock, clock = keeper(None)

    assert renewals_at(lease, lock, clock, 0.0, 59.5, 60.0, 60.5, 119.5, 120.0) == [0, 0, 1, 1, 1, 2]


def test_a_short_lease_is_renewed_after_a_third_of_it() -> None:
    lease, lock, clock = keeper(30.0)  # a few microseconds less by the time the keeper reads it

    assert renewals_at(lease, lock, clock, 9.9, 10.0, 19.9, 20.0) == [0, 1, 1, 2]


def test_a_long_lease_is_still_renewed_every_minute() -> None:
    lease, lock, clock = keeper(3600.0)

    assert renewals_at(lease, lock, clock, 59.5, 60.0) == [0, 1]


def test_a_lease_about_to_run_out_is_renewed_at_once() -> None:
    lease, lock, clock = keeper(-5.0)  # already past: renew at the first step, 0.1 s on

    assert renewals_at(lease, lock, clock, 0.05, 0.1) == [0, 1]


def test_the_interval_counts_from_the_last_renewal() -> None:
    """A late step renews once; the next renewal is a full interval after that one."""
    lease, lock, clock = keeper(None)

    assert renewals_at(lease, lock, clock, 100.0, 159.5, 160.0) == [1, 1, 2]


def test_without_a_lock_nothing_is_renewed_however_long_it_takes() -> None:
    clock = FakeClock()
    lease = LeaseKeeper(None, clock)
    clock.advance(3600.0)

    lease.keep()  # a dry run holds no lock: nothing to renew, nothing raised

    assert list(lease.renewing(["a", "b", "c"])) == ["a", "b", "c"]


def test_renewing_keeps_the_lease_as_the_items_are_consumed() -> None:
    lease, lock, clock = keeper(None)
    seen = []

    for item in lease.renewing(["a", "b", "c"]):
        seen.append((item, lock.renewals))
        clock.advance(60.0)  # each item takes a minute to consume

    assert seen == [("a", 0), ("b", 1), ("c", 2)]
