"""What every command shares: exit codes, output lines, the progress bar, the rendered decisions
and the configuration built from the arguments and the environment.

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
import os
import sys
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


def out(text: str) -> None:
    sys.stdout.write(text if text.endswith("\n") else text + "\n")


_STDERR = {"json": False}  # set once by the entry point (``watch.configure_output``)


def set_stderr_json(on: bool) -> None:
    _STDERR["json"] = on


def stderr_is_json() -> bool:
    return _STDERR["json"]


def err(text: str) -> None:
    """A line for people on stderr; with JSON logs, a ``message`` event instead."""
    if _STDERR["json"]:
        event("message", text.rstrip("\n"))
        return
    sys.stderr.write(text if text.endswith("\n") else text + "\n")


def write_output(path: Path | None, text: str) -> None:
    """The command's output: on stdout, or in ``path`` (``--out``), replaced whole."""
    if path is None:
        out(text)
        return
    from engine.errors import InputError

    try:
        path.write_text(text if text.endswith("\n") else text + "\n", encoding="utf-8")
    except OSError as exc:
        raise InputError(f"{path}: cannot write the output: {exc.strerror or exc}") from exc
    err(f"wrote {path}")


def event(name: str, message: str | None = None, *, level: int = 20, **fields: Any) -> None:
    """A structured event on the ``autoapprove`` logger (JSON logs show INFO and up)."""
    import logging

    from engine.observe.logs import log_event

    log_event(logging.getLogger("autoapprove.cli"), name, message, level=level, **fields)


def environ() -> dict[str, str]:
    return dict(os.environ)


def policy_files(paths: list[Path]) -> list[Path]:
    """The policy files named or under the folders named (the default rules folder when none);
    a path that does not exist is an ``InputError``."""
    from engine.errors import InputError
    from engine.policy.paths import find_policy_files

    paths = paths or [DEFAULT_RULES_DIR]
    for path in paths:
        if not path.exists():
            raise InputError(f"{path}: no such file or folder")
    return find_policy_files(paths)


def app_config(args: argparse.Namespace) -> Any:
    from engine.bootstrap import AppConfig

    overrides: dict[str, Any] = {}
    if getattr(args, "max_rps", None):
        overrides["max_requests_per_s"] = args.max_rps
    env = environ()
    key_file = env.get("FLIP_API_KEY_FILE")
    return AppConfig(
        environ=env,
        db_url=getattr(args, "db", None),
        secrets_file=Path(key_file) if key_file else None,
        api_overrides=overrides,
        lock_ttl_s=getattr(args, "lock_ttl", 300.0),
    )


def render_decisions(
    decisions: list[Decision], policy: Policy, fmt: str, *, show_unchanged: bool = False
) -> str:
    from engine.policy.coverage import rule_hits
    from engine.render.coverage import render_hits
    from engine.render.text import render_csv, render_json, render_table

    if fmt == "json":
        return render_json(decisions)
    if fmt == "csv":
        return render_csv(decisions)
    label = policy.name or policy.program_id
    header = f"Policy {label} ({policy.version or 'unversioned'}, {policy.content_hash[:12]})"
    table = render_table(decisions, show_unchanged=show_unchanged)
    return f"{header}\n{table}\n\n{render_hits(rule_hits(policy, decisions))}"
