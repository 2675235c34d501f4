"""The metrics file: Prometheus text format for node_exporter's textfile collector.

Written atomically (prometheus-client's ``write_to_textfile``: a temporary file beside it,
then a rename) at the end of each run, with every program of the invocation in one file, so
the collector never reads half a file and a folder run's programs are scraped together.
Labels carry program ids, actions, change states and outcomes only.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from prometheus_client import CollectorRegistry, Gauge, write_to_textfile

from engine.errors import InputError
from engine.policy.decision import Action
from engine.runs.states import ChangeState, NotStarted, RunOutcome
from engine.runs.summary import RunSummary

__all__ = ["OUTCOMES", "build_registry", "check_metrics_path", "write_metrics"]

# Every outcome gets a series (1 for the last run's, 0 for the others), so an alert on
# ``autoapprove_last_run_outcome{outcome="failed"} == 1`` never meets an absent series.
OUTCOMES = (*(outcome for outcome in RunOutcome if outcome != RunOutcome.RUNNING), *NotStarted)
# Change states every live run can end in; others (planned, in flight) appear when present.
REPORTED_CHANGE_STATES = (
    ChangeState.APPLIED, ChangeState.RECOVERED, ChangeState.SUPERSEDED, ChangeState.HELD,
    ChangeState.DEFERRED, ChangeState.FAILED_RETRYABLE, ChangeState.FAILED_PERMANENT,
)  # fmt: skip


def build_registry(summaries: Iterable[RunSummary]) -> CollectorRegistry:
    """The gauges of each program's latest run (the last summary per program wins)."""
    latest = {summary.program_id: summary for summary in summaries}
    registry = CollectorRegistry()
    timestamp = Gauge("autoapprove_last_run_timestamp_seconds", "When the last run ended (Unix time).",
                      ["program"], registry=registry)  # fmt: skip
    duration = Gauge("autoapprove_last_run_duration_seconds", "How long the last run took.",
                     ["program"], registry=registry)  # fmt: skip
    decisions = Gauge("autoapprove_last_run_decisions", "Decisions of the last run by action.",
                      ["program", "action"], registry=registry)  # fmt: skip
    unchanged = Gauge("autoapprove_last_run_unchanged", "Enrollments whose decision did not change.",
                      ["program"], registry=registry)  # fmt: skip
    changes = Gauge("autoapprove_last_run_changes", "Changes of the last run by final state.",
                    ["program", "state"], registry=registry)  # fmt: skip
    outcome = Gauge("autoapprove_last_run_outcome", "1 for how the last run ended, 0 otherwise.",
                    ["program", "outcome"], registry=registry)  # fmt: skip
    exit_code = Gauge("autoapprove_last_run_exit_code", "The exit code of the last run alone.",
                      ["program"], registry=registry)  # fmt: skip
    for program, summary in sorted(latest.items()):
        timestamp.labels(program).set(summary.finished_at.timestamp())
        duration.labels(program).set(summary.duration_s)
        for action in Action:
            decisions.labels(program, action.value).set(summary.decisions.get(action.value, 0))
        unchanged.labels(program).set(summary.unchanged)
        for state in sorted({*REPORTED_CHANGE_STATES, *summary.changes}):
            changes.labels(program, state).set(summary.changes.get(state, 0))
        for name in sorted({*OUTCOMES, summary.outcome}):
            outcome.labels(program, name).set(1 if name == summary.outcome else 0)
        exit_code.labels(program).set(summary.exit_code)
    return registry


def check_metrics_path(path: Path) -> None:
    """Refuse a metrics file whose folder does not exist, before anything runs."""
    if path.is_dir():
        raise InputError(f"--metrics-file {path}: is a folder; name a file (e.g. autoapprove.prom)")
    if not path.parent.is_dir():
        raise InputError(f"--metrics-file {path}: the folder {path.parent} does not exist")


def write_metrics(path: Path, summaries: Iterable[RunSummary]) -> None:
    """Replace ``path`` atomically with the metrics of ``summaries``."""
    write_to_textfile(str(path), build_registry(summaries))
