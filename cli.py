"""The ``autoapprove`` command: the only place that prints, reads the environment and exits.

Exit codes (also in the README):
  0  success
  1  policy errors, failing policy tests, or live changes that failed
  2  usage or input errors (bad arguments, unreadable or malformed files)
  3  the Flip API refused the key (401/403)
  4  another run holds this program's lock
  5  a safety limit stopped a live run before anything was applied
  6  the Flip API or the database failed (after retries)
  130 interrupted
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from engine.decision import Decision
    from engine.policy import Policy

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_AUTH = 3
EXIT_LOCKED = 4
EXIT_ABORTED = 5
EXIT_SERVICE = 6
EXIT_INTERRUPTED = 130

DEFAULT_RULES_DIR = Path("rules")


class _Parser(argparse.ArgumentParser):
    """argparse with our exit code for usage errors (argparse's own is also 2)."""


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Callable[[argparse.Namespace], int] | None = getattr(args, "handler", None)
    if handler is None:
        parser.print_help()
        return EXIT_USAGE
    return _run_handler(handler, args)


def _run_handler(handler: Callable[[argparse.Namespace], int], args: argparse.Namespace) -> int:
    from engine import errors

    try:
        return handler(args)
    except errors.PolicyError as exc:
        for problem in exc.problems:
            _err(str(problem))
        return EXIT_FAILED
    except errors.InputError as exc:
        _err(f"error: {exc}")
        return EXIT_USAGE
    except errors.ApiAuthError as exc:
        _err(f"error: the Flip API refused the key: {exc}")
        return EXIT_AUTH
    except errors.LockHeldError as exc:
        _err(f"error: {exc}")
        return EXIT_LOCKED
    except errors.RunAborted as exc:
        _err(f"error: nothing was applied: {exc}")
        return EXIT_ABORTED
    except (errors.ApiError, errors.StoreError) as exc:
        _err(f"error: {exc}")
        return EXIT_SERVICE
    except errors.AutoapproveError as exc:
        _err(f"error: {exc}")
        return EXIT_FAILED
    except KeyboardInterrupt:
        _err("interrupted")
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        return EXIT_OK


def _out(text: str) -> None:
    sys.stdout.write(text if text.endswith("\n") else text + "\n")


def _err(text: str) -> None:
    sys.stderr.write(text if text.endswith("\n") else text + "\n")


# --- parser -------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="autoapprove",
        description="Rule-based auto-approval of Flip utility program enrollments.",
        epilog="Exit codes: 0 ok, 1 policy/test/apply failures, 2 usage or input errors, "
        "3 API key refused, 4 program locked by another run, 5 safety limit, 6 API or "
        "database failure, 130 interrupted.",
    )
    commands = parser.add_subparsers(title="commands", metavar="COMMAND")
    _add_validate(commands)
    _add_test(commands)
    _add_explain(commands)
    _add_run(commands)
    _add_schema(commands)
    return parser


def _add_validate(commands: Any) -> None:
    cmd = commands.add_parser("validate", help="check policy files: errors and warnings",
                              description="Check policy files (or folders of them).")  # fmt: skip
    cmd.add_argument("paths", nargs="*", type=Path, metavar="PATH", help="files or folders (default: rules/)")
    cmd.add_argument("--strict", action="store_true", help="treat warnings as errors")
    cmd.set_defaults(handler=cmd_validate)


def _add_test(commands: Any) -> None:
    cmd = commands.add_parser("test", help="run policy test files (*.test.yaml)",
                              description="Run policy test files and report pass/fail per case.")  # fmt: skip
    cmd.add_argument("paths", nargs="*", type=Path, metavar="PATH", help="files or folders (default: rules/)")
    cmd.add_argument("-v", "--verbose", action="store_true", help="list passing cases too")
    cmd.set_defaults(handler=cmd_test)


def _add_explain(commands: Any) -> None:
    cmd = commands.add_parser("explain", help="explain why enrollments get their decision",
                              description="Each rule in order, what it read, what decided it.")  # fmt: skip
    cmd.add_argument("--rules", type=Path, required=True, metavar="POLICY", help="the policy file")
    cmd.add_argument("--input", type=Path, required=True, metavar="FILE", help="enrollments JSON file")
    cmd.add_argument("--id", dest="enrollment_id", metavar="ENROLLMENT_ID", help="only this enrollment")
    _add_now(cmd)
    cmd.set_defaults(handler=cmd_explain)


def _add_run(commands: Any) -> None:
    cmd = commands.add_parser("run", help="evaluate enrollments and preview the decisions",
                              description="Evaluate a file of enrollments and print the decisions. "
                              "No network, no database in this mode.")  # fmt: skip
    cmd.add_argument("--rules", type=Path, required=True, metavar="POLICY", help="the policy file")
    cmd.add_argument("--input", type=Path, required=True, metavar="FILE",
                     help='enrollments JSON: a list, or the API answer {"enrollments": [...]}')  # fmt: skip
    cmd.add_argument("--format", choices=("table", "json", "csv"), default="table", help="output format")
    cmd.add_argument("--all", action="store_true", help="table: list unchanged enrollments too")
    _add_now(cmd)
    cmd.set_defaults(handler=cmd_run)


