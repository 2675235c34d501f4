"""``run``: evaluate a file offline, or list, store, preview and apply against the Flip API."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, TextIO, TypeVar

from engine.cli.options import (
    Commands,
    add_db_option,
    add_now,
    non_negative_int,
    parse_interval,
    positive_float,
    positive_int,
)
from engine.cli.shared import EXIT_OK, Context, err, policy_header
from engine.cli.watch import add_watch_options
from engine.clock import utc_now

if TYPE_CHECKING:
    from engine.policy.decision import Decision
    from engine.policy.document import Policy
    from engine.render.decisions_html import HtmlWriter, ReportContext

Page = TypeVar("Page", bound="HtmlWriter")


def add_run(commands: Commands) -> None:
    cmd = commands.add_parser(
        "run",
        help="evaluate enrollments; preview (default) or apply the decisions",
        description="With --input: evaluate a JSON file of enrollments (no network, no database). "
        "Otherwise: list the program's enrollments from the Flip API (FLIP_API_URL, FLIP_API_KEY), "
        "store the decisions that changed, and preview them (dry run, the default) or apply them "
        "(--live). With a folder, every policy in it (not *.test.yaml): one run per program.",
    )
    cmd.add_argument("--rules", type=Path, required=True, metavar="POLICY|DIR",
                     help="the policy file, or a folder of them (one per program)")  # fmt: skip
    cmd.add_argument(
        "--input", type=Path, metavar="FILE",
        help='offline: enrollments JSON, a list or the API answer {"enrollments": [...]}',
    )  # fmt: skip
    cmd.add_argument("--program", metavar="P", help="program id (default: the policy's program_id)")
    cmd.add_argument("--live", action="store_true", help="send the changes (default: dry run)")
    cmd.add_argument("--yes", action="store_true", help="do not ask before a live run (unattended)")
    cmd.add_argument(
        "--format", choices=("table", "json", "csv", "html"), default="table",
        help="output format; html: one self-contained page (summary, searchable table, explanations)",
    )  # fmt: skip
    cmd.add_argument("--out", type=Path, metavar="FILE", help="write the output to FILE instead of stdout")
    cmd.add_argument("--all", action="store_true", help="table: list unchanged enrollments too")
    cmd.add_argument("--every", type=parse_interval, metavar="INTERVAL",
                     help="repeat every INTERVAL (e.g. 15m, 1h, 30s) until stopped")  # fmt: skip
    cmd.add_argument("--max-changes", type=non_negative_int, metavar="N",
                     help="a live run that needs more than N changes applies nothing")  # fmt: skip
    cmd.add_argument("--concurrency", type=positive_int, metavar="N",
                     help="concurrent API requests of a live run "
                     "(default: $AUTOAPPROVE_CONCURRENCY, else 8)")  # fmt: skip
    cmd.add_argument("--max-rps", type=positive_float, metavar="R",
                     help="never send more than R requests per second")  # fmt: skip
    cmd.add_argument("--no-recheck", action="store_true",
                     help="skip re-reading each enrollment before a change (faster, less safe)")  # fmt: skip
    cmd.add_argument("--lock-ttl", type=positive_float, metavar="S",
                     help="SQLite lease of the program lock, seconds "
                     "(default: $AUTOAPPROVE_LOCK_TTL_S, else 300)")  # fmt: skip
    cmd.add_argument("--parallel", type=positive_int, default=1, metavar="N",
                     help="with a folder: N programs at a time (default 1, one after another)")  # fmt: skip
    add_watch_options(cmd)
    add_now(cmd)
    add_db_option(cmd)
    cmd.set_defaults(handler=cmd_run)


def cmd_run(args: argparse.Namespace, context: Context) -> int:
    from engine.cli.program_runs import run_online
    from engine.errors import InputError
    from engine.policy.document import load_policy

    if args.input is not None:
        if args.live or args.every:
            raise InputError("--input runs are offline previews: --live and --every need the API")
        if args.rules.is_dir():
            raise InputError("--input evaluates one policy: give a policy file, not a folder")
        return _run_offline(args, load_policy(args.rules))
    return run_online(args, context)


def _run_offline(args: argparse.Namespace, policy: Policy) -> int:
    """Evaluate a file; each decision is written as it is decided, none is kept."""
    from engine.flip.files import read_enrollments_file
    from engine.policy.coverage import HitCounter
    from engine.policy.evaluator import Evaluator
    from engine.render.coverage import render_hits
    from engine.render.stream import decision_writer

    enrollments = read_enrollments_file(args.input)
    now = args.now or utc_now(whole_seconds=True)
    if args.format == "html":
        evaluator = Evaluator(policy, now, trace=False)  # the report explains each decision itself
        from engine.render.decisions_html import HtmlWriter

        context = report_context(
            args, policy, now, "Offline preview", "offline preview: nothing sent or stored"
        )

        def make(stream: TextIO) -> HtmlWriter:
            return HtmlWriter(stream, policy, now, context)

        with html_report(args.out, make) as page:
            for raw in enrollments:
                page(raw, evaluator.evaluate(raw))
        return EXIT_OK
    evaluator = Evaluator(policy, now)
    hits = HitCounter(policy)
    with output_file(args.out) as stream:
        writer = decision_writer(args.format, stream, policy_header(policy), show_unchanged=args.all)
        for raw in enrollments:
            decision = evaluator.evaluate(raw)
            writer.write(decision)
            hits.add(decision)
        writer.close()
        if args.format == "table":
            stream.write(f"\n{render_hits(hits.hits())}\n")
    return EXIT_OK


def report_context(
    args: argparse.Namespace, policy: Policy, now: datetime, title: str, mode: str
) -> ReportContext:
    """The HTML report's header (a run's title is set again at its end, once its id is known)."""
    from engine.render.decisions_html import ReportContext

    return ReportContext.for_policy(policy, title=title, mode=mode, program_id=args.program, evaluated_at=now)


def discard(_decision: Decision) -> None:
    """The decision sink of a run whose HTML report takes each decision with its enrollment
    (``on_evaluated``, to explain it): with a sink, the run keeps no list of decisions."""


@contextmanager
def html_report(path: Path | None, make: Callable[[TextIO], Page]) -> Iterator[Page]:
    """An HTML report (``make(stream)``: an ``HtmlWriter``) written as the decisions come, into
    ``path`` or stdout, and closed when the block ends (see ``output_file``)."""
    with output_file(path) as stream, _abandoned_on_error(make(stream)) as page:
        yield page
        page.close()


@contextmanager
def output_file(path: Path | None) -> Iterator[TextIO]:
    """stdout, or a stream into ``path`` (``--out``): written beside it and renamed over it
    when the block ends, so never half a file, and left as it was when the command fails."""
    from engine.errors import InputError

    if path is None:
        yield sys.stdout
        sys.stdout.flush()
        return
    partial = path.with_name(f"{path.name}.tmp")
    try:
        stream = open(partial, "w", encoding="utf-8")  # noqa: SIM115 - closed below
    except OSError as exc:
        raise InputError(f"{path}: cannot write the output: {exc.strerror or exc}") from exc
    try:
        with stream:
            yield stream
        os.replace(partial, path)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    err(f"wrote {path}")


@contextmanager
def _abandoned_on_error(page: Page) -> Iterator[Page]:
    try:
        yield page
    except BaseException:
        page.abandon()
        raise
