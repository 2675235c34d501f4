"""Saved plans and the review queue: plan, apply, review (approve, reject)."""

from __future__ import annotations

import argparse
import sys
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
from engine.cli.shared import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_USAGE,
    Context,
    err,
    out,
    render_decisions,
    write_output,
)
from engine.cli.watch import progress_for
from engine.clock import utc_now

if TYPE_CHECKING:
    from engine.observe.progress import BarProgress, PeriodicProgress
    from engine.policy.document import Policy
    from engine.runs.plans import PlanDocument
    from engine.runs.report import RunReport
    from engine.runs.service import RunSettings

FORMATS = ("table", "json", "csv", "html")


def add_plan(commands: Commands) -> None:
    cmd = commands.add_parser(
        "plan",
        help="evaluate like a dry run and save the changes as a plan to review and apply",
        description="List and evaluate the program's enrollments like a dry run, preview the "
        "decisions and save the changes as a plan in the store (apply it with: autoapprove apply ID).",
    )
    cmd.add_argument("--rules", type=Path, required=True, metavar="POLICY|DIR",
                     help="the policy file, or a folder of them (one plan per program)")  # fmt: skip
    cmd.add_argument("--program", metavar="P", help="program id (default: the policy's program_id)")
    cmd.add_argument("--out", type=Path, metavar="FILE", help="also write the plan as a JSON file")
    cmd.add_argument(
        "--format", choices=FORMATS, default="table",
        help="preview format; html: one self-contained page (summary, searchable table, explanations)",
    )  # fmt: skip
    cmd.add_argument(
        "--report", type=Path, metavar="FILE", help="write the preview to FILE instead of stdout"
    )
    cmd.add_argument("--all", action="store_true", help="table: list unchanged enrollments too")
    cmd.add_argument(
        "--max-rps", type=positive_float, metavar="R", help="never send more than R requests per second"
    )
    add_now(cmd)
    add_db_option(cmd)
    cmd.set_defaults(handler=cmd_plan)


def add_apply(commands: Commands) -> None:
    cmd = commands.add_parser(
        "apply",
        help="apply a saved plan exactly (drifted changes are recorded stale, not sent)",
        description="Apply exactly the changes of a saved plan (a plan id or a plan file) through "
        "the outbox: re-read before each PATCH; an enrollment that changed since planning is not "
        "sent and is recorded stale. A plan applies at most once.",
    )
    cmd.add_argument("plan", metavar="PLAN", help="a plan id or a plan file (autoapprove plan --out)")
    cmd.add_argument("--yes", action="store_true", help="do not ask for confirmation (automation)")
    cmd.add_argument("--max-age", type=parse_interval, default=86400.0, metavar="DURATION",
                     help="refuse a plan older than this (default 24h)")  # fmt: skip
    cmd.add_argument("--by", metavar="NAME", help="who applies it (default: the OS user); counts as approval")
    cmd.add_argument("--program", metavar="P", help="refuse the plan unless it is for this program")
    _add_send_options(cmd)
    cmd.set_defaults(handler=cmd_apply)


def add_review(commands: Commands) -> None:
    cmd = commands.add_parser(
        "review",
        help="the review queue: changes waiting for a person's approval",
        description="List the changes waiting for approval (the policy's review.require_approval and "
        "rules with approval: required), or approve or reject them.",
    )
    cmd.add_argument("--program", metavar="P", help="only this program")
    cmd.add_argument(
        "--format", choices=FORMATS, default="table",
        help="output format; html: one self-contained page (summary, searchable table, explanations)",
    )  # fmt: skip
    cmd.add_argument("--out", type=Path, metavar="FILE", help="write the output to FILE instead of stdout")
    add_db_option(cmd)
    cmd.set_defaults(handler=cmd_review)
    actions = cmd.add_subparsers(title="actions", metavar="ACTION")
    approve = actions.add_parser(
        "approve", help="approve waiting changes and send them at once",
        description="Approve waiting changes and send them at once through the outbox (each is "
        "re-read first; one that drifted is recorded stale and not sent).",
    )  # fmt: skip
    approve.add_argument(
        "ids", nargs="*", type=positive_int, metavar="ID", help="change ids (autoapprove review)"
    )
    approve.add_argument("--all", action="store_true", help="every waiting change (of --program)")
    approve.add_argument("--program", metavar="P", help="with --all: only this program")
    approve.add_argument("--by", required=True, metavar="NAME", help="who approves (recorded)")
    approve.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    _add_send_options(approve)
    approve.set_defaults(handler=cmd_review_approve)
    reject = actions.add_parser(
        "reject", help="refuse waiting changes (nothing is sent)",
        description="Refuse waiting changes: nothing is sent, and the change is not proposed again "
        "until the enrollment's facts or the policy change.",
    )  # fmt: skip
    reject.add_argument("ids", nargs="+", type=positive_int, metavar="ID", help="change ids")
    reject.add_argument("--by", required=True, metavar="NAME", help="who refuses (recorded)")
    reject.add_argument("--note", metavar="TEXT", help="why (recorded and shown by history)")
    add_db_option(reject)
    reject.set_defaults(handler=cmd_review_reject)


