"""The one wall clock: what time it is, in UTC.

Whatever reads the time takes a ``Clock`` (a callable returning an aware ``datetime``) with
``utc_now`` as its default, so a test passes a clock it can set instead of patching this.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

__all__ = ["Clock", "utc_now"]

Clock = Callable[[], datetime]


def utc_now(*, whole_seconds: bool = False) -> datetime:
    """The current time in UTC; with ``whole_seconds``, without its fraction (the ``now`` a
    policy is evaluated at when none is given: its facts show it to the second)."""
    now = datetime.now(UTC)
    return now.replace(microsecond=0) if whole_seconds else now
