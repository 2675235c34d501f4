"""``run`` against the Flip API: one policy file, or every policy of a folder, once or
``--every`` interval; decisions stream to stdout as they are decided, and each finished run
goes to the log, the metrics file and the webhook (``engine.cli.watch``).

A folder runs one program after another (or ``--parallel N`` at a time), each under its own
lock; a failure or a held lock ends only that program's run. For a folder, ``--format json``
is one array of every program's decisions and ``--format csv`` one table, each with a
``program_id`` field; the text table lists each program's changes (only its summary with
``--parallel``, where rows of several programs would interleave).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, TextIO

from engine.cli.shared import (
    EXIT_AUTH,
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_USAGE,
    Context,
    err,
    policy_files,
    policy_header,
)
from engine.cli.watch import Watchers, most_severe, progress_for, report_error

if TYPE_CHECKING:
    from engine.observe.progress import BarProgress, PeriodicProgress
    from engine.policy.decision import Decision
    from engine.policy.document import Policy
    from engine.render.stream import DecisionWriter
    from engine.runs.batch import ProgramJob, ProgramResult
    from engine.runs.report import RunReport
    from engine.runs.service import RunSettings


def load_jobs(args: argparse.Namespace) -> list[ProgramJob]:
    """Every policy to run, loaded and checked before anything runs."""
    from engine.errors import InputError
    from engine.policy.document import load_policy
    from engine.runs.batch import ProgramJob, check_unique_programs

    folder = args.rules.is_dir()
    paths = policy_files([args.rules]) if folder else [args.rules]
    if folder and not paths:
        raise InputError(f"{args.rules}: no policy files (*.yaml, not *.test.yaml) in this folder")
    if folder and args.program:
        raise InputError("--program names one program: give a policy file, not a folder")
    if folder and getattr(args, "format", None) == "html":
        raise InputError("--format html makes one program's page: give a policy file, not a folder")
    jobs = [ProgramJob(path, load_policy(path)) for path in paths]
    check_unique_programs(jobs)
    return jobs


def confirm(jobs: list[ProgramJob], args: argparse.Namespace, context: Context) -> bool:
    from engine.errors import InputError

    if not sys.stdin.isatty():
        raise InputError("--live outside a terminal needs --yes (unattended runs must say so)")
    url = context.settings.api_url  # the one resolution of the URL: what the client will use
    programs = ", ".join(args.program or job.program_id for job in jobs)
    sys.stderr.write(f"Apply the decisions of {args.rules} to program(s) {programs} at {url}? [y/N] ")
    sys.stderr.flush()
    return sys.stdin.readline().strip().lower() in ("y", "yes")


@contextmanager
def _stop_on_signals() -> Iterator[threading.Event]:
    stop = threading.Event()

    def request_stop(signum: int, _frame: FrameType | None) -> None:
        err(f"signal {signum}: stopping after the current enrollment")
        stop.set()

    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield stop
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def run_online(args: argparse.Namespace, context: Context) -> int:
    jobs = load_jobs(args)
    watchers = Watchers.from_args(args, context.settings)
    if args.live and not args.yes and not confirm(jobs, args, context):
        err("not confirmed: nothing was sent")
        return EXIT_USAGE
    try:
        with _stop_on_signals() as stop:
            while True:
                code = _round(args, context, jobs, watchers, stop)
                if not args.every or stop.is_set() or code in (EXIT_AUTH, EXIT_USAGE):
                    return code
                err(f"next run in {args.every:g} s (Ctrl-C or SIGTERM stops)")
                if stop.wait(args.every):
                    return code
    finally:
        watchers.close()


def _round(
    args: argparse.Namespace,
    context: Context,
    jobs: list[ProgramJob],
    watchers: Watchers,
    stop: threading.Event,
) -> int:
    """Every program once; the exit code is the most severe of their runs."""
    from engine.runs.batch import run_programs

    parallel = min(args.parallel, len(jobs))
    output = _Output(args, folder=args.rules.is_dir(), parallel=parallel > 1)
    # Every run the service recorded reports here, a failed one too (its partial counts).
    reports: dict[Path, RunReport] = {}

    def run_one(job: ProgramJob) -> RunReport:
        def on_finish(report: RunReport) -> None:
            reports[job.path] = report

        return _run_one(args, context, job, output, stop=stop, on_finish=on_finish)

    results = run_programs(jobs, run_one, parallel=parallel, stop=stop)
    output.close()
    codes = [_finish(result, reports.get(result.job.path), args, watchers) for result in results]
    watchers.round_done()
    return most_severe(codes)


def _run_one(
    args: argparse.Namespace,
    context: Context,
    job: ProgramJob,
    output: _Output,
    *,
    stop: threading.Event,
    on_finish: Callable[[RunReport], None],
) -> RunReport:
    from engine.bootstrap import run_policy
    from engine.runs.service import RunSettings

    settings = RunSettings(
        live=args.live,
        now=args.now,
        max_changes=args.max_changes,
        concurrency=context.settings.concurrency,
        recheck=not args.no_recheck,
    )
    program = args.program or job.program_id
    progress = progress_for(program if output.folder else None, bars=not output.parallel)
    if args.format == "html":  # one self-contained page, written as the decisions come
        try:
            return _run_html(
                args, context, job, settings=settings, progress=progress, stop=stop, on_finish=on_finish
            )
        finally:
            progress.close()
    writer = output.writer_for(job.policy, program)
    completed = False
    try:
        report = run_policy(
            job.policy, context.settings, settings, program_id=args.program,
            progress=progress, stop=stop, on_decision=writer.write, on_finish=on_finish,
            checkpoint=context.checkpoint,
        )  # fmt: skip
        completed = True
        return report
    finally:
        progress.close()
        output.done(writer, completed=completed)


def _run_html(
    args: argparse.Namespace,
    context: Context,
    job: ProgramJob,
    *,
    settings: RunSettings,
    progress: BarProgress | PeriodicProgress,
    stop: threading.Event,
    on_finish: Callable[[RunReport], None],
) -> RunReport:
    from dataclasses import replace

    from engine.bootstrap import run_policy
    from engine.cli.run_cmds import discard, html_report, report_context
    from engine.clock import utc_now
    from engine.render.decisions_html import HtmlWriter
    from engine.render.text import render_run_footer

    now = args.now or utc_now(whole_seconds=True)  # fixed here: explanations use the run's now
    mode = "live: changes sent" if args.live else "dry run: nothing was sent"
    header = report_context(args, job.policy, now, "Live run" if args.live else "Dry-run preview", mode)
    with html_report(args.out, lambda stream: HtmlWriter(stream, job.policy, now, header)) as page:
        report = run_policy(
            job.policy, context.settings, replace(settings, now=now), program_id=args.program,
            progress=progress, stop=stop, on_evaluated=page, on_decision=discard, on_finish=on_finish,
            checkpoint=context.checkpoint,
        )  # fmt: skip
        # The run's id and footer are known now: the header and notes are written last.
        title = f"Live run {report.run_id}" if report.live else f"Dry-run preview (run {report.run_id})"
        page.context = replace(page.context, title=title)
        page.notes = tuple(line.strip() for line in render_run_footer(report).splitlines())
    return report


def _finish(
    result: ProgramResult[RunReport], recorded: RunReport | None, args: argparse.Namespace, watchers: Watchers
) -> int:
    """Tell about one program's run (footer or error, then the watchers); its exit code."""
    from engine.render.text import render_run_footer
    from engine.runs.states import RunOutcome
    from engine.runs.summary import RunSummary

    program = args.program or result.job.program_id
    folder = args.rules.is_dir()
    if result.error is not None:
        code = report_error(result.error, **({"program": program} if folder else {}))
    elif result.report is not None and result.report.outcome == RunOutcome.INTERRUPTED:
        code = EXIT_INTERRUPTED  # stopped by a signal: not every change was made
    else:
        code = EXIT_FAILED if result.report is not None and result.report.failed else EXIT_OK
    if result.report is not None:
        err(render_run_footer(result.report))
    if recorded is not None:
        summary = RunSummary.from_report(recorded, code)
    else:  # stopped before the service recorded a run (its lock was held, say)
        assert result.error is not None
        summary = RunSummary.not_started(
            program, result.error, code, live=args.live, started_at=result.started_at
        )
    watchers.finished(summary)
    return code


