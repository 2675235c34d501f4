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
    from engine.policy.decision import Decision
    from engine.policy.document import Policy

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
    for stream in (sys.stdout, sys.stderr):
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")  # odd data must never crash the output
    parser = build_parser()
    args = parser.parse_args(argv)
    _configure_logging()
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


def _configure_logging() -> None:
    """Warnings (retries, waits) as plain lines on stderr; the library never configures logging."""
    import logging

    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")


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
    _add_sandbox(commands)
    _add_demo(commands)
    _add_runs(commands)
    _add_history(commands)
    _add_db(commands)
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
    _add_now(cmd)
    _add_db_option(cmd)
    cmd.set_defaults(handler=cmd_explain)


def _add_run(commands: Any) -> None:
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
    cmd.add_argument("--format", choices=("table", "json", "csv"), default="table", help="output format")
    cmd.add_argument("--all", action="store_true", help="table: list unchanged enrollments too")
    cmd.add_argument("--every", type=parse_interval, metavar="INTERVAL",
                     help="repeat every INTERVAL (e.g. 15m, 1h, 30s) until stopped")  # fmt: skip
    cmd.add_argument("--max-changes", type=_non_negative_int, metavar="N",
                     help="a live run that needs more than N changes applies nothing")  # fmt: skip
    cmd.add_argument("--concurrency", type=_positive_int, default=8, metavar="N",
                     help="concurrent API requests in a live run (default 8)")  # fmt: skip
    cmd.add_argument("--max-rps", type=_positive_float, metavar="R",
                     help="never send more than R requests per second")  # fmt: skip
    cmd.add_argument("--no-recheck", action="store_true",
                     help="skip re-reading each enrollment before a change (faster, less safe)")  # fmt: skip
    cmd.add_argument("--lock-ttl", type=_positive_float, default=300.0, metavar="S",
                     help="SQLite lease of the program lock in seconds (default 300)")  # fmt: skip
    cmd.add_argument("--crash-at", help=argparse.SUPPRESS)  # test hook: hard exit at a named step
    _add_now(cmd)
    _add_db_option(cmd)
    cmd.set_defaults(handler=cmd_run)


def _add_sandbox(commands: Any) -> None:
    cmd = commands.add_parser(
        "sandbox",
        help="serve the local Flip API simulator on 127.0.0.1",
        description="Serve a local simulator of the Flip Utility API with seeded data: one program "
        "per example policy in rules/. A dev and test tool: it never listens beyond loopback.",
    )
    cmd.add_argument("--port", type=_port, default=8765, help="port (default 8765; 0 picks a free one)")
    cmd.add_argument("--api-key", default="fl_sim_local_key", help="the key the simulator accepts")
    cmd.add_argument("--enrollments", type=_non_negative_int, default=200, metavar="N",
                     help="enrollments per program (default 200)")  # fmt: skip
    cmd.add_argument("--seed", type=int, default=0, help="data seed (default 0)")
    cmd.add_argument("--latency", type=_non_negative_float, default=0.0, metavar="S",
                     help="added latency per request, seconds")  # fmt: skip
    cmd.add_argument("--error-rate", type=_share, default=0.0, metavar="P",
                     help="share of requests answered 500/503")  # fmt: skip
    cmd.add_argument("--rate-limit", type=_share, default=0.0, metavar="P",
                     help="share of requests answered 429 with Retry-After")  # fmt: skip
    cmd.set_defaults(handler=cmd_sandbox)


def _add_demo(commands: Any) -> None:
    cmd = commands.add_parser(
        "demo",
        help="start the simulator in-process and preview the example policy against it",
        description="Needs nothing but the clone: starts the local simulator on a free port, runs "
        "the example policy in dry-run against it (store: a temporary SQLite file unless --db), "
        "and prints the preview.",
    )
    cmd.add_argument("--rules", type=Path, default=Path("rules/tx_residential_battery.yaml"),
                     metavar="POLICY", help="policy (default rules/tx_residential_battery.yaml)")  # fmt: skip
    cmd.add_argument("--enrollments", type=_non_negative_int, default=200, metavar="N",
                     help="simulated enrollments (default 200)")  # fmt: skip
    cmd.add_argument("--live", action="store_true", help="also apply the decisions to the simulator")
    cmd.add_argument("--format", choices=("table", "json", "csv"), default="table", help="output format")
    _add_now(cmd)
    _add_db_option(cmd)
    cmd.set_defaults(handler=cmd_demo)


