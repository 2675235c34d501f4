"""What every command shares: exit codes, output lines, the rendered decisions, and the
``Context`` a command runs in (the settings built once from the environment and the flags).

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
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from engine.config import Settings
    from engine.policy.decision import Decision
    from engine.policy.document import Policy
    from engine.runs.checkpoints import Checkpoint

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


# Flags that set a field of ``Settings`` (over its environment variable), by flag dest.
SETTINGS_FLAGS = {
    "db": "db_url",
    "log_format": "log_format",
    "notify_url": "notify_url",
    "concurrency": "concurrency",
    "max_rps": "max_rps",
    "lock_ttl": "lock_ttl_s",
}


@dataclass(frozen=True)
class Context:
    """What a command runs with besides its arguments: the settings, built once from the
    environment and the flags, and the checkpoint that long commands (``run``, ``apply``,
    ``review approve``, ``db prune``) call at each named step (``engine.runs.checkpoints``):
    the one ``main`` was given, which does nothing unless a caller injects one."""

    settings: Settings
    checkpoint: Checkpoint


def load_settings(args: argparse.Namespace) -> Settings:
    """The settings: the environment, then the command's flags over it (``InputError``
    naming the variable when a value is bad)."""
    from engine.config import Settings

    flags = {field: getattr(args, dest, None) for dest, field in SETTINGS_FLAGS.items()}
    return Settings.load(**flags)


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
    table = render_table(decisions, show_unchanged=show_unchanged)
    return f"{policy_header(policy)}\n{table}\n\n{render_hits(rule_hits(policy, decisions))}"


def policy_header(policy: Policy) -> str:
    """The first line of a table of decisions: which policy decided them."""
    label = policy.name or policy.program_id
    return f"Policy {label} ({policy.version or 'unversioned'}, {policy.content_hash[:12]})"
