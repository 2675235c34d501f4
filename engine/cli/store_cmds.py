"""Commands over the decision store: runs, history, db."""

from __future__ import annotations

import argparse
from collections.abc import Callable

from engine.cli.options import Commands, add_db_option, positive_int
from engine.cli.shared import EXIT_OK, app_config, out


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
DB_ACTIONS: tuple[Callable[[Commands], None], ...] = (add_db_upgrade,)


def cmd_runs(args: argparse.Namespace) -> int:
    from engine.bootstrap import open_store
    from engine.render.text import render_runs

    with open_store(app_config(args)) as store:
        runs = store.list_runs(args.program, limit=args.limit)
    out(render_runs(runs))
    return EXIT_OK


def cmd_history(args: argparse.Namespace) -> int:
    from engine.bootstrap import open_store
    from engine.errors import InputError
    from engine.render.text import render_history

    with open_store(app_config(args)) as store:
        records = store.history(args.enrollment_id)
    if not records:
        raise InputError(f"no stored decision for enrollment {args.enrollment_id!r}")
    out(render_history(records))
    return EXIT_OK


def cmd_db_upgrade(args: argparse.Namespace) -> int:
    from engine.bootstrap import open_store
    from engine.store import current_revision

    with open_store(app_config(args)) as store:
        revision = current_revision(store.engine)
    out(f"database is at revision {revision}")
    return EXIT_OK
