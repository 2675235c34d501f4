"""Progress of a run's stages (listing, evaluating, applying) for whoever is watching.

The run service reports ``(stage, done, total)``; ``total`` is 0 when it is not known (a
first listing) and an estimate may replace it later. Three renderings:

* :class:`BarProgress` on a terminal: a tqdm bar per stage with count, rate and ETA;
* :class:`PeriodicProgress` elsewhere: a plain line (or, with JSON logs, a ``progress``
  event) at most every few seconds and when a stage ends, never bar text in a log.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TextIO

from tqdm import tqdm

from engine.observe.logs import log_event
from engine.runs.states import Stage

__all__ = ["BarProgress", "PeriodicProgress", "ProgressSnapshot", "line_writer", "progress_events"]

_UNITS: dict[str, str] = {Stage.APPLYING: "changes"}
_DEFAULT_UNIT = "enrollments"


def _unit(stage: str) -> str:
    return _UNITS.get(stage, _DEFAULT_UNIT)


@dataclass(frozen=True)
class ProgressSnapshot:
    """Where one stage stands: counts, the rate so far and the time left when it is known."""

    stage: str
    done: int
    total: int
    elapsed_s: float

    @property
    def unit(self) -> str:
        return _unit(self.stage)

    @property
    def rate(self) -> float:
        return self.done / self.elapsed_s if self.elapsed_s > 0 else 0.0

    @property
    def eta_s(self) -> float | None:
        if self.total <= 0 or self.rate <= 0:
            return None
        return max(self.total - self.done, 0) / self.rate

    @property
    def finished(self) -> bool:
        return self.total > 0 and self.done >= self.total

    def line(self) -> str:
        count = f"{self.done}/{self.total}" if self.total > 0 else str(self.done)
        percent = f" ({self.done * 100 // self.total}%)" if self.total > 0 else ""
        eta = f", ETA {self.eta_s:.0f}s" if self.eta_s is not None and not self.finished else ""
        return f"{self.stage}: {count} {self.unit}{percent}, {self.rate:.0f}/s{eta}"


class PeriodicProgress:
    """Emits a snapshot at a stage's start, at most every ``every_s`` seconds, and at its end."""

    def __init__(
        self,
        emit: Callable[[ProgressSnapshot], None],
        *,
        every_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.emit = emit
        self.every_s = every_s
        self.clock = clock
        self.stage: str | None = None
        self.started = 0.0
        self.emitted_at = 0.0
        self.last: ProgressSnapshot | None = None

    def __call__(self, stage: str, done: int, total: int) -> None:
        now = self.clock()
        if stage != self.stage:
            self.stage, self.started, self.emitted_at = stage, now, float("-inf")
        snapshot = ProgressSnapshot(stage, done, total, now - self.started)
        if snapshot.finished or now - self.emitted_at >= self.every_s:
            if snapshot != self.last:
                self.emit(snapshot)
            self.emitted_at, self.last = now, snapshot

    def close(self) -> None:
        """Nothing is buffered; here for the same interface as :class:`BarProgress`."""


def line_writer(stream: TextIO, prefix: str = "") -> Callable[[ProgressSnapshot], None]:
    """Plain lines on ``stream`` (a log file, a pipe), each after ``prefix`` (a program id)."""

    def write(snapshot: ProgressSnapshot) -> None:
        stream.write(prefix + snapshot.line() + "\n")
        stream.flush()

    return write


def progress_events(logger: logging.Logger, **context: Any) -> Callable[[ProgressSnapshot], None]:
    """``progress`` events with stage, done, total, rate and ETA as fields (JSON logs),
    plus ``context`` (the program id)."""

    def write(snapshot: ProgressSnapshot) -> None:
        eta = snapshot.eta_s
        log_event(
            logger,
            "progress",
            snapshot.line(),
            stage=snapshot.stage,
            done=snapshot.done,
            total=snapshot.total or None,
            unit=snapshot.unit,
            rate_per_s=round(snapshot.rate, 1),
            eta_s=None if eta is None else round(eta, 1),
            elapsed_s=round(snapshot.elapsed_s, 3),
            **context,
        )

    return write


class BarProgress:
    """A tqdm bar per stage on a terminal: count, rate and (when the total is known) ETA."""

    def __init__(self, stream: TextIO, *, label: str = "", mininterval_s: float = 0.2) -> None:
        self.stream = stream
        self.label = label
        self.mininterval_s = mininterval_s
        self.stage: str | None = None
        self.bar: tqdm[Any] | None = None
        self.finished: tuple[str, int] | None = None

    def __call__(self, stage: str, done: int, total: int) -> None:
        if (stage, done) == self.finished:
            return  # the same end reported twice: the bar is already closed
        bar = self.bar
        if stage != self.stage or bar is None:
            self.close()
            self.stage = stage
            bar = self.bar = tqdm(
                desc=f"{self.label}{stage:<10}",
                total=total or None,
                unit=f" {_unit(stage)}",
                file=self.stream,
                mininterval=self.mininterval_s,
                dynamic_ncols=True,
                leave=True,
            )
        retotal = (total or None) != bar.total
        if retotal:
            bar.total = total or None  # an estimate became known, or was passed and dropped
        if done > bar.n:
            bar.update(done - bar.n)
        if retotal:
            bar.refresh()
        if total and done >= total:
            self.close()
            self.finished = (stage, done)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        self.stage = None
