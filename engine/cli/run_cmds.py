"""``run``: evaluate a file offline, or list, store, preview and apply against the Flip API."""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine.cli.options import (
    Commands,
    add_db_option,
    add_now,
    non_negative_int,
    parse_interval,
    positive_float,
    positive_int,
)
from engine.cli.shared import (
    EXIT_AUTH,
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_USAGE,
    Progress,
    app_config,
    err,
    render_decisions,
    utc_now,
    write_output,
)

if TYPE_CHECKING:
    from engine.policy.decision import Decision
    from engine.policy.document import Policy
    from engine.render.decisions_html import ExplainedDecisions


def add_run(commands: Commands) -> None:
    cmd = commands.add_parser(
        "run",
        help="evaluate enrollments; preview (default) or apply the decisions",
        description="With --input: evaluate a JSON file of enrollments (no network, no database). "
        "Otherwise: list the program's enrollments from the Flip API (FLIP_API_URL, FLIP_API_KEY), "
        "store every decision, and preview them (dry run, the default) or apply them (--live).",
    )
    cmd.add_argument("--rules", type=Path, required=True, metavar="POLICY", help="the policy file")
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
    cmd.add_argument("--concurrency", type=positive_int, default=8, metavar="N",
                     help="concurrent API requests in a live run (default 8)")  # fmt: skip
    cmd.add_argument("--max-rps", type=positive_float, metavar="R",
                     help="never send more than R requests per second")  # fmt: skip
    cmd.add_argument("--no-recheck", action="store_true",
                     help="skip re-reading each enrollment before a change (faster, less safe)")  # fmt: skip
    cmd.add_argument("--lock-ttl", type=positive_float, default=300.0, metavar="S",
                     help="SQLite lease of the program lock in seconds (default 300)")  # fmt: skip
    cmd.add_argument("--crash-at", help=argparse.SUPPRESS)  # test hook: hard exit at a named step
    add_now(cmd)
    add_db_option(cmd)
    cmd.set_defaults(handler=cmd_run)


def cmd_run(args: argparse.Namespace) -> int:
    from engine.errors import InputError
    from engine.policy.document import load_policy

    policy = load_policy(args.rules)
    if args.input is not None:
        if args.live or args.every:
            raise InputError("--input runs are offline previews: --live and --every need the API")
        return _run_offline(args, policy)
    if args.live and not args.yes and not _confirm(policy, args):
        err("not confirmed: nothing was sent")
        return EXIT_USAGE
    return _run_online(args, policy)


def _run_offline(args: argparse.Namespace, policy: Policy) -> int:
    from engine.flip.files import read_enrollments_file
    from engine.policy.evaluator import Evaluator

    enrollments = read_enrollments_file(args.input)
    now = args.now or utc_now()
    evaluator = Evaluator(policy, now, trace=args.format != "html")
    explained = _explained(args, policy, now)
    decisions = []
    for raw in enrollments:
        decision = evaluator.evaluate(raw)
        decisions.append(decision)
        if explained is not None:
            explained(raw, decision)
    page = _Page("Offline preview", "offline preview: nothing sent or stored", now)
    write_output(args.out, _output(args, policy, decisions, explained, page))
    return EXIT_OK


def _explained(args: argparse.Namespace, policy: Policy, now: datetime) -> ExplainedDecisions | None:
    """For ``--format html``: explains each decision as it is made (for the rows' details)."""
    if args.format != "html":
        return None
    from engine.render.decisions_html import ExplainedDecisions

    return ExplainedDecisions(policy, now)


@dataclass(frozen=True)
class _Page:
    """What the HTML report's header says about this run."""

    title: str
    mode: str
    now: datetime
    notes: tuple[str, ...] = ()


def _output(
    args: argparse.Namespace,
    policy: Policy,
    decisions: list[Decision],
    explained: ExplainedDecisions | None,
    page: _Page,
) -> str:
    if explained is None:
        return render_decisions(decisions, policy, args.format, show_unchanged=args.all)
    from engine.render.decisions_html import ReportContext
    from engine.render.html import render_page

    context = ReportContext.for_policy(
        policy, title=page.title, mode=page.mode, program_id=args.program, evaluated_at=page.now
    )
    return render_page(explained.page(context, decisions, notes=page.notes))


def _confirm(policy: Policy, args: argparse.Namespace) -> bool:
    from engine.errors import InputError

    if not sys.stdin.isatty():
        raise InputError("--live outside a terminal needs --yes (unattended runs must say so)")
    url = os.environ.get("FLIP_API_URL", "https://api-utility.flip.energy")
    program = args.program or policy.program_id
    sys.stderr.write(f"Apply the decisions of {args.rules} to program {program} at {url}? [y/N] ")
    sys.stderr.flush()
    return sys.stdin.readline().strip().lower() in ("y", "yes")


def _run_online(args: argparse.Namespace, policy: Policy) -> int:
    import signal
    import threading

    stop = threading.Event()

    def request_stop(signum: int, _frame: Any) -> None:
        err(f"signal {signum}: stopping after the current enrollment")
        stop.set()

    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        while True:
            code = _run_once(args, policy, stop)
            if not args.every or stop.is_set() or code in (EXIT_AUTH, EXIT_USAGE):
                return code
            err(f"next run in {args.every:g} s (Ctrl-C or SIGTERM stops)")
            if stop.wait(args.every):
                return code
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _run_once(args: argparse.Namespace, policy: Policy, stop: Any) -> int:
    from engine.bootstrap import run_policy
    from engine.render.text import render_run_footer
    from engine.runs.service import RunSettings

    now = args.now or utc_now()  # fixed here: the report's explanations use the run's own now
    settings = RunSettings(
        live=args.live,
        now=now,
        max_changes=args.max_changes,
        concurrency=args.concurrency,
        recheck=not args.no_recheck,
        crash_at=args.crash_at,
    )
    explained = _explained(args, policy, now)
    report = run_policy(
        policy, app_config(args), settings, program_id=args.program, progress=Progress(), stop=stop,
        on_evaluated=explained,
    )  # fmt: skip
    footer = render_run_footer(report)
    page = _Page(
        f"Live run {report.run_id}" if report.live else f"Dry-run preview (run {report.run_id})",
        "live: changes sent" if report.live else "dry run: nothing was sent",
        now,
        tuple(line.strip() for line in footer.splitlines()),
    )
    write_output(args.out, _output(args, policy, report.decisions, explained, page))
    err(footer)
    if report.outcome == "interrupted":  # stopped by a signal: not every change was made
        return EXIT_INTERRUPTED
    return EXIT_FAILED if report.failed else EXIT_OK