def _add_runs(commands: Any) -> None:
    cmd = commands.add_parser("runs", help="list past runs", description="List past runs, newest first.")
    cmd.add_argument("--program", metavar="P", help="only this program")
    cmd.add_argument("--limit", type=_positive_int, default=20, help="how many (default 20)")
    _add_db_option(cmd)
    cmd.set_defaults(handler=cmd_runs)


def _add_history(commands: Any) -> None:
    cmd = commands.add_parser(
        "history", help="every decision and application for one enrollment",
        description="Every stored decision for one enrollment and what happened when it was applied.",
    )  # fmt: skip
    cmd.add_argument("enrollment_id", metavar="ENROLLMENT_ID")
    _add_db_option(cmd)
    cmd.set_defaults(handler=cmd_history)


def _add_db(commands: Any) -> None:
    cmd = commands.add_parser("db", help="database maintenance", description="Database maintenance.")
    sub = cmd.add_subparsers(title="actions", metavar="ACTION")
    upgrade = sub.add_parser("upgrade", help="apply migrations up to the latest schema",
                             description="Apply the Alembic migrations up to the latest schema.")  # fmt: skip
    _add_db_option(upgrade)
    upgrade.set_defaults(handler=cmd_db_upgrade)


def _add_db_option(cmd: argparse.ArgumentParser) -> None:
    cmd.add_argument("--db", metavar="URL",
                     help="SQLAlchemy URL of the store (default: $AUTOAPPROVE_DB, else "
                     "sqlite:///autoapprove.db in the working directory)")  # fmt: skip


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


def parse_interval(text: str) -> float:
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    value, unit = text.strip()[:-1], text.strip()[-1:].lower()
    if unit not in units or not value.replace(".", "", 1).isdigit() or float(value) <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not an interval like 30s, 15m, 1h")
    return float(value) * units[unit]


def _number(kind: Callable[[str], Any], check: Callable[[Any], bool], what: str) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            value = None
        if value is None or not check(value):
            raise argparse.ArgumentTypeError(f"{text!r} is not {what}")
        return value

    return parse


_positive_int = _number(int, lambda v: v > 0, "a whole number above 0")
_non_negative_int = _number(int, lambda v: v >= 0, "a whole number, 0 or more")
_positive_float = _number(float, lambda v: v > 0, "a number above 0")
_non_negative_float = _number(float, lambda v: v >= 0, "a number, 0 or more")
_share = _number(float, lambda v: 0 <= v <= 1, "a share between 0 and 1")
_port = _number(int, lambda v: 0 <= v <= 65535, "a port number (0-65535)")


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
    from engine.policy.document import load_policy
    from engine.policy.lint import lint_policy

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
    from engine.policy.testfile import find_test_files, run_test_file
    from engine.render.text import render_test_results

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

    if args.stored_id and not (args.rules or args.input):
        return _explain_stored(args)
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
    now = args.now or _utc_now()
    for raw in enrollments:
        _out(render_explanation(explain(policy, raw, now)))
        _out("")
    return EXIT_OK


def _explain_stored(args: argparse.Namespace) -> int:
    from engine.bootstrap import explain_stored
    from engine.render.text import render_explanation, render_stored_decision

    found = explain_stored(_app_config(args), args.stored_id)
    _out(render_stored_decision(found.record, found.version))
    if found.replay is not None:
        since = "unchanged" if found.facts_unchanged else "CHANGED"
        _out(f"\nReplayed with the stored policy at the stored time; the facts it reads are {since} since:")
        _out(render_explanation(found.replay))
    elif found.note:
        _out(f"  ({found.note})")
    return EXIT_OK


