"""Commands that review a policy change, read-only: diff, backtest, cases.

None of them stores a run or sends a request other than listing the program's enrollments
(only when no ``--input`` is given); ``backtest`` online also reads the store, to leave out
the enrollments whose status this tool applied itself.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine.cli.options import Commands, add_db_option, add_now, flip_status, flip_statuses
from engine.cli.shared import EXIT_FAILED, EXIT_OK, Context, err, out
from engine.clock import utc_now

if TYPE_CHECKING:
    from engine.policy.document import Policy

FORMATS = ("table", "json", "csv", "html")
FORMAT_HELP = "output format; html: one self-contained page (summary, searchable table, explanations)"


def add_diff(commands: Commands) -> None:
    cmd = commands.add_parser(
        "diff",
        help="what a policy edit changes, enrollment by enrollment (read-only)",
        description="Evaluate the new policy and a base policy on the same enrollments at the same "
        "time and show every enrollment they decide differently (status, rule, groups, action or "
        "reason). BASE is a policy file, git:REV (the --rules file at that git revision) or run:N "
        "(the policy stored with run N). Exit 1 with --fail-on-change when anything changed.",
    )
    cmd.add_argument("--rules", type=Path, required=True, metavar="NEW", help="the new policy file")
    cmd.add_argument("--base", required=True, metavar="BASE", help="a policy file, git:REV or run:N")
    _add_source(cmd)
    cmd.add_argument("--format", choices=FORMATS, default="table", help=FORMAT_HELP)
    cmd.add_argument("--fail-on-change", action="store_true",
                     help="exit 1 when any enrollment is decided differently (a CI check)")  # fmt: skip
    cmd.set_defaults(handler=cmd_diff)


def add_backtest(commands: Commands) -> None:
    cmd = commands.add_parser(
        "backtest",
        help="how the policy agrees with the people who decided so far (read-only)",
        description="Evaluate every enrollment a person already decided (current status in "
        "--decided) as if it were still awaiting review, and compare with the person's decision: "
        "agreement, per status, a confusion matrix, each rule's precision, every disagreement. "
        "Online, enrollments whose status this tool applied itself are left out. Exit 1 below "
        "--min-agreement.",
    )
    cmd.add_argument("--rules", type=Path, required=True, metavar="POLICY", help="the policy file")
    _add_source(cmd)
    cmd.add_argument("--as-status", type=flip_status, metavar="S",
                     help="the status each is evaluated with (default: the first in applies_to)")  # fmt: skip
    cmd.add_argument("--decided", type=flip_statuses, metavar="LIST",
                     help="statuses people set (default ACTIVE,REJECTED,NEEDS_ACTION)")  # fmt: skip
    cmd.add_argument("--min-agreement", type=_ratio, metavar="F",
                     help="exit 1 when the agreement (0 to 1) is below F")  # fmt: skip
    cmd.add_argument("--format", choices=FORMATS, default="table", help=FORMAT_HELP)
    cmd.set_defaults(handler=cmd_backtest)


def add_cases(commands: Commands) -> None:
    cmd = commands.add_parser(
        "cases",
        help="policy test cases from real enrollments, ready to paste",
        description="Print test cases (the *.test.yaml case format) for the chosen enrollments: only "
        "the fields the policy reads (never names, email or street address), each expecting the "
        "decision it gets now.",
    )
    cmd.add_argument("--rules", type=Path, required=True, metavar="POLICY", help="the policy file")
    cmd.add_argument("--input", type=Path, required=True, metavar="FILE",
                     help='enrollments JSON, a list or the API answer {"enrollments": [...]}')  # fmt: skip
    cmd.add_argument("--ids", type=_ids, metavar="ID,...", help="only these enrollments, in this order")
    add_now(cmd)
    cmd.set_defaults(handler=cmd_cases)


def _add_source(cmd: argparse.ArgumentParser) -> None:
    cmd.add_argument("--input", type=Path, metavar="FILE",
                     help='enrollments JSON (a list or {"enrollments": [...]}); default: list them '
                     "from the Flip API (FLIP_API_URL, FLIP_API_KEY)")  # fmt: skip
    cmd.add_argument("--program", metavar="P", help="program id to list (default: the policy's program_id)")
    add_now(cmd)
    add_db_option(cmd)


def _ratio(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not an agreement between 0 and 1 (e.g. 0.9)")
    return value


def _ids(text: str) -> list[str]:
    ids = [part.strip() for part in text.split(",") if part.strip()]
    if not ids:
        raise argparse.ArgumentTypeError("--ids needs at least one enrollment id")
    return ids


def _enrollments(args: argparse.Namespace, context: Context, policy: Policy) -> list[Any]:
    """From ``--input``, else listed from the API (read-only)."""
    from engine.flip.files import read_enrollments_file

    if args.input is not None:
        return read_enrollments_file(args.input)
    from engine.bootstrap import list_enrollment_dicts

    return list(list_enrollment_dicts(context.settings, args.program or policy.program_id))


def _source(args: argparse.Namespace, policy: Policy) -> str:
    """Where the enrollments came from, for a report's header."""
    if args.input is not None:
        return str(args.input)
    return f"listed from the Flip API (program {args.program or policy.program_id})"


