"""Commands over the decision store: runs, history, db."""

from __future__ import annotations

import argparse
from collections.abc import Callable

from engine.cli.options import Commands, add_db_option, parse_interval, positive_int
from engine.cli.shared import EXIT_OK, EXIT_USAGE, Context, err, out


def add_runs(commands: Commands) -> None:
    cmd = commands.add_parser("runs", help="list past runs", description="List past runs, newest first.")
    cmd.add_argument("--program", metavar="P", help="only this program")
    cmd.add_argument("--limit", type=positive_int, default=20, help="how many (default 20)")
    add_db_option(cmd)
    cmd.set_defaults(handler=cmd_runs)


def add_history(commands: Commands) -> None:
    cmd = commands.add_parser(
        "history", help="every decision and application for one enrollment",
        description="Every stored decision for one enrollment and what happened when it was applied.",
    )  # fmt: skip
    cmd.add_argument("enrollment_id", metavar="ENROLLMENT_ID")
    add_db_option(cmd)
    cmd.set_defaults(handler=cmd_history)


def add_db(commands: Commands) -> None:
    cmd = commands.add_parser("db", help="database maintenance", description="Database maintenance.")
    actions = cmd.add_subparsers(title="actions", metavar="ACTION")
    for add_action in DB_ACTIONS:
        add_action(actions)


def add_db_upgrade(actions: Commands) -> None:
    upgrade = actions.add_parser(
        "upgrade",
        help="apply migrations up to the latest schema",
        description="Apply the Alembic migrations up to the latest schema.",
    )
    add_db_option(upgrade)
    upgrade.set_defaults(handler=cmd_db_upgrade)


# The actions of ``db``, in the order its ``--help`` lists them; a new one is listed here.
def add_db_prune(actions: Commands) -> None:
    prune = actions.add_parser(
        "prune",
        help="delete decisions and runs older than a duration, keeping what still answers",
        description="Delete decision rows and runs older than DURATION, always keeping each "
        "enrollment's latest decision, open changes, changes waiting for or refused by a person, "
        "runs a saved plan refers to and (--keep-applied, the default) every row that recorded a "
        "change sent to the API; then reclaim the space (VACUUM).",
    )
    prune.add_argument("--older-than", type=parse_interval, required=True, metavar="DURATION",
                       help="e.g. 90d, 12h: runs started longer ago than this")  # fmt: skip
    prune.add_argument("--keep-applied", action=argparse.BooleanOptionalAction, default=True,
                       help="keep every row that recorded a change sent to the API (default)")  # fmt: skip
    prune.add_argument("--yes", action="store_true", help="do not ask before deleting (unattended)")
    add_db_option(prune)
    prune.set_defaults(handler=cmd_db_prune)


DB_ACTIONS: tuple[Callable[[Commands], None], ...] = (add_db_upgrade, add_db_prune)


def cmd_runs(args: argparse.Namespace, context: Context) -> int:
    from engine.bootstrap import open_store
    from engine.render.text import render_runs

    with open_store(context.settings) as store:
        runs = store.list_runs(args.program, limit=args.limit)
    out(render_runs(runs))
    return EXIT_OK


def cmd_history(args: argparse.Namespace, context: Context) -> int:
    from engine.bootstrap import open_store
    from engine.errors import InputError
    from engine.render.text import render_history

    with open_store(context.settings) as store:
        records = store.history(args.enrollment_id)
    if not records:
        raise InputError(f"no stored decision for enrollment {args.enrollment_id!r}")
    out(render_history(records))
    return EXIT_OK


def cmd_db_upgrade(args: argparse.Namespace, context: Context) -> int:
    from engine.bootstrap import open_store
    from engine.store import current_revision

    with open_store(context.settings) as store:
        revision = current_revision(store.engine)
    out(f"database is at revision {revision}")
    return EXIT_OK


def cmd_db_prune(args: argparse.Namespace, context: Context) -> int:
    import sys
    from datetime import UTC, datetime, timedelta

    from engine.bootstrap import open_store
    from engine.errors import InputError
    from engine.store.retention import prune, prune_counts

    cutoff = datetime.now(UTC) - timedelta(seconds=args.older_than)
    with open_store(context.settings) as store:
        preview = prune_counts(store.engine, cutoff, keep_applied=args.keep_applied)
        what = (
            f"{preview.decisions} decision row(s) and {preview.runs} run(s) "
            f"from before {cutoff:%Y-%m-%d %H:%M} UTC"
        )
        if not args.yes:
            if not sys.stdin.isatty():
                raise InputError(f"db prune would delete {what}; outside a terminal it needs --yes")
            sys.stderr.write(f"Delete {what}? [y/N] ")
            sys.stderr.flush()
            if sys.stdin.readline().strip().lower() not in ("y", "yes"):
                err("not confirmed: nothing was deleted")
                return EXIT_USAGE
        done = prune(store.engine, cutoff, keep_applied=args.keep_applied, checkpoint=context.checkpoint)
    sizes = ""
    if done.bytes_before is not None and done.bytes_after is not None:
        sizes = f"; store {done.bytes_before / 1e6:.1f} MB -> {done.bytes_after / 1e6:.1f} MB"
    out(
        f"pruned {done.decisions} decision row(s), {done.runs} run(s), "
        f"{done.policy_versions} unused policy version(s){sizes}"
    )
    return EXIT_OK