def cmd_run(args: argparse.Namespace) -> int:
    from engine.errors import InputError
    from engine.policy.document import load_policy

    policy = load_policy(args.rules)
    if args.input is not None:
        if args.live or args.every:
            raise InputError("--input runs are offline previews: --live and --every need the API")
        return _run_offline(args, policy)
    if args.live and not args.yes and not _confirm(policy, args):
        _err("not confirmed: nothing was sent")
        return EXIT_USAGE
    return _run_online(args, policy)


def _run_offline(args: argparse.Namespace, policy: Policy) -> int:
    from engine.flip.files import read_enrollments_file
    from engine.policy.evaluator import Evaluator

    enrollments = read_enrollments_file(args.input)
    evaluator = Evaluator(policy, args.now or _utc_now())
    decisions = list(evaluator.evaluate_many(enrollments))
    _out(_render(decisions, policy, args.format, show_unchanged=args.all))
    return EXIT_OK


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
        _err(f"signal {signum}: stopping after the current enrollment")
        stop.set()

    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        while True:
            code = _run_once(args, policy, stop)
            if not args.every or stop.is_set() or code in (EXIT_AUTH, EXIT_USAGE):
                return code
            _err(f"next run in {args.every:g} s (Ctrl-C or SIGTERM stops)")
            if stop.wait(args.every):
                return code
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _run_once(args: argparse.Namespace, policy: Policy, stop: Any) -> int:
    from engine.bootstrap import run_policy
    from engine.render.text import render_run_footer
    from engine.runs.service import RunSettings

    settings = RunSettings(
        live=args.live,
        now=args.now,
        max_changes=args.max_changes,
        concurrency=args.concurrency,
        recheck=not args.no_recheck,
        crash_at=args.crash_at,
    )
    report = run_policy(
        policy, _app_config(args), settings, program_id=args.program, progress=_Progress(), stop=stop
    )
    _out(_render(report.decisions, policy, args.format, show_unchanged=args.all))
    _err(render_run_footer(report))
    return EXIT_FAILED if report.failed else EXIT_OK


def _app_config(args: argparse.Namespace) -> Any:
    from engine.bootstrap import AppConfig

    overrides: dict[str, Any] = {}
    if getattr(args, "max_rps", None):
        overrides["max_requests_per_s"] = args.max_rps
    environ = _environ()
    key_file = environ.get("FLIP_API_KEY_FILE")
    return AppConfig(
        environ=environ,
        db_url=getattr(args, "db", None),
        secrets_file=Path(key_file) if key_file else None,
        api_overrides=overrides,
        lock_ttl_s=getattr(args, "lock_ttl", 300.0),
    )


