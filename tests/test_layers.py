"""The shape of the package: the CLI starts fast, only it exits, and nothing grows too big."""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Callable
from functools import cache
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
ENGINE = REPO_ROOT / "engine"
HEAVY = ("pydantic", "yaml", "httpx", "sqlalchemy", "datalogic_py", "alembic")
MAX_MODULE_LINES = 700
MAX_CLASS_LINES = 300


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


def _found_in_engine(scan: Callable[[ast.AST], list[str]]) -> dict[str, list[str]]:
    """What ``scan`` finds in each module under engine/, by path (modules it finds nothing in left out)."""
    found = {}
    for path in engine_modules():
        if hits := scan(ast.parse(path.read_text(encoding="utf-8"))):
            found[str(path.relative_to(REPO_ROOT))] = hits
    return found


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
    """The CLI returns an exit code and ``cli.py`` exits with it; the library only raises (the
    crash tests kill a run through an injected checkpoint, ``tests/crashing_cli.py``)."""
    assert _found_in_engine(_exit_calls) == {}


_ENVIRONMENT_NAMES = ("environ", "environb", "getenv", "getenvb", "putenv", "unsetenv")


def _environment_reads(tree: ast.AST) -> list[str]:
    """``os.environ``, ``os.getenv`` and friends, ``from os import environ``, a bare ``environ``."""
    found = []
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id == "os"
            and node.attr in _ENVIRONMENT_NAMES
        ):
            found.append(f"os.{node.attr} at line {node.lineno}")
        elif isinstance(node, ast.ImportFrom) and node.module == "os":
            found.extend(
                f"from os import {alias.name} at line {node.lineno}"
                for alias in node.names
                if alias.name in _ENVIRONMENT_NAMES
            )
        elif isinstance(node, ast.Name) and node.id in _ENVIRONMENT_NAMES:
            found.append(f"{node.id} at line {node.lineno}")
    return found


def test_only_the_settings_read_the_environment() -> None:
    """Every environment variable is a field of ``engine.config.Settings``; the CLI builds it
    once and passes it down, so no other module under engine/ reads the environment."""
    readers = _found_in_engine(_environment_reads)
    assert readers.pop("engine/config.py", None), "engine/config.py should read the environment"
    assert readers == {}


@cache
def _sizes() -> tuple[dict[str, int], dict[str, int]]:
    """Lines per module and per class (``path::Name``, nested classes too) under engine/."""
    modules: dict[str, int] = {}
    classes: dict[str, int] = {}
    for path in engine_modules():
        name = str(path.relative_to(REPO_ROOT))
        text = path.read_text(encoding="utf-8")
        modules[name] = len(text.splitlines())
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.ClassDef) and node.end_lineno is not None:
                classes[f"{name}::{node.name}"] = node.end_lineno - node.lineno + 1
    return modules, classes


def test_no_module_exceeds_700_lines() -> None:
    modules, _ = _sizes()
    assert {name: lines for name, lines in modules.items() if lines > MAX_MODULE_LINES} == {}


def test_no_class_exceeds_300_lines() -> None:
    _, classes = _sizes()
    too_big = {name: lines for name, lines in classes.items() if lines > MAX_CLASS_LINES}
    assert too_big == {}
