"""The gate every thread of one client waits at before it sends: a 429 pause and a rate limit.

A 429 closes the gate for *all* threads (``pause``); with ``per_second`` set, requests are
spaced at least ``1/per_second`` apart. Clock and sleep are injected.
"""

from __future__ import annotations

import threading
from collections.abc import Callable


class Throttle:
    """What every thread of one client waits for before it sends: a 429 pause and a rate."""

    def __init__(
        self, clock: Callable[[], float], sleep: Callable[[float], None], per_second: float | None
    ) -> None:
        self._clock = clock
        self._sleep = sleep
        self._interval = None if per_second is None else 1.0 / per_second
        self._lock = threading.Lock()
        self._paused_until = float("-inf")
        self._next_slot = float("-inf")

    def pause(self, seconds: float) -> None:
        """Hold every sender for ``seconds`` from now (a later pause wins)."""
        with self._lock:
            self._paused_until = max(self._paused_until, self._clock() + seconds)

    def acquire(self) -> None:
        """Wait until the gate is open and a rate slot is free, then take the slot."""
        while True:
            with self._lock:
                now = self._clock()
                wait = self._paused_until - now
                if wait <= 0:
                    if self._interval is None:
                        return
                    if now >= self._next_slot:
                        self._next_slot = now + self._interval
                        return
                    wait = self._next_slot - now
            self._sleep(wait)
