"""The real ``autoapprove`` command in a subprocess: one helper for every suite that needs it.

Tests run it from the repository root with an environment cleaned of the caller's
``FLIP_*`` and ``AUTOAPPROVE_*`` variables, so a developer's shell never leaks into a test.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
CLI = REPO_ROOT / "cli.py"


@dataclass(frozen=True)
class CliResult:
    code: int
    stdout: str
    stderr: str
    seconds: float


def cli_environment(extra: dict[str, str] | None = None) -> dict[str, str]:
    """This process's environment without FLIP_*/AUTOAPPROVE_* settings, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FLIP_", "AUTOAPPROVE_"))}
    env.update(extra or {})
    return env


def run_cli(
    args: list[str],
    env: dict[str, str] | None = None,
    *,
    entry: list[str] | None = None,
    timeout: float = 60.0,
    stdin: int | None = subprocess.DEVNULL,
) -> CliResult:
    """Run ``python cli.py ARGS`` (or ``entry ARGS``) from the repository root and wait for it."""
    command = [*(entry or [sys.executable, str(CLI)]), *args]
    started = time.monotonic()
    done = subprocess.run(
        command,
        cwd=REPO_ROOT,
        env=cli_environment(env),
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=stdin,
        check=False,
    )
    return CliResult(done.returncode, done.stdout, done.stderr, time.monotonic() - started)