def _add_send_options(cmd: argparse.ArgumentParser) -> None:
    cmd.add_argument("--max-changes", type=non_negative_int, metavar="N",
                     help="apply nothing when more than N changes would be sent")  # fmt: skip
    cmd.add_argument("--concurrency", type=positive_int, metavar="N",
                     help="concurrent API requests (default: $AUTOAPPROVE_CONCURRENCY, else 8)")  # fmt: skip
    cmd.add_argument(
        "--max-rps", type=positive_float, metavar="R", help="never send more than R requests per second"
    )
    cmd.add_argument("--lock-ttl", type=positive_float, metavar="S",
                     help="SQLite lease of the program lock, seconds "
                     "(default: $AUTOAPPROVE_LOCK_TTL_S, else 300)")  # fmt: skip
    add_db_option(cmd)


def cmd_plan(args: argparse.Namespace, context: Context) -> int:
    from engine.cli.program_runs import load_jobs
    from engine.cli.watch import most_severe, report_error
    from engine.runs.batch import run_programs

    folder = args.rules.is_dir()
    if folder and (args.out is not None or args.report is not None):
        raise _input_error("--out and --report write one plan: give a policy file, not a folder")
    if args.out is not None and args.out.suffix.lower() in (".html", ".htm"):
        raise _input_error(
            f"--out {args.out}: --out is the plan's JSON file; write the HTML report with "
            "--format html --report FILE (or on stdout)"
        )
    jobs = load_jobs(args)  # a folder: one plan per program, duplicates refused up front
    results = run_programs(jobs, lambda job: _plan_one(args, context, job.policy))
    codes = [
        EXIT_OK
        if r.error is None
        else report_error(r.error, **({"program": r.job.program_id} if folder else {}))
        for r in results
    ]
    return most_severe(codes)


def _plan_one(args: argparse.Namespace, context: Context, policy: Policy) -> RunReport:
    from engine.bootstrap import plan_document_of, run_policy
    from engine.render.text import render_run_footer
    from engine.runs.service import RunSettings

    config = context.settings
    now = args.now or utc_now(whole_seconds=True)  # fixed here: explanations use the run's now
    settings = RunSettings(plan=True, now=now)
    progress = progress_for(None, bars=True)
    if args.format == "html":
        report, document = _plan_html(args, context, policy, now, settings=settings, progress=progress)
    else:
        report = run_policy(
            policy, config, settings, program_id=args.program, progress=progress,
            checkpoint=context.checkpoint,
        )  # fmt: skip
        document = plan_document_of(config, report.plan_id or 0)
        write_output(
            args.report, render_decisions(report.decisions, policy, args.format, show_unchanged=args.all)
        )
    plan_id = document.plan_id
    err(render_run_footer(report))
    if args.out is not None:
        try:
            args.out.write_text(document.to_json(), encoding="utf-8")
        except OSError as exc:
            raise _input_error(f"{args.out}: cannot write the plan file: {exc.strerror or exc}") from exc
        err(
            f"plan written to {args.out} ({len(document.changes)} changes, checksum {document.checksum[:19]})"
        )
    saved = f"Plan {plan_id} saved; apply it with: autoapprove apply {plan_id}"
    (out if args.format == "table" and args.report is None else err)(saved)
    return report