def _add_schema(commands: Any) -> None:
    cmd = commands.add_parser("schema", help="print the JSON Schema of policy files",
                              description="Print the JSON Schema of policy files.")  # fmt: skip
    cmd.set_defaults(handler=cmd_schema)


def _add_now(cmd: argparse.ArgumentParser) -> None:
    cmd.add_argument("--now", type=parse_now, metavar="TS",
                     help="evaluation time, ISO 8601 (default: the current UTC time)")  # fmt: skip


def parse_now(text: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an ISO 8601 time (e.g. 2026-11-25T00:00:00Z)"
        ) from exc
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


# --- policy author commands ----------------------------------------------------------------


def _policy_files(paths: list[Path]) -> list[Path]:
    from engine.errors import InputError

    found: list[Path] = []
    for path in paths or [DEFAULT_RULES_DIR]:
        if path.is_dir():
            found.extend(p for p in sorted(path.rglob("*.yaml")) if not p.name.endswith(".test.yaml"))
        elif path.exists():
            found.append(path)
        else:
            raise InputError(f"{path}: no such file or folder")
    return found


def cmd_validate(args: argparse.Namespace) -> int:
    from engine.errors import PolicyError
    from engine.lint import lint_policy
    from engine.policy import load_policy

    files = _policy_files(args.paths)
    errors = warnings = 0
    for path in files:
        try:
            policy = load_policy(path)
        except PolicyError as exc:
            errors += len(exc.problems)
            for problem in exc.problems:
                _out(str(problem))
            continue
        problems = lint_policy(policy)
        warnings += len(problems)
        for problem in problems:
            _out(str(problem))
        rules, groups = len(policy.rules), len(policy.groups)
        _out(f"{path}: ok ({rules} rules, {groups} group rules, {len(problems)} warnings)")
    _out(f"{len(files)} files, {errors} errors, {warnings} warnings")
    return EXIT_FAILED if errors or (args.strict and warnings) else EXIT_OK


def cmd_test(args: argparse.Namespace) -> int:
    from engine.errors import PolicyError
    from engine.policytest import find_test_files, run_test_file
    from engine.report import render_test_results

    files = find_test_files(list(args.paths) or [DEFAULT_RULES_DIR])
    if not files:
        _err("no *.test.yaml files found")
        return EXIT_FAILED
    results = []
    broken = 0
    for path in files:
        try:
            results.append(run_test_file(path))
        except PolicyError as exc:
            broken += 1
            for problem in exc.problems:
                _out(str(problem))
    _out(render_test_results(results, verbose=args.verbose))
    failed = broken or any(r.failed for r in results)
    return EXIT_FAILED if failed else EXIT_OK


def cmd_explain(args: argparse.Namespace) -> int:
    from engine.errors import InputError
    from engine.explain import explain
    from engine.inputs import read_enrollments_file
    from engine.policy import load_policy
    from engine.report import render_explanation

    policy = load_policy(args.rules)
    enrollments = read_enrollments_file(args.input)
    if args.enrollment_id:
        enrollments = [e for e in enrollments if isinstance(e, dict) and e.get("id") == args.enrollment_id]
        if not enrollments:
            raise InputError(f"{args.input}: no enrollment with id {args.enrollment_id!r}")
    now = args.now or _utc_now()
    for raw in enrollments:
        _out(render_explanation(explain(policy, raw, now)))
        _out("")
    return EXIT_OK


def cmd_run(args: argparse.Namespace) -> int:
    from engine.evaluator import Evaluator
    from engine.inputs import read_enrollments_file
    from engine.policy import load_policy

    policy = load_policy(args.rules)
    enrollments = read_enrollments_file(args.input)
    evaluator = Evaluator(policy, args.now or _utc_now())
    decisions = list(evaluator.evaluate_many(enrollments))
    _out(_render(decisions, policy, args.format, show_unchanged=args.all))
    return EXIT_OK


def _render(decisions: list[Decision], policy: Policy, fmt: str, *, show_unchanged: bool = False) -> str:
    from engine.report import render_csv, render_json, render_table

    if fmt == "json":
        return render_json(decisions)
    if fmt == "csv":
        return render_csv(decisions)
    label = policy.name or policy.program_id
    header = f"Policy {label} ({policy.version or 'unversioned'}, {policy.content_hash[:12]})"
    return header + "\n" + render_table(decisions, show_unchanged=show_unchanged)


def cmd_schema(args: argparse.Namespace) -> int:
    from engine.policy import policy_json_schema

    _out(json.dumps(policy_json_schema(), indent=2))
    return EXIT_OK


def _utc_now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


def _environ() -> dict[str, str]:
    return dict(os.environ)


if __name__ == "__main__":
    sys.exit(main())