class _Output:
    """Where decisions go: one writer per program, or one shared by a folder's programs."""

    def __init__(self, args: argparse.Namespace, *, folder: bool, parallel: bool) -> None:
        self.format = args.format
        self.show_unchanged = args.all
        self.folder = folder
        self.parallel = parallel
        self.lock = threading.Lock()
        self.shared: DecisionWriter | None = None
        self.path: Path | None = getattr(args, "out", None)
        self.stream: TextIO = sys.stdout
        if self.path is not None and self.format != "html":
            # Written beside the target and renamed over it at the end: never half a file.
            from engine.errors import InputError

            try:
                self.stream = open(f"{self.path}.tmp", "w", encoding="utf-8")  # noqa: SIM115 - closed by close()
            except OSError as exc:
                raise InputError(f"{self.path}: cannot write the output: {exc.strerror or exc}") from exc

    def writer_for(self, policy: Policy, program: str) -> _Writer:
        from engine.render.stream import TableWriter, decision_writer

        if self.format == "table":
            header = policy_header(policy)
            rows = not self.parallel
            table = TableWriter(self.stream, header, show_unchanged=self.show_unchanged, rows=rows)
            return _Writer(table, self.lock, program=None, own=True)
        if not self.folder:
            return _Writer(decision_writer(self.format, self.stream, ""), self.lock, program=None, own=True)
        with self.lock:
            if self.shared is None:
                self.shared = decision_writer(self.format, self.stream, "", program_column=True)
        return _Writer(self.shared, self.lock, program=program, own=False)

    def done(self, writer: _Writer, *, completed: bool) -> None:
        """A program's own writer ends with its run (a failed run's output is left as it
        stopped: no summary pretends it finished)."""
        if writer.own and completed:
            with self.lock:
                writer.inner.close()

    def close(self) -> None:
        if self.shared is not None:
            self.shared.close()
        if self.stream is not sys.stdout and self.path is not None:
            self.stream.close()
            os.replace(f"{self.path}.tmp", self.path)
            err(f"wrote {self.path}")


class _Writer:
    """One program's decisions into a (maybe shared) writer, a whole decision at a time."""

    def __init__(
        self, inner: DecisionWriter, lock: threading.Lock, *, program: str | None, own: bool
    ) -> None:
        self.inner, self.lock, self.program, self.own = inner, lock, program, own

    def write(self, decision: Decision) -> None:
        with self.lock:
            self.inner.write(decision, program=self.program)