def _plan_html(
    args: argparse.Namespace,
    context: Context,
    policy: Policy,
    now: datetime,
    *,
    settings: RunSettings,
    progress: BarProgress | PeriodicProgress,
) -> tuple[RunReport, PlanDocument]:
    """Plan, writing its report as the decisions come (into ``--report FILE`` or stdout)."""
    from dataclasses import replace

    from engine.bootstrap import plan_document_of, run_policy
    from engine.cli.run_cmds import discard, html_report, report_context
    from engine.render.review_html import PlanFacts, PlanHtmlWriter
    from engine.render.text import render_run_footer

    config = context.settings
    header = report_context(args, policy, now, "Plan", "plan: nothing was sent")
    with html_report(args.report, lambda stream: PlanHtmlWriter(stream, policy, now, header)) as page:
        report = run_policy(policy, config, settings, program_id=args.program, progress=progress,
                            on_evaluated=page, on_decision=discard,
                            checkpoint=context.checkpoint)  # fmt: skip
        document = plan_document_of(config, report.plan_id or 0)
        # The plan's id and creation time are known now: the header and cards are written last.
        page.context = replace(page.context, title=f"Plan {document.plan_id}", program_id=document.program_id)
        page.notes = tuple(line.strip() for line in render_run_footer(report).splitlines() if line.strip())
        page.plan = PlanFacts(document.plan_id, document.api_url, datetime.fromisoformat(document.created_at))
    return report, document


def cmd_apply(args: argparse.Namespace, context: Context) -> int:
    from datetime import timedelta

    from engine.bootstrap import review_applier
    from engine.render.text import render_apply_report, render_plan_summary
    from engine.runs.plans import parse_plan_argument

    target = parse_plan_argument(args.plan)
    max_age = timedelta(seconds=args.max_age)
    by = args.by or _os_user()
    with review_applier(
        context.settings, _send_settings(args, context), progress=progress_for(None, bars=True),
        checkpoint=context.checkpoint,
    ) as applier:  # fmt: skip
        document = applier.check_plan(target, max_age=max_age, program_id=args.program)
        summary = render_plan_summary(document)
        if not args.yes and not _ask(
            f"{summary}\nApply plan {document.plan_id} at {document.api_url}? [y/N] "
        ):
            err("not confirmed: nothing was sent")
            return EXIT_USAGE
        report = applier.apply_plan(target, by=by, max_age=max_age)
    err(render_apply_report(report))
    return EXIT_FAILED if report.failed else EXIT_OK


def cmd_review(args: argparse.Namespace, context: Context) -> int:
    from engine.bootstrap import review_queue

    queue = review_queue(context.settings, args.program, with_policies=args.format == "html")
    if args.format == "html":
        from engine.render.html import render_page
        from engine.render.review_html import review_page

        generated_at = utc_now(whole_seconds=True)
        page = review_page(queue.changes, queue.policies, generated_at=generated_at, program_id=args.program)
        write_output(args.out, render_page(page))
    else:
        from engine.render.text import render_review_queue

        write_output(args.out, render_review_queue(queue.changes, args.format))
    return EXIT_OK


def cmd_review_approve(args: argparse.Namespace, context: Context) -> int:
    from engine.bootstrap import review_applier
    from engine.render.text import render_apply_report, render_review_queue

    if bool(args.ids) == bool(args.all):
        raise _input_error("review approve needs change ids or --all (not both)")
    with review_applier(
        context.settings, _send_settings(args, context), progress=progress_for(None, bars=True),
        checkpoint=context.checkpoint,
    ) as applier:  # fmt: skip
        records = applier.waiting_for(args.ids or None, args.program)
        if not records:
            err("no change is waiting for approval")
            return EXIT_OK
        table = render_review_queue(records, "table")
        if not args.yes and not _ask(
            f"{table}\nApprove and send these {len(records)} change(s) as {args.by}? [y/N] "
        ):
            err("not confirmed: nothing was sent")
            return EXIT_USAGE
        report = applier.approve(records, by=args.by)
    err(render_apply_report(report))
    return EXIT_FAILED if report.failed else EXIT_OK


def cmd_review_reject(args: argparse.Namespace, context: Context) -> int:
    from engine.bootstrap import review_applier
    from engine.runs.service import RunSettings

    with review_applier(context.settings, RunSettings()) as applier:
        records = applier.waiting_for(args.ids, None)
        refused = applier.refuse(records, by=args.by, note=args.note)
    err(f"{refused} change(s) refused by {args.by}; nothing was sent")
    return EXIT_OK


def _send_settings(args: argparse.Namespace, context: Context) -> RunSettings:
    from engine.runs.service import RunSettings

    return RunSettings(
        live=True,
        max_changes=args.max_changes,
        concurrency=context.settings.concurrency,
    )


def _ask(question: str) -> bool:
    if not sys.stdin.isatty():
        raise _input_error("outside a terminal this needs --yes (unattended runs must say so)")
    sys.stderr.write(question)
    sys.stderr.flush()
    return sys.stdin.readline().strip().lower() in ("y", "yes")


def _input_error(message: str) -> Exception:
    from engine.errors import InputError

    return InputError(message)


def _os_user() -> str:
    import getpass

    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"
