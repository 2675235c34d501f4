"""A monotonic clock that only moves when someone sleeps: waits cost no real time."""

from __future__ import annotations

import threading
from collections.abc import Callable


class FakeTime:
    """A monotonic clock that only moves when someone sleeps; every sleep is recorded.

    ``on_sleep`` (if set) runs at the start of each sleep, before the clock moves.
    """

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []
        self.on_sleep: Callable[[float], None] | None = None
        self._lock = threading.Lock()

    def monotonic(self) -> float:
        with self._lock:
            return self.now

    def sleep(self, seconds: float) -> None:
        with self._lock:
            self.sleeps.append(seconds)
        if self.on_sleep is not None:
            self.on_sleep(seconds)
        with self._lock:
            self.now += seconds
