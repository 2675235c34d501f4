"""The parser and the one place where library errors become messages and exit codes."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from engine.cli import compare_cmds, policy_cmds, review_cmds, run_cmds, sandbox_cmds, store_cmds
from engine.cli.options import Commands
from engine.cli.shared import EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE, Context, err, load_settings
from engine.cli.watch import configure_output, report_error
from engine.runs.checkpoints import Checkpoint, no_checkpoint

Handler = Callable[[argparse.Namespace, Context], int]

# Every command, in the order ``--help`` lists them. A new command is a module with an
# ``add_NAME(commands)`` function that sets ``handler``; list it here.
COMMANDS: tuple[Callable[[Commands], None], ...] = (
    policy_cmds.add_validate,
    policy_cmds.add_test,
    policy_cmds.add_explain,
    run_cmds.add_run,
    review_cmds.add_plan,
    review_cmds.add_apply,
    review_cmds.add_review,
    compare_cmds.add_diff,
    compare_cmds.add_backtest,
    compare_cmds.add_cases,
    policy_cmds.add_schema,
    sandbox_cmds.add_sandbox,
    sandbox_cmds.add_demo,
    store_cmds.add_runs,
    store_cmds.add_history,
    store_cmds.add_db,
)


def main(argv: Sequence[str] | None = None, *, checkpoint: Checkpoint = no_checkpoint) -> int:
    """Run the command ``argv`` names; its exit code. ``checkpoint`` is called at each named
    step of the long commands (``engine.runs.checkpoints``; by default nothing happens there):
    the crash tests inject one that kills the process at a chosen step."""
    for stream in (sys.stdout, sys.stderr):
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")  # odd data must never crash the output
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Handler | None = getattr(args, "handler", None)
    if handler is None:
        parser.print_help()
        return EXIT_USAGE
    context = _context(args, checkpoint)
    if context is None:
        return EXIT_USAGE
    return _run_handler(handler, args, context)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="autoapprove",
        description="Rule-based auto-approval of Flip utility program enrollments.",
        epilog="Exit codes: 0 ok, 1 policy/test/apply failures, 2 usage or input errors, "
        "3 API key refused, 4 program locked by another run, 5 safety limit, 6 API or "
        "database failure, 130 interrupted.",
    )
    commands = parser.add_subparsers(title="commands", metavar="COMMAND")
    for add_command in COMMANDS:
        add_command(commands)
    return parser


def _run_handler(handler: Handler, args: argparse.Namespace, context: Context) -> int:
    from engine import errors

    try:
        return handler(args, context)
    except errors.AutoapproveError as exc:
        return report_error(exc)
    except KeyboardInterrupt:
        err("interrupted")
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        return EXIT_OK


def _context(args: argparse.Namespace, checkpoint: Checkpoint) -> Context | None:
    """The settings, read once from the environment and the flags, and log lines as they say
    (``--log-format`` or ``AUTOAPPROVE_LOG_FORMAT``; the library never configures logging).
    None, after saying why, when a setting is bad."""
    from engine.errors import InputError

    try:
        settings = load_settings(args)
    except InputError as exc:
        err(f"error: {exc}")
        return None
    configure_output(settings)
    return Context(settings, checkpoint)