class _Progress:
    """A progress bar on a terminal; plain log lines every 10% otherwise."""

    def __init__(self) -> None:
        self.tty = sys.stderr.isatty()
        self.last: tuple[str, int] = ("", -1)

    def __call__(self, stage: str, done: int, total: int) -> None:
        if total <= 0:
            if self.tty:
                sys.stderr.write(f"\r{stage}: {done}")
            return
        percent = done * 100 // total
        if self.tty:
            bar = "#" * (percent // 4)
            sys.stderr.write(f"\r{stage:<11} [{bar:<25}] {done}/{total}")
            if done == total:
                sys.stderr.write("\n")
        elif (stage, percent // 10) != self.last:
            self.last = (stage, percent // 10)
            _err(f"{stage}: {done}/{total} ({percent}%)")


def _render(decisions: list[Decision], policy: Policy, fmt: str, *, show_unchanged: bool = False) -> str:
    from engine.render.text import render_csv, render_json, render_table

    if fmt == "json":
        return render_json(decisions)
    if fmt == "csv":
        return render_csv(decisions)
    label = policy.name or policy.program_id
    header = f"Policy {label} ({policy.version or 'unversioned'}, {policy.content_hash[:12]})"
    return header + "\n" + render_table(decisions, show_unchanged=show_unchanged)


def cmd_schema(args: argparse.Namespace) -> int:
    from engine.policy.document import policy_json_schema

    _out(json.dumps(policy_json_schema(), indent=2))
    return EXIT_OK


def cmd_sandbox(args: argparse.Namespace) -> int:
    from engine.sandbox.simulator import FaultConfig, SimulatorConfig, SimulatorInfo, serve

    config = SimulatorConfig(
        port=args.port,
        api_key=args.api_key,
        programs=_example_programs(args.enrollments),
        seed=args.seed,
        faults=FaultConfig(latency_s=args.latency, error_rate=args.error_rate, rate_limit=args.rate_limit),
    )

    def ready(info: SimulatorInfo) -> None:
        _out(f"Flip API simulator listening on {info.base_url}")
        _out(f"  export FLIP_API_URL={info.base_url}")
        _out(f"  export FLIP_API_KEY={info.api_key}")
        for program, count in info.programs.items():
            _out(f"  program {program}: {count} enrollments")
        _out("Ctrl-C stops it.")
        sys.stdout.flush()

    serve(config, on_ready=ready)
    return EXIT_OK


def _example_programs(count: int) -> dict[str, int]:
    """One simulated program per example policy in rules/ (same program_id)."""
    from engine.errors import PolicyError
    from engine.policy.document import load_policy

    programs: dict[str, int] = {}
    for path in _policy_files([DEFAULT_RULES_DIR]) if DEFAULT_RULES_DIR.is_dir() else []:
        try:
            programs[load_policy(path).program_id] = count
        except PolicyError:
            continue
    return programs or {"prog-tx-residential-battery": count, "prog-ca-ev-charging": count}


def cmd_demo(args: argparse.Namespace) -> int:
    import tempfile

    from engine.bootstrap import AppConfig, run_policy
    from engine.policy.document import load_policy
    from engine.render.text import render_run_footer
    from engine.runs.service import RunSettings
    from engine.sandbox.simulator import Simulator, SimulatorConfig

    policy = load_policy(args.rules)
    config = SimulatorConfig(programs={policy.program_id: args.enrollments}, seed=0)
    with Simulator(config) as simulator, tempfile.TemporaryDirectory() as scratch:
        info = simulator.info()
        environ = {**_environ(), "FLIP_API_URL": info.base_url, "FLIP_API_KEY": info.api_key}
        db_url = args.db or environ.get("AUTOAPPROVE_DB") or f"sqlite:///{scratch}/demo.db"
        app = AppConfig(environ=environ, db_url=db_url)
        _err(f"simulator on {info.base_url} with {args.enrollments} enrollments of {policy.program_id}")
        report = run_policy(policy, app, RunSettings(now=args.now), progress=_Progress())
        _out(_render(report.decisions, policy, args.format))
        if args.live:
            live = run_policy(policy, app, RunSettings(live=True, now=args.now), progress=_Progress())
            _err(render_run_footer(live))
        else:
            _err(render_run_footer(report))
    return EXIT_OK


def cmd_runs(args: argparse.Namespace) -> int:
    from engine.bootstrap import open_store
    from engine.render.text import render_runs

    with open_store(_app_config(args)) as store:
        runs = store.list_runs(args.program, limit=args.limit)
    _out(render_runs(runs))
    return EXIT_OK


def cmd_history(args: argparse.Namespace) -> int:
    from engine.bootstrap import open_store
    from engine.errors import InputError
    from engine.render.text import render_history

    with open_store(_app_config(args)) as store:
        records = store.history(args.enrollment_id)
    if not records:
        raise InputError(f"no stored decision for enrollment {args.enrollment_id!r}")
    _out(render_history(records))
    return EXIT_OK


def cmd_db_upgrade(args: argparse.Namespace) -> int:
    from engine.bootstrap import open_store
    from engine.store import current_revision

    with open_store(_app_config(args)) as store:
        revision = current_revision(store.engine)
    _out(f"database is at revision {revision}")
    return EXIT_OK


def _utc_now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


def _environ() -> dict[str, str]:
    return dict(os.environ)


if __name__ == "__main__":
    sys.exit(main())
