"""The community JsonLogic suite, through the project's evaluator, plus the semantics we fix."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from engine import evaluate_logic
from engine.errors import EvaluationError
from engine.policy.logic import LogicSession, default_engine

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
        # our date operator: null unless both arguments are dates
        ({"days_between": ["2026-01-01", "2026-01-31T23:00:00Z"]}, None, 30),
        ({"days_between": ["2026-01-31", "2026-01-01"]}, None, -30),
        ({"days_between": ["garbage", "2026-01-31"]}, None, None),
        ({"days_between": ["2026-01-01", "garbage"]}, None, None),
        ({"days_between": ["2026-01-01", 20260131]}, None, None),
        ({"days_between": ["2026-01-01", {"var": "d"}]}, {"d": ["2026-01-31"]}, None),
        ({"days_between": ["2026-01-01", {"var": "missing"}]}, {}, None),
        ({"days_between": ["2026-01-01"]}, None, None),
    ],
)
def test_semantics_we_guarantee(rule: Any, data: Any, expected: Any) -> None:
    assert evaluate_logic(rule, data) == expected


# Where json-logic-js and the community suites agree and datalogic-py does not (issue 9):
# every object, even {}, is truthy; merge keeps null items. (rule, data, value)
OBJECTS = {"empty": {}, "zero": {"a": 0}, "falsy_values": {"a": None, "b": []}}
BOTH_REFERENCES = [
    ({"!!": [{}]}, None, True),
    ({"!": [{}]}, None, False),
    ({"!": {}}, None, False),
    ({"!!": {"var": "empty"}}, OBJECTS, True),
    ({"!!": {"var": "zero"}}, OBJECTS, True),
    ({"!!": {"var": "falsy_values"}}, OBJECTS, True),
    ({"!": {"var": "empty"}}, OBJECTS, False),
    ({"if": [{"var": "empty"}, "yes", "no"]}, OBJECTS, "yes"),
    ({"if": [False, "a", {"var": "empty"}, "b", "c"]}, OBJECTS, "b"),
    ({"?:": [{"var": "empty"}, "yes", "no"]}, OBJECTS, "yes"),
    ({"and": [{"var": "empty"}, "last"]}, OBJECTS, "last"),
    ({"and": [{}, "last"]}, None, "last"),
    ({"and": [1, {"var": "empty"}, 0]}, OBJECTS, 0),
    ({"and": [{"var": "empty"}, {"var": "zero"}]}, OBJECTS, {"a": 0}),
    ({"or": [{"var": "empty"}, "last"]}, OBJECTS, {}),
    ({"or": [{}, "last"]}, None, {}),
    ({"or": [0, {"var": "zero"}, "last"]}, OBJECTS, {"a": 0}),
    ({"or": [{"if": [False, 1, {"var": "empty"}]}, "last"]}, OBJECTS, {}),
    ({"!!": {"reduce": [[1], {"var": "accumulator"}, {}]}}, None, True),
    ({"filter": [{"var": "items"}, {"var": ""}]}, {"items": [{}, 0, {"a": 0}, None]}, [{}, {"a": 0}]),
    ({"some": [{"var": "items"}, {"var": ""}]}, {"items": [0, {}]}, True),
    ({"all": [{"var": "items"}, {"var": ""}]}, {"items": [{}, {"a": 0}]}, True),
    ({"none": [{"var": "items"}, {"var": ""}]}, {"items": [0, {}]}, False),
    ({"some": [{"var": "items"}, {"var": "attributes"}]}, {"items": [{"attributes": {}}]}, True),
    ({"merge": [[1, 2], None, [3]]}, None, [1, 2, None, 3]),
    ({"merge": [None]}, None, [None]),
    ({"merge": [[None], [1]]}, None, [None, 1]),
    ({"merge": [{"var": "x"}, [{"var": "y"}]]}, {"x": [None, 2]}, [None, 2, None]),
    ({"merge": [{"var": "x"}, 1]}, {"x": None}, [None, 1]),
    ({"merge": [[1, [2]], {"var": "o"}]}, {"o": {}}, [1, [2], {}]),
    ({"merge": [{"map": [{"var": "x"}, {"var": ""}]}, [3]]}, {"x": [None]}, [None, 3]),
    ({"merge": [[1], 2, [3, 4]]}, None, [1, 2, 3, 4]),
]


@pytest.mark.parametrize(("rule", "data", "expected"), BOTH_REFERENCES)
def test_where_both_references_agree(rule: Any, data: Any, expected: Any) -> None:
    result = evaluate_logic(rule, data)
    assert result == expected
    assert type(result) is type(expected)


@pytest.mark.parametrize(("rule", "data", "expected"), BOTH_REFERENCES)
def test_the_hot_path_agrees_on_truthiness(rule: Any, data: Any, expected: Any) -> None:
    """A rule's ``when`` is decided natively (``LogicSession.is_true``), not through the value."""
    engine = default_engine()
    truthy = isinstance(expected, dict) or bool(expected)  # Python agrees on these values
    assert engine.session().is_true(engine.compile(rule), LogicSession.prepare(data)) is truthy


