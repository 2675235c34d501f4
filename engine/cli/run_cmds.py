"""``run``: evaluate a file offline, or list, store, preview and apply against the Flip API."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from engine.cli.options import (
    Commands,
    add_db_option,
    add_now,
    non_negative_int,
    parse_interval,
    positive_float,
    positive_int,
)
from engine.cli.shared import EXIT_OK, Context, render_decisions, write_output
from engine.cli.watch import add_watch_options
from engine.clock import utc_now

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
    cmd.add_argument("--crash-at", help=argparse.SUPPRESS)  # test hook: hard exit at a named step
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
    from engine.flip.files import read_enrollments_file
    from engine.policy.evaluator import Evaluator

    enrollments = read_enrollments_file(args.input)
    now = args.now or utc_now(whole_seconds=True)
    evaluator = Evaluator(policy, now, trace=args.format != "html")
    explained = explained_for(args, policy, now)
    decisions = []
    for raw in enrollments:
        decision = evaluator.evaluate(raw)
        decisions.append(decision)
        if explained is not None:
            explained(raw, decision)
    page = HtmlPage("Offline preview", "offline preview: nothing sent or stored", now)
    write_output(args.out, html_or_text(args, policy, decisions, explained, page))
    return EXIT_OK


def explained_for(args: argparse.Namespace, policy: Policy, now: datetime) -> ExplainedDecisions | None:
    """For ``--format html``: explains each decision as it is made (for the rows' details)."""
    if args.format != "html":
        return None
    from engine.render.decisions_html import ExplainedDecisions

    return ExplainedDecisions(policy, now)


@dataclass(frozen=True)
class HtmlPage:
    """What the HTML report's header says about this run."""

    title: str
    mode: str
    now: datetime
    notes: tuple[str, ...] = ()


def html_or_text(
    args: argparse.Namespace,
    policy: Policy,
    decisions: list[Decision],
    explained: ExplainedDecisions | None,
    page: HtmlPage,
) -> str:
    if explained is None:
        return render_decisions(decisions, policy, args.format, show_unchanged=args.all)
    from engine.render.decisions_html import ReportContext
    from engine.render.html import render_page

    context = ReportContext.for_policy(
        policy, title=page.title, mode=page.mode, program_id=args.program, evaluated_at=page.now
    )
    return render_page(explained.page(context, decisions, notes=page.notes))
