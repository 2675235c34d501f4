"""Keeping a program lock's lease alive through a long run.

A SQLite program lock is a lease that expires (``--lock-ttl``); a run that takes longer than
the lease renews it as it works, or another run may take the program over and its writes are
refused. PostgreSQL's advisory lock does not expire: its ``expires_at`` is ``None``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime
from typing import TypeVar

from engine.runs.ports import ProgramLockLike

__all__ = ["LeaseKeeper", "MonotonicClock"]

MonotonicClock = Callable[[], float]  # seconds, for intervals only
T = TypeVar("T")


class LeaseKeeper:
    """Renews the program lock's lease well before it expires during a long run.

    ``keep`` is cheap (one clock read) and is called at every step of every long stage:
    listing and evaluating, reconciling, storing and sending. Without a lock it does nothing.
    """

    def __init__(
        self, lock: ProgramLockLike | None, clock: MonotonicClock = time.monotonic, every_s: float = 60.0
    ) -> None:
        expires_at = lock.expires_at if lock is not None else None
        if expires_at is not None:  # renew well before a short lease runs out
            remaining = (expires_at - datetime.now(UTC)).total_seconds()
            every_s = min(every_s, max(remaining / 3, 0.1))
        self.lock = lock
        self.clock = clock
        self.every_s = every_s
        self.last = clock()

    def keep(self) -> None:
        """Renew the lease when it is due."""
        if self.lock is not None and self.clock() - self.last >= self.every_s:
            self.lock.renew()
            self.last = self.clock()

    def renewing(self, items: Iterable[T]) -> Iterator[T]:
        """``items``, keeping the lease as they are consumed (the store consumes a batch
        before it opens the batch's transaction, so no renewal happens inside one)."""
        for item in items:
            self.keep()
            yield item
