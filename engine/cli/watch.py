"""What an unattended run shows the people and machines watching it: the log format, the
progress display, errors as exit codes, the metrics file and notifications.

Exit codes of several runs (a folder of policies) combine to the most severe, in this
order (``SEVERITY``): 130 interrupted, 2 bad input, 3 key refused, 6 API or database
failure, 5 a safety limit stopped a run, 1 changes failed, 4 a program was locked, 0.
A held lock is the mildest failure: another run is doing the work.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine.cli import shared
from engine.cli.shared import (
    EXIT_ABORTED,
    EXIT_AUTH,
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_LOCKED,
    EXIT_OK,
    EXIT_SERVICE,
    EXIT_USAGE,
)

if TYPE_CHECKING:
    from engine.config import Settings
    from engine.observe.notify import Notifier
    from engine.observe.progress import BarProgress, PeriodicProgress
    from engine.runs.summary import RunSummary

SEVERITY = (
    EXIT_INTERRUPTED,
    EXIT_USAGE,
    EXIT_AUTH,
    EXIT_SERVICE,
    EXIT_ABORTED,
    EXIT_FAILED,
    EXIT_LOCKED,
    EXIT_OK,
)
_log = logging.getLogger("autoapprove.run")


def most_severe(codes: Iterable[int]) -> int:
    """The exit code of several runs: the most severe of theirs (see ``SEVERITY``)."""
    rank = {code: index for index, code in enumerate(SEVERITY)}
    return min(codes, key=lambda code: rank.get(code, 0), default=EXIT_OK)


def exit_code_for(exc: BaseException) -> tuple[int, list[str]]:
    """The exit code of an error and the lines that tell a person about it."""
    from engine import errors

    if isinstance(exc, errors.PolicyError):
        return EXIT_FAILED, [str(problem) for problem in exc.problems]
    # Most specific first: LockHeldError is a StoreError, ApiAuthError an ApiError.
    table: tuple[tuple[type[BaseException], int, str], ...] = (
        (errors.InputError, EXIT_USAGE, "error: "),
        (errors.ApiAuthError, EXIT_AUTH, "error: the Flip API refused the key: "),
        (errors.LockHeldError, EXIT_LOCKED, "error: "),
        (errors.RunAborted, EXIT_ABORTED, "error: nothing was applied: "),
        (errors.ApiError, EXIT_SERVICE, "error: "),
        (errors.StoreError, EXIT_SERVICE, "error: "),
    )
    for kind, code, prefix in table:
        if isinstance(exc, kind):
            return code, [f"{prefix}{exc}"]
    return EXIT_FAILED, [f"error: {exc}"]


def report_error(exc: BaseException, **fields: Any) -> int:
    """Tell about an error on stderr (an ``error`` event in JSON logs); return its exit code."""
    from engine.runs.summary import safe_error_text

    code, lines = exit_code_for(exc)
    if shared.stderr_is_json():
        # Structured and safe: the API's free text may quote personal data.
        shared.event("error", safe_error_text(exc), level=logging.ERROR, exit_code=code,
                     error_type=type(exc).__name__, **fields)  # fmt: skip
    else:
        prefix = f"{fields['program']}: " if fields.get("program") else ""
        for line in lines:
            shared.err(prefix + line)
    return code


def add_watch_options(cmd: argparse.ArgumentParser) -> None:
    cmd.add_argument("--log-format", choices=("text", "json"), metavar="text|json",
                     help="stderr as text lines (default) or one JSON object per line "
                     "(also $AUTOAPPROVE_LOG_FORMAT)")  # fmt: skip
    cmd.add_argument("--metrics-file", type=Path, metavar="PATH",
                     help="write Prometheus metrics (textfile collector format) there "
                     "after each run")  # fmt: skip
    cmd.add_argument("--notify-url", metavar="URL",
                     help="POST a JSON summary there when a run needs a person "
                     "(failed, stopped by a limit, changes held); also $AUTOAPPROVE_NOTIFY_URL")  # fmt: skip
    cmd.add_argument("--notify-always", action="store_true", help="notify after every run")


def configure_output(settings: Settings) -> None:
    """Log lines in the format of the settings (``--log-format``, else
    ``AUTOAPPROVE_LOG_FORMAT``, else text), the key kept out of them."""
    from engine.observe.logs import LogFormat, configure_logging

    log_format = LogFormat(settings.log_format)
    secrets = [settings.api_key.get_secret_value()] if settings.api_key is not None else []
    configure_logging(log_format, sys.stderr, secrets=secrets)
    shared.set_stderr_json(log_format is LogFormat.JSON)


def progress_for(program: str | None, *, bars: bool) -> BarProgress | PeriodicProgress:
    """A tqdm bar on a terminal (``bars``), plain lines otherwise, events in JSON logs."""
    from engine.observe.progress import BarProgress, PeriodicProgress, line_writer, progress_events

    label = f"{program} " if program else ""
    if shared.stderr_is_json():
        context = {"program": program} if program else {}
        return PeriodicProgress(progress_events(logging.getLogger("autoapprove.progress"), **context))
    if bars and sys.stderr.isatty():
        return BarProgress(sys.stderr, label=label)
    return PeriodicProgress(line_writer(sys.stderr, prefix=label.replace(" ", ": ", 1) if label else ""))


@dataclass
class Watchers:
    """Where each finished run is reported: the log, the metrics file, the webhook."""

    metrics_path: Path | None = None
    notifier: Notifier | None = None
    latest: dict[str, RunSummary] = field(default_factory=dict)  # by program

    @classmethod
    def from_args(cls, args: argparse.Namespace, settings: Settings) -> Watchers:
        """Checked before anything runs: a bad path or URL is a usage error up front."""
        from engine.observe.metrics import check_metrics_path
        from engine.observe.notify import Notifier, NotifySettings, check_notify_url

        metrics = getattr(args, "metrics_file", None)
        if metrics is not None:
            check_metrics_path(metrics)
        url = settings.notify_url
        notifier = None
        if url:
            where = "--notify-url" if getattr(args, "notify_url", None) else settings.variable("notify_url")
            notify = NotifySettings(check_notify_url(url, where), always=bool(args.notify_always))
            notifier = Notifier(notify)
        return cls(metrics, notifier)

    def finished(self, summary: RunSummary) -> None:
        self.latest[summary.program_id] = summary
        shared.event(
            "run_finished", summary.describe(), program=summary.program_id, run_id=summary.run_id,
            mode=summary.mode, outcome=summary.outcome, exit_code=summary.exit_code,
            duration_s=round(summary.duration_s, 3), counts=summary.counts(),
        )  # fmt: skip
        if self.notifier is not None:
            self.notifier.notify(summary)

    def round_done(self) -> None:
        """After each round of runs (every program once): the metrics file, atomically."""
        if self.metrics_path is None or not self.latest:
            return
        from engine.observe.metrics import write_metrics

        try:
            write_metrics(self.metrics_path, self.latest.values())
        except OSError as exc:  # never fail the runs for it; say so loudly
            shared.event("metrics_failed", f"could not write {self.metrics_path}: {exc.strerror}",
                         level=logging.ERROR, path=str(self.metrics_path))  # fmt: skip
            if not shared.stderr_is_json():
                shared.err(f"error: could not write the metrics file {self.metrics_path}: {exc.strerror}")
        else:
            shared.event("metrics_written", path=str(self.metrics_path), programs=len(self.latest))

    def close(self) -> None:
        if self.notifier is not None:
            self.notifier.close()