@pytest.mark.parametrize("rule", [{"var": "o"}, {"if": [True, {"var": "o"}]}, {"and": [1, {"var": "o"}]}])
def test_a_condition_whose_value_is_an_object_holds(rule: Any) -> None:
    engine = default_engine()
    assert engine.session().is_true(engine.compile(rule), LogicSession.prepare({"o": {}})) is True


@pytest.mark.parametrize("value", [{}, {"a": 0}, [0], "0", 1])
def test_truthy_values(value: Any) -> None:
    assert default_engine().truthy(value) is True


@pytest.mark.parametrize("value", [[], 0, "", None, False])
def test_falsy_values(value: Any) -> None:
    assert default_engine().truthy(value) is False


# Where the references disagree: what the project does (README, "Guaranteed semantics").
# (rule, data, value or an exception type)
DISAGREEMENTS = {
    # variadic - and /: the community suites fold over every operand; json-logic-js uses two.
    "minus-folds": ({"-": [10, 2, 3]}, None, 5),
    "divide-folds": ({"/": [12, 2, 3]}, None, 2),
    # and/or with no operands: null (community); json-logic-js returns undefined.
    "and-of-nothing": ({"and": []}, None, None),
    "or-of-nothing": ({"or": []}, None, None),
    # a lone operand not in a list is a list of one (json-logic-js); the community refuses it.
    "and-lone-operand": ({"and": True}, None, True),
    "or-lone-operand": ({"or": {"var": "x"}}, {"x": [0, 1]}, [0, 1]),
    "if-lone-operand": ({"if": "yes"}, None, "yes"),
    # null collections read as empty lists; all of nothing is false (json-logic-js), the
    # community's engine says true.
    "all-of-null": ({"all": [{"var": "none"}, True]}, {}, False),
    "some-of-null": ({"some": [None, True]}, None, False),
    "none-of-null": ({"none": [None, True]}, None, True),
    "map-of-null": ({"map": [{"var": "none"}, 1]}, {}, []),
    "filter-of-null": ({"filter": [None, True]}, None, []),
    # comparing a number with text that is not a number: an error (community: NaN);
    # json-logic-js says false.
    "less-than-text": ({"<": [1, "A"]}, None, EvaluationError),
    "equals-text": ({"==": [1, "A"]}, None, EvaluationError),
    # text with text compares as text (both references agree; pinned as the contrast).
    "text-less-than-text": ({"<": ["a", "b"]}, None, True),
    # null == 0 is false (json-logic-js); the community says true.
    "null-equals-zero": ({"==": [None, 0]}, None, False),
    "value-null-equals-zero": ({"==": [{"var": "x"}, 0]}, {"x": None}, False),
    "null-not-equals-empty-text": ({"!=": ["", None]}, None, True),
}


@pytest.mark.parametrize(("rule", "data", "expected"), DISAGREEMENTS.values(), ids=DISAGREEMENTS.keys())
def test_where_the_references_disagree(rule: Any, data: Any, expected: Any) -> None:
    if isinstance(expected, type):
        with pytest.raises(expected, match="not a number"):
            evaluate_logic(rule, data)
        return
    result = evaluate_logic(rule, data)
    assert result == expected
    assert type(result) is type(expected)


@pytest.mark.parametrize("rule", [{"method": ["a", "upper"]}, {"log": 1}, {"throw": "x"}])
def test_non_classic_operators_are_refused(rule: Any) -> None:
    with pytest.raises(EvaluationError, match="unknown operator"):
        evaluate_logic(rule, {})


def test_non_numeric_comparison_is_an_evaluation_error() -> None:
    with pytest.raises(EvaluationError, match="not a number"):
        evaluate_logic({">=": [{"var": "c"}, 10]}, {"c": "unknown"})


@pytest.mark.parametrize("rule", [{"min": ["10", 5]}, {"max": [5, "10"]}, {"max": [{"var": "x"}, 1]}])
def test_min_and_max_take_only_numbers(rule: Any) -> None:
    """Numeric text is an error here (README), though < and + read it as a number."""
    with pytest.raises(EvaluationError, match="Invalid arguments"):
        evaluate_logic(rule, {"x": "3"})
    assert evaluate_logic({"min": [10, 5]}, None) == 5
