"""The shape of the package: the CLI starts fast, only it exits, and nothing grows too big."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
ENGINE = REPO_ROOT / "engine"
HEAVY = ("pydantic", "yaml", "httpx", "sqlalchemy", "datalogic_py", "alembic")


def engine_modules() -> list[Path]:
    return sorted(ENGINE.rglob("*.py"))


def test_help_loads_no_heavy_library() -> None:
    probe = (
        "import sys, cli\n"
        "try:\n    cli.main(['--help'])\nexcept SystemExit:\n    pass\n"
        f"print(sorted(m for m in sys.modules if m.split('.')[0] in {HEAVY!r}), file=sys.stderr)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], cwd=REPO_ROOT, capture_output=True, text=True, check=True
    )
    assert result.stdout.startswith("usage: autoapprove")
    assert result.stderr.strip() == "[]"


def _exit_calls(tree: ast.AST) -> list[str]:
    found = []
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and (node.value.id, node.attr) in (("sys", "exit"), ("os", "_exit"))
        ):
            found.append(f"{node.value.id}.{node.attr} at line {node.lineno}")
    return found


def test_nothing_under_engine_exits_the_process() -> None:
    """The CLI returns an exit code and ``cli.py`` exits with it; the library only raises."""
    offenders = {
        str(path.relative_to(REPO_ROOT)): calls
        for path in engine_modules()
        if (calls := _exit_calls(ast.parse(path.read_text(encoding="utf-8"))))
        # The crash-test hook in the run service goes with issue 8 §4 (an injected checkpoint).
        and path != ENGINE / "runs" / "service.py"
    }
    assert offenders == {}