def cmd_diff(args: argparse.Namespace, context: Context) -> int:
    from engine.bootstrap import load_diff_base
    from engine.policy.document import load_policy
    from engine.render.comparison import render_diff_csv, render_diff_json, render_diff_table
    from engine.runs.diff import diff_policies

    new = load_policy(args.rules)
    base = load_diff_base(context.settings, args.base, args.rules)
    enrollments, now = _enrollments(args, context, new), args.now or utc_now(whole_seconds=True)
    report = diff_policies(base, new, enrollments, now)
    if args.format == "html":
        from engine.render.comparison_html import diff_page
        from engine.render.html import render_page

        source = _source(args, new)
        page = diff_page(report, base, new, enrollments, now, source=source, program_id=args.program)
        out(render_page(page))
    else:
        renderers = {"json": render_diff_json, "csv": render_diff_csv, "table": render_diff_table}
        out(renderers[args.format](report))
    return EXIT_FAILED if args.fail_on_change and report.changed else EXIT_OK


def cmd_backtest(args: argparse.Namespace, context: Context) -> int:
    from engine.policy.document import load_policy
    from engine.render.comparison import render_backtest_csv, render_backtest_json, render_backtest_table
    from engine.runs.backtest import DEFAULT_DECIDED, backtest

    policy = load_policy(args.rules)
    enrollments, now = _enrollments(args, context, policy), args.now or utc_now(whole_seconds=True)
    applied: dict[str, str] = {}
    if args.input is None:
        from engine.bootstrap import applied_by_this_tool

        applied = applied_by_this_tool(context.settings, args.program or policy.program_id)
    report = backtest(
        policy,
        enrollments,
        now,
        decided=args.decided or DEFAULT_DECIDED,
        as_status=args.as_status,
        applied_by_us=applied,
    )
    if args.format == "html":
        from engine.render.comparison_html import backtest_page
        from engine.render.html import render_page

        page = backtest_page(
            report, policy, enrollments, now, source=_source(args, policy), program_id=args.program,
            min_agreement=args.min_agreement, explain_hint=_explain_hint(args, report.as_status),
        )  # fmt: skip
        out(render_page(page))
    elif args.format == "json":
        out(render_backtest_json(report))
    elif args.format == "csv":
        out(render_backtest_csv(report))
    else:
        out(render_backtest_table(report, explain_hint=_explain_hint(args, report.as_status)))
    below = args.min_agreement is not None and report.agreement < args.min_agreement
    if below:
        err(f"agreement {report.agreement:.3f} is below --min-agreement {args.min_agreement:g}")
    return EXIT_FAILED if below else EXIT_OK


def _explain_hint(args: argparse.Namespace, as_status: str) -> str:
    source = f"--input {args.input}" if args.input is not None else "--input FILE"
    return f"`autoapprove explain --rules {args.rules} {source} --as-status {as_status} --id ID`"


def cmd_cases(args: argparse.Namespace, context: Context) -> int:
    from engine.errors import InputError
    from engine.flip.files import read_enrollments_file
    from engine.policy.cases import build_cases
    from engine.policy.document import load_policy
    from engine.render.cases import render_cases_yaml

    policy = load_policy(args.rules)
    enrollments = read_enrollments_file(args.input)
    if args.ids:
        by_id = {str(e.get("id")): e for e in enrollments if isinstance(e, dict)}
        unknown = [i for i in args.ids if i not in by_id]
        if unknown:
            raise InputError(f"{args.input}: no enrollment with id {', '.join(map(repr, unknown))}")
        enrollments = [by_id[i] for i in args.ids]
    now = args.now or utc_now(whole_seconds=True)
    cases = build_cases(policy, enrollments, now)
    if not cases:
        raise InputError(f"{args.input}: no enrollment to make a case of")
    label = f"{args.rules} ({policy.version or 'unversioned'}, {policy.content_hash[:12]})"
    out(render_cases_yaml(cases, now, label))
    return EXIT_OK
