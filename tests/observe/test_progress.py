"""Progress: a tqdm bar with count, rate and ETA on a terminal; periodic plain lines or
``progress`` events otherwise, throttled by an injected clock."""

from __future__ import annotations

import io
import json
import logging

from engine.observe.logs import LogFormat, configure_logging
from engine.observe.progress import (
    BarProgress,
    PeriodicProgress,
    ProgressSnapshot,
    line_writer,
    progress_events,
)


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_snapshot_rate_eta_and_line() -> None:
    snap = ProgressSnapshot("evaluating", 2500, 10000, 2.0)
    assert snap.rate == 1250
    assert snap.eta_s == 6.0
    assert snap.line() == "evaluating: 2500/10000 enrollments (25%), 1250/s, ETA 6s"
    unknown = ProgressSnapshot("listing", 300, 0, 3.0)
    assert unknown.eta_s is None
    assert unknown.line() == "listing: 300 enrollments, 100/s"
    assert ProgressSnapshot("applying", 5, 5, 1.0).line() == "applying: 5/5 changes (100%), 5/s"


def test_periodic_lines_at_start_every_interval_and_at_the_end() -> None:
    clock, seen = Clock(), []
    progress = PeriodicProgress(seen.append, every_s=5.0, clock=clock)
    for done in range(0, 101, 10):
        progress("evaluating", done, 100)
        clock.t += 1.0
    assert [s.done for s in seen] == [0, 50, 100]  # t=0, t=5, and the last one
    progress("applying", 0, 3)  # a new stage starts its own clock
    assert seen[-1].stage == "applying"
    assert seen[-1].elapsed_s == 0


def test_the_final_count_is_not_repeated() -> None:
    clock, seen = Clock(), []
    progress = PeriodicProgress(seen.append, every_s=5.0, clock=clock)
    progress("evaluating", 10, 10)
    progress("evaluating", 10, 10)
    assert len(seen) == 1


def test_plain_lines_on_a_stream() -> None:
    out, clock = io.StringIO(), Clock()
    progress = PeriodicProgress(line_writer(out), clock=clock)
    progress("listing", 0, 0)
    clock.t += 6
    progress("listing", 600, 0)
    assert out.getvalue().splitlines() == ["listing: 0 enrollments, 0/s", "listing: 600 enrollments, 100/s"]


def test_progress_events_in_json_logs() -> None:
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    out, clock = io.StringIO(), Clock()
    try:
        configure_logging(LogFormat.JSON, out)
        progress = PeriodicProgress(progress_events(logging.getLogger("autoapprove.progress")), clock=clock)
        progress("evaluating", 0, 1000)
        clock.t += 5
        progress("evaluating", 500, 1000)
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
    events = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [e["event"] for e in events] == ["progress", "progress"]
    last = events[-1]
    assert (last["stage"], last["done"], last["total"], last["rate_per_s"], last["eta_s"]) == (
        "evaluating", 500, 1000, 100.0, 5.0,
    )  # fmt: skip
    assert "\r" not in out.getvalue()  # no bar text in a log


def test_bar_shows_count_rate_and_eta() -> None:
    out = io.StringIO()
    bar = BarProgress(out, mininterval_s=0)
    bar("evaluating", 0, 200)
    bar("evaluating", 100, 200)
    text = out.getvalue()
    assert "100/200" in text
    assert "enrollments/s" in text or "s/ enrollments" in text  # the rate
    assert "<" in text  # tqdm's "elapsed<remaining"
    bar("evaluating", 200, 200)
    bar("applying", 1, 4)
    bar.close()
    text = out.getvalue()
    assert "200/200" in text
    assert "changes" in text


def test_bar_without_a_total_counts_and_takes_a_late_estimate() -> None:
    out = io.StringIO()
    bar = BarProgress(out, mininterval_s=0)
    bar("listing", 50, 0)
    assert "50" in out.getvalue()
    bar("listing", 60, 120)
    assert "60/120" in out.getvalue()
    bar.close()


def test_a_stage_reported_finished_twice_draws_one_bar() -> None:
    out = io.StringIO()
    bar = BarProgress(out, mininterval_s=0)
    bar("storing", 10, 10)
    bar("storing", 10, 10)
    bar.close()
    assert out.getvalue().count("\n") == 1  # one bar (each bar ends its line once)
