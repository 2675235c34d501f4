"""The public surface: ``engine.__all__`` is sorted, complete and importable."""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path

import pytest

import engine
from engine import evaluate_logic
from engine.errors import AutoapproveError, EvaluationError

REPO_ROOT = Path(__file__).resolve().parent.parent


def test_all_is_sorted_and_unique() -> None:
    assert list(engine.__all__) == sorted(set(engine.__all__))


@pytest.mark.parametrize("name", engine.__all__)
def test_every_exported_name_exists(name: str) -> None:
    assert hasattr(engine, name)
    assert getattr(engine, name) is not None


def test_star_import_gives_exactly_all() -> None:
    namespace: dict[str, object] = {}
    exec("from engine import *", namespace)
    assert sorted(k for k in namespace if k != "__builtins__") == sorted(engine.__all__)


def test_evaluate_logic_is_exported() -> None:
    assert "evaluate_logic" in engine.__all__
    assert engine.evaluate_logic is evaluate_logic


@pytest.mark.parametrize(
    ("rule", "data", "expected"),
    [
        ({"==": [1, 1]}, None, True),
        ({"var": "a.b"}, {"a": {"b": 3}}, 3),
        ({">=": [{"var": ["n", 0]}, 10]}, {}, False),
        ({"missing": ["a", "b"]}, {"a": "", "b": 1}, ["a"]),
        ({"missing_some": [1, ["a", "b"]]}, {"a": None, "b": ""}, ["a", "b"]),
        ({"==": [{"var": "x"}, 0]}, {"x": None}, False),
        ({"!=": [{"var": "x"}, ""]}, {}, True),
        ({"days_between": ["2026-11-01", "2026-11-25T10:00:00Z"]}, None, 24),
        ({"days_between": ["2026-11-25", "2026-11-01"]}, None, -24),
        ({"days_between": ["not a date", "2026-11-01"]}, None, None),
        ({"some": [{"var": "xs"}, {">": [{"var": ""}, 2]}]}, {"xs": [1, 3]}, True),
        ({"cat": ["a", {"var": "b"}]}, {"b": "c"}, "ac"),
        ({"in": ["TX", ["TX", "OK"]]}, None, True),
    ],
)
def test_evaluate_logic(rule: object, data: object, expected: object) -> None:
    result = evaluate_logic(rule, data)
    assert result == expected
    assert type(result) is type(expected)


@pytest.mark.parametrize("rule", [{"method": ["x", "upper"]}, {"log": 1}, {"and": [True, {"eval": "1"}]}])
def test_evaluate_logic_refuses_unknown_operators(rule: object) -> None:
    with pytest.raises(EvaluationError, match="unknown operator"):
        evaluate_logic(rule, {})


def test_evaluation_errors_are_ours() -> None:
    with pytest.raises(EvaluationError) as info:
        evaluate_logic({">=": [{"var": "x"}, 1]}, {"x": "abc"})
    assert isinstance(info.value, AutoapproveError)
    assert str(info.value)


def test_importing_the_engine_builds_nothing() -> None:
    code = (
        "import sys, engine, engine.policy.logic, engine.policy.document, engine.policy.evaluator;"
        "import engine.policy.logic as logic;"
        "print(len(logic._DEFAULT_ENGINE), 'httpx' in sys.modules, 'sqlalchemy' in sys.modules)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60, check=True
    )
    assert result.stdout.split() == ["0", "False", "False"]


@pytest.mark.parametrize(
    "module",
    [
        "engine.policy.logic",
        "engine.policy.document",
        "engine.policy.facts",
        "engine.policy.evaluator",
        "engine.policy.lint",
        "engine.policy.explain",
    ],
)
def test_policy_engine_modules_import(module: str) -> None:
    assert importlib.import_module(module).__doc__


def test_importing_engine_loads_no_adapter_library() -> None:
    # Dependencies point inward: the policy engine knows nothing of httpx or SQLAlchemy.
    code = "import sys, engine; print(sorted(m for m in ('httpx', 'sqlalchemy') if m in sys.modules))"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO_ROOT
    )
    assert out.stdout.strip() == "[]"
