"""A file as it is at a git revision, read with ``git show`` from the repository holding it.

Only read-only git commands run (``rev-parse``, ``cat-file``, ``show``), with the revision
checked first so a mistyped one and a file that is not tracked there get their own clear
errors. Revisions that look like options are refused (they would be read as flags).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from engine.errors import InputError

GIT_TIMEOUT_S = 30


def _git(cwd: Path, *args: str) -> subprocess.CompletedProcess[bytes]:
    executable = shutil.which("git")
    if executable is None:
        raise InputError("git: the git command is not installed")
    try:
        return subprocess.run(  # noqa: S603 - fixed git subcommands; the revision is validated
            [executable, *args], cwd=cwd, capture_output=True, timeout=GIT_TIMEOUT_S, check=False
        )
    except (OSError, subprocess.SubprocessError) as exc:
        raise InputError(f"git: could not run git: {exc}") from exc


def show_file(path: Path, revision: str) -> tuple[str, str]:
    """``(text, "REV:relative/path")`` of ``path`` at ``revision``. Raises ``InputError``."""
    if not revision or revision.startswith("-") or any(ch in revision for ch in "\n\0"):
        raise InputError(f"git:{revision}: not a revision")
    absolute = path.resolve()
    folder = absolute.parent
    if not folder.is_dir():
        raise InputError(f"{path}: no such folder, so no repository holds it")
    top = _git(folder, "rev-parse", "--show-toplevel")
    if top.returncode != 0:
        raise InputError(f"git:{revision}: {path} is not in a git repository")
    root = Path(top.stdout.decode("utf-8", "replace").strip()).resolve()
    try:
        relative = absolute.relative_to(root).as_posix()
    except ValueError as exc:
        raise InputError(f"git:{revision}: {path} is outside the repository {root}") from exc
    if _git(root, "rev-parse", "--verify", "--quiet", f"{revision}^{{commit}}").returncode != 0:
        raise InputError(f"git:{revision}: unknown revision in {root}")
    spec = f"{revision}:{relative}"
    if _git(root, "cat-file", "-e", spec).returncode != 0:
        raise InputError(f"git:{revision}: {relative} is not tracked at {revision}")
    shown = _git(root, "show", spec)
    if shown.returncode != 0:
        raise InputError(f"git:{revision}: git show {spec} failed")
    try:
        return shown.stdout.decode("utf-8"), spec
    except UnicodeDecodeError as exc:
        raise InputError(f"git:{revision}: {relative} at {revision} is not UTF-8 text") from exc
