"""Commands for policy authors: validate, test, explain, schema."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from engine.cli.options import Commands, add_db_option, add_now, flip_status
from engine.cli.shared import (
    DEFAULT_RULES_DIR,
    EXIT_FAILED,
    EXIT_OK,
    Context,
    err,
    out,
    policy_files,
)
from engine.clock import utc_now


def add_validate(commands: Commands) -> None:
    cmd = commands.add_parser("validate", help="check policy files: errors and warnings",
                              description="Check policy files (or folders of them).")  # fmt: skip
    cmd.add_argument("paths", nargs="*", type=Path, metavar="PATH", help="files or folders (default: rules/)")
    cmd.add_argument("--strict", action="store_true", help="treat warnings as errors")
    cmd.set_defaults(handler=cmd_validate)


def add_test(commands: Commands) -> None:
    cmd = commands.add_parser("test", help="run policy test files (*.test.yaml)",
                              description="Run policy test files and report pass/fail per case.")  # fmt: skip
    cmd.add_argument("paths", nargs="*", type=Path, metavar="PATH", help="files or folders (default: rules/)")
    cmd.add_argument("-v", "--verbose", action="store_true", help="list passing cases too")
    cmd.add_argument("--coverage", action="store_true",
                     help="also report which rules and sub-conditions the cases exercised")  # fmt: skip
    cmd.add_argument("--min-coverage", type=_percent, metavar="PCT",
                     help="with --coverage: exit 1 when coverage is below PCT percent")  # fmt: skip
    cmd.add_argument("--format", choices=("text", "json"), default="text", help="output format")
    cmd.set_defaults(handler=cmd_test)


def _percent(text: str) -> float:
    try:
        value = float(text.rstrip("%"))
    except ValueError:
        value = -1.0
    if not 0 <= value <= 100:
        raise argparse.ArgumentTypeError(f"{text!r} is not a percentage between 0 and 100")
    return value


def add_explain(commands: Commands) -> None:
    cmd = commands.add_parser(
        "explain",
        help="explain why enrollments get their decision",
        description="With --rules and --input: each rule in order, what it read, what decided it. "
        "With ENROLLMENT_ID alone: the latest stored decision for that enrollment.",
    )
    cmd.add_argument("stored_id", nargs="?", metavar="ENROLLMENT_ID", help="explain the stored decision")
    cmd.add_argument("--rules", type=Path, metavar="POLICY", help="the policy file")
    cmd.add_argument("--input", type=Path, metavar="FILE", help="enrollments JSON file")
    cmd.add_argument("--id", dest="enrollment_id", metavar="ENROLLMENT_ID", help="only this enrollment")
    cmd.add_argument("--as-status", type=flip_status, metavar="S",
                     help="as if its status were S (as backtest evaluates decided ones)")  # fmt: skip
    add_now(cmd)
    add_db_option(cmd)
    cmd.set_defaults(handler=cmd_explain)


def add_schema(commands: Commands) -> None:
    cmd = commands.add_parser("schema", help="print the JSON Schema of policy files",
                              description="Print the JSON Schema of policy files.")  # fmt: skip
    cmd.set_defaults(handler=cmd_schema)


def cmd_validate(args: argparse.Namespace, context: Context) -> int:
    from engine.errors import PolicyError
    from engine.policy.document import load_policy
    from engine.policy.lint import lint_policy

    files = policy_files(args.paths)
    errors = warnings = 0
    for path in files:
        try:
            policy = load_policy(path)
        except PolicyError as exc:
            errors += len(exc.problems)
            for problem in exc.problems:
                out(str(problem))
            continue
        problems = lint_policy(policy)
        warnings += len(problems)
        for problem in problems:
            out(str(problem))
        rules, groups = len(policy.rules), len(policy.groups)
        out(f"{path}: ok ({rules} rules, {groups} group rules, {len(problems)} warnings)")
    out(f"{len(files)} files, {errors} errors, {warnings} warnings")
    return EXIT_FAILED if errors or (args.strict and warnings) else EXIT_OK


def cmd_test(args: argparse.Namespace, context: Context) -> int:
    from engine.errors import PolicyError
    from engine.policy.coverage import CoverageSet
    from engine.policy.paths import find_policy_files
    from engine.policy.testfile import run_test_file
    from engine.render.coverage import render_coverage, render_test_json
    from engine.render.text import render_test_results

    files = find_policy_files(list(args.paths) or [DEFAULT_RULES_DIR], tests=True)
    if not files:
        err("no *.test.yaml files found")
        return EXIT_FAILED
    coverage = CoverageSet() if args.coverage or args.min_coverage is not None else None
    results = []
    problems: list[str] = []
    for path in files:
        try:
            results.append(run_test_file(path, coverage))
        except PolicyError as exc:
            problems += [str(problem) for problem in exc.problems]
    broken = len(problems)
    report = coverage.report() if coverage is not None else None
    if args.format == "json":
        for problem in problems:
            err(problem)  # stdout stays one JSON document
        out(render_test_json(results, report, broken))
    else:
        for problem in problems:
            out(problem)
        out(render_test_results(results, verbose=args.verbose))
        if report is not None:
            out(render_coverage(report))  # the percentage is the last line
    failed = broken or any(r.failed for r in results)
    below = report is not None and args.min_coverage is not None and report.percent < args.min_coverage
    if below and report is not None:
        err(f"coverage {report.percent:.1f}% is below --min-coverage {args.min_coverage:g}%")
    return EXIT_FAILED if failed or below else EXIT_OK


def cmd_explain(args: argparse.Namespace, context: Context) -> int:
    from engine.errors import InputError

    if args.stored_id and not (args.rules or args.input):
        return _explain_stored(args, context)
    if not (args.rules and args.input):
        raise InputError("explain needs --rules and --input, or an ENROLLMENT_ID of a stored decision")
    return _explain_file(args)


def _explain_file(args: argparse.Namespace) -> int:
    from engine.errors import InputError
    from engine.flip.files import read_enrollments_file
    from engine.policy.document import load_policy
    from engine.policy.explain import explain
    from engine.render.text import render_explanation

    policy = load_policy(args.rules)
    enrollments = read_enrollments_file(args.input)
    wanted = args.enrollment_id or args.stored_id
    if wanted:
        enrollments = [e for e in enrollments if isinstance(e, dict) and e.get("id") == wanted]
        if not enrollments:
            raise InputError(f"{args.input}: no enrollment with id {wanted!r}")
    now = args.now or utc_now(whole_seconds=True)
    if args.as_status:
        enrollments = [{**e, "status": args.as_status} if isinstance(e, dict) else e for e in enrollments]
    for raw in enrollments:
        out(render_explanation(explain(policy, raw, now)))
        out("")
    return EXIT_OK


def _explain_stored(args: argparse.Namespace, context: Context) -> int:
    from engine.bootstrap import explain_stored
    from engine.render.text import render_explanation, render_stored_decision

    found = explain_stored(context.settings, args.stored_id)
    out(render_stored_decision(found.record, found.version))
    if found.replay is not None:
        since = "unchanged" if found.facts_unchanged else "CHANGED"
        out(f"\nReplayed with the stored policy at the stored time; the facts it reads are {since} since:")
        out(render_explanation(found.replay))
    elif found.note:
        out(f"  ({found.note})")
    return EXIT_OK


def cmd_schema(args: argparse.Namespace, context: Context) -> int:
    from engine.policy.document import policy_json_schema

    out(json.dumps(policy_json_schema(), indent=2))
    return EXIT_OK
