"""The community JsonLogic suite, through the project's evaluator, plus the semantics we fix."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from engine import evaluate_logic
from engine.errors import EvaluationError

SUITE = Path(__file__).resolve().parents[1] / "data" / "jsonlogic" / "compatible.json"


def _cases() -> list[Any]:
    cases = [c for c in json.loads(SUITE.read_text()) if isinstance(c, dict)]
    return [pytest.param(c, id=f"{i}:{c['description'][:60]}") for i, c in enumerate(cases)]


def test_suite_has_every_case() -> None:
    assert len(_cases()) == 278


@pytest.mark.parametrize("case", _cases())
def test_classic_suite(case: dict[str, Any]) -> None:
    result = evaluate_logic(case["rule"], case.get("data"))
    assert result == case["result"]
    assert type(result) is type(case["result"])


@pytest.mark.parametrize(
    ("rule", "data", "expected"),
    [
        # json-logic-js: null and "" count as missing.
        ({"missing": ["a", "b"]}, {"a": None, "b": ""}, ["a", "b"]),
        ({"missing": ["a", "b"]}, {"a": 0, "b": False}, []),
        ({"missing": "a.b"}, {"a": {"b": ""}}, ["a.b"]),
        ({"missing_some": [1, ["a", "b"]]}, {"a": None, "b": ""}, ["a", "b"]),
        ({"missing_some": [1, ["a", "b"]]}, {"a": None, "b": "x"}, []),
        ({"missing": {"merge": ["a", "b"]}}, {"a": "", "b": 1}, ["a"]),
        ({"missing_some": [{"var": "n"}, ["a", "b"]]}, {"n": 2, "a": None, "b": 1}, ["a"]),
        # JavaScript loose equality with null.
        ({"==": [{"var": "x"}, 0]}, {"x": None}, False),
        ({"==": [{"var": "x"}, ""]}, {}, False),
        ({"!=": [{"var": "x"}, ""]}, {"x": None}, True),
        ({"==": [{"var": "x"}, None]}, {}, True),
        ({"==": [{"var": "x"}, 1]}, {"x": "1"}, True),
        # our date operator
        ({"days_between": ["2026-01-01", "2026-01-31T23:00:00Z"]}, None, 30),
        ({"days_between": ["garbage", "2026-01-31"]}, None, None),
    ],
)
def test_semantics_we_guarantee(rule: Any, data: Any, expected: Any) -> None:
    assert evaluate_logic(rule, data) == expected


@pytest.mark.parametrize("rule", [{"method": ["a", "upper"]}, {"log": 1}, {"throw": "x"}])
def test_non_classic_operators_are_refused(rule: Any) -> None:
    with pytest.raises(EvaluationError, match="unknown operator"):
        evaluate_logic(rule, {})


def test_non_numeric_comparison_is_an_evaluation_error() -> None:
    with pytest.raises(EvaluationError, match="not a number"):
        evaluate_logic({">=": [{"var": "c"}, 10]}, {"c": "unknown"})
