"""The real ``autoapprove`` command, killed at a named step: how the crash tests crash it.

    python tests/crashing_cli.py STEP[:N] ARGS...

runs ``engine.cli.main(ARGS)`` with a checkpoint that hard-exits the process (``os._exit``:
no ``finally``, no rollback, exit code 137, as a SIGKILL shows) the Nth time (default the
first) any thread reaches STEP, one of ``engine.runs.checkpoints.Step``. A run that never
reaches it ends as the real command would. Test-only: the product's checkpoint does nothing.
"""

from __future__ import annotations

import os
import sys
import threading
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
CRASH_EXIT = 137

if str(REPO_ROOT) not in sys.path:  # run as a script from anywhere: the product is beside tests/
    sys.path.insert(0, str(REPO_ROOT))

from engine.runs.checkpoints import Step  # noqa: E402


class CrashAt:
    """A checkpoint that kills the process the ``nth`` time ``step`` is reached."""

    def __init__(self, spec: str) -> None:
        name, _, nth = spec.partition(":")
        self.step = Step(name)  # an unknown step is a broken test: refuse it, never just run
        self.nth = int(nth) if nth else 1
        self.seen = 0
        self.lock = threading.Lock()

    def __call__(self, step: Step) -> None:
        if step is not self.step:
            return
        with self.lock:
            self.seen += 1
            if self.seen == self.nth:
                os._exit(CRASH_EXIT)


def crashing_entry(spec: str) -> list[str]:
    """The command line that runs the CLI crashing at ``spec`` (for ``run_cli(entry=...)``)."""
    return [sys.executable, str(Path(__file__).resolve()), spec]


def main(argv: list[str]) -> int:
    from engine.cli import main as cli_main

    spec, *args = argv
    return cli_main(args, checkpoint=CrashAt(spec))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
