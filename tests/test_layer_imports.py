"""The import rules of the layers (README, Layout): dependencies point inward.

Two checks, because each misses what the other sees: a fresh interpreter that imports every
module of a layer shows what that really loads (also through a third-party package), and
the ``import`` statements of every module (those inside functions too, which run only
later) show each edge between layers.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
ENGINE = REPO_ROOT / "engine"

ADAPTERS = ("engine.flip", "engine.store", "engine.sandbox", "engine.render", "engine.observe", "engine.vcs")
OUTER = (*ADAPTERS, "engine.bootstrap", "engine.cli")
IO_LIBRARIES = ("httpx", "sqlalchemy", "alembic", "psycopg", "ijson", "tenacity", "jinja2", "tqdm")

# What importing a layer (every module in it) must never load.
FORBIDDEN_LOADS = {
    "engine.policy": (*IO_LIBRARIES, "engine.runs", *OUTER),
    "engine.runs": (*IO_LIBRARIES, *OUTER),
}

# The parts of ``engine`` each layer may import (besides itself). Exceptions would be listed
# here with their reason; there are none.
ALLOWED_EDGES = {
    "errors": set(),
    "clock": set(),
    # The settings: the adapters' and the run service's keyword defaults are its constants.
    "config": {"errors"},
    "__init__": {"errors", "policy"},
    "policy": {"errors", "clock"},
    "runs": {"errors", "clock", "config", "policy"},
    "flip": {"errors", "clock", "config", "policy"},
    "store": {"errors", "clock", "config", "policy", "runs"},
    "sandbox": {"errors", "clock", "flip"},
    "observe": {"errors", "clock", "policy", "runs"},
    "render": {"errors", "clock", "policy", "runs"},
    "vcs": {"errors", "clock"},
    "bootstrap": {"errors", "clock", "config", "policy", "runs", "flip", "store", "vcs"},
    "cli": {
        "errors",
        "clock",
        "config",
        "policy",
        "runs",
        "flip",
        "store",
        "sandbox",
        "observe",
        "render",
        "vcs",
        "bootstrap",
    },
}
# Third-party libraries the inner layers must not import at all.
INNER_FORBIDDEN_LIBRARIES = {"policy": IO_LIBRARIES, "runs": IO_LIBRARIES}

_PROBE = """
import importlib, json, pkgutil, sys
package = importlib.import_module(sys.argv[1])
if sys.argv[2] == "all":
    for module in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
        importlib.import_module(module.name)
print(json.dumps(sorted(sys.modules)))
"""


def loaded_by(package: str, *, every_module: bool) -> list[str]:
    """The modules a fresh interpreter holds after importing ``package`` (and, with
    ``every_module``, each module under it)."""
    result = subprocess.run(
        [sys.executable, "-c", _PROBE, package, "all" if every_module else "package"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    modules: list[str] = json.loads(result.stdout)
    return modules


def offenders(modules: list[str], forbidden: tuple[str, ...]) -> list[str]:
    return [m for m in modules if any(m == f or m.startswith(f + ".") for f in forbidden)]


@pytest.mark.parametrize("layer", sorted(FORBIDDEN_LOADS))
def test_a_layer_loads_nothing_outside_it(layer: str) -> None:
    assert offenders(loaded_by(layer, every_module=True), FORBIDDEN_LOADS[layer]) == []


def test_import_engine_policy_loads_no_httpx_and_no_sqlalchemy() -> None:
    """The issue's own words: ``python -c "import engine.policy"``."""
    assert offenders(loaded_by("engine.policy", every_module=False), ("httpx", "sqlalchemy")) == []


def _layer_of(path: Path, root: Path = ENGINE) -> str:
    """``policy`` for ``engine/policy/facts.py``, ``bootstrap`` for ``engine/bootstrap.py``."""
    return path.relative_to(root).with_suffix("").parts[0]


def _imported(tree: ast.AST) -> list[tuple[str, int]]:
    """Every absolute module name imported anywhere in ``tree``, with its line."""
    found: list[tuple[str, int]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.module, node.lineno))
        elif isinstance(node, ast.Import):
            found.extend((alias.name, node.lineno) for alias in node.names)
    return found


def edge_violations(root: Path) -> list[str]:
    """``path:line imports engine.X`` for every import a module's layer may not make."""
    problems: list[str] = []
    for path in sorted(root.rglob("*.py")):
        layer = _layer_of(path, root)
        allowed = ALLOWED_EDGES[layer]
        libraries = INNER_FORBIDDEN_LIBRARIES.get(layer, ())
        for name, line in _imported(ast.parse(path.read_text(encoding="utf-8"))):
            top, _, rest = name.partition(".")
            where = f"{path.relative_to(root.parent)}:{line} imports {name}"
            if top == "engine" and rest:
                target = rest.split(".")[0]
                if target != layer and target not in allowed:
                    problems.append(where)
            elif top in libraries:
                problems.append(where)
    return problems


def test_every_import_edge_points_inward() -> None:
    assert edge_violations(ENGINE) == []


def test_every_layer_has_its_rules() -> None:
    """A new folder under ``engine/`` must say what it may import."""
    layers = {_layer_of(path) for path in ENGINE.rglob("*.py")}
    assert layers <= set(ALLOWED_EDGES)


def test_the_edge_check_sees_an_import_inside_a_function(tmp_path: Path) -> None:
    policy = tmp_path / "engine" / "policy"
    policy.mkdir(parents=True)
    (policy / "late.py").write_text(
        "def later():\n    from engine.store.repository import Store\n    import httpx\n", encoding="utf-8"
    )
    assert edge_violations(tmp_path / "engine") == [
        "engine/policy/late.py:2 imports engine.store.repository",
        "engine/policy/late.py:3 imports httpx",
    ]
