"""What one program's run came to, as ids and counts only: what logs, metrics and
notifications are made of.

A summary never carries enrollment data, the API key or the API's free-text messages: its
``message`` is the run service's own wording (circuit-breaker reasons, ``HTTP 503`` and the
like), or the name of the failure when the run never started.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from engine.clock import utc_now
from engine.errors import ApiError, InputError, LockHeldError, PolicyError, RunAborted, StoreError
from engine.policy.decision import Action
from engine.runs.report import RunReport
from engine.runs.states import ChangeState, NotStarted, RunMode, RunOutcome

__all__ = ["RunSummary", "safe_error_text"]


def safe_error_text(exc: BaseException) -> str:
    """A description of a failure fit for logs and notifications.

    An API error with an HTTP status is named by status and code only: the API's message may
    quote personal data. Errors without a status (connection refused, timeout, malformed
    answer) carry only the client's own words. Anything unexpected is named by its type.
    """
    if isinstance(exc, ApiError):
        if exc.status_code is None:
            return str(exc)
        code = f" {exc.code}" if exc.code else ""
        return f"Flip API error: HTTP {exc.status_code}{code}"
    if isinstance(exc, LockHeldError | RunAborted | InputError | PolicyError):
        return str(exc)  # our own words: a lock holder, a limit, a file name or setting
    if isinstance(exc, StoreError):
        # A driver's text may quote a statement and its values: name the failure only.
        return "the decision store failed"
    return type(exc).__name__


@dataclass(frozen=True)
class RunSummary:
    """One program's run: who, how it ended, how long it took and what it counted."""

    program_id: str
    outcome: RunOutcome | NotStarted
    exit_code: int
    live: bool
    run_id: int | None = None
    started_at: datetime = field(default_factory=utc_now)
    duration_s: float = 0.0
    decisions: Mapping[str, int] = field(default_factory=dict)  # by action
    changes: Mapping[ChangeState, int] = field(default_factory=dict)
    unchanged: int = 0
    message: str | None = None

    @property
    def mode(self) -> RunMode:
        return RunMode.LIVE if self.live else RunMode.DRY_RUN

    @property
    def enrollments(self) -> int:
        return sum(self.decisions.values())

    @property
    def finished_at(self) -> datetime:
        return self.started_at + timedelta(seconds=self.duration_s)

    @classmethod
    def from_report(cls, report: RunReport, exit_code: int) -> RunSummary:
        """The summary of a run the service started (``RunReport``), finished or not."""
        return cls(
            program_id=report.program_id,
            outcome=report.outcome,
            exit_code=exit_code,
            live=report.live,
            run_id=report.run_id,
            started_at=report.started_at,
            duration_s=report.duration_s,
            decisions=dict(report.action_counts),
            changes={state: n for state, n in report.change_states.items() if n},
            unchanged=report.unchanged,
            message=report.message,
        )

    @classmethod
    def not_started(
        cls, program_id: str, exc: BaseException, exit_code: int, *, live: bool, started_at: datetime
    ) -> RunSummary:
        """A run that failed before the service recorded it (its lock was held, say)."""
        outcome = NotStarted.LOCKED if isinstance(exc, LockHeldError) else NotStarted.ERROR
        duration = max((utc_now() - started_at).total_seconds(), 0.0)
        return cls(
            program_id=program_id,
            outcome=outcome,
            exit_code=exit_code,
            live=live,
            started_at=started_at,
            duration_s=duration,
            message=safe_error_text(exc),
        )

    def counts(self) -> dict[str, Any]:
        """The counts as plain JSON: decisions by action, changes by state, unchanged."""
        return {
            "enrollments": self.enrollments,
            "decisions": dict(sorted(self.decisions.items())),
            "changes": dict(sorted(self.changes.items())),
            "unchanged": self.unchanged,
        }

    def describe(self) -> str:
        """One line for people: a chat message, a log line."""
        run = f"run {self.run_id}" if self.run_id is not None else "run"
        mode = RunMode.LIVE.value if self.live else "dry"
        parts = [f"{self.program_id}: {mode} {run} {self.outcome}"]
        if self.enrollments:
            parts.append(f"{self.enrollments} enrollments, {self.decisions.get(Action.UPDATE, 0)} to change")
        if self.changes:
            parts.append(", ".join(f"{state} {n}" for state, n in sorted(self.changes.items())))
        if self.message:
            parts.append(self.message)
        return "; ".join(parts)
