"""Details of the JsonLogic module that mutation testing found no test pinning (TESTING.md)."""

from __future__ import annotations

from typing import Any

import pytest

from engine.errors import EvaluationError
from engine.policy.logic import (
    LogicEngine,
    VarRead,
    evaluate_logic,
    pointer_path,
    representable,
    root_paths,
    var_reads,
    walk_operations,
)

READS = {
    "and": [
        {"in": [{"var": "site.state_code"}, ["TX", {"var": "extra"}]]},
        {
            "some": [
                {"var": "devices"},
                {
                    "and": [
                        {"in": [{"var": "type"}, [{"var": "kind"}]]},
                        {"!!": [{"missing": ["serial"]}]},
                        {"some": [{"var": "ports"}, {"var": "ok"}]},
                        {
                            "reduce": [
                                {"var": "ports"},
                                {"+": [{"var": "accumulator"}, 1]},
                                {"var": ["base", 0]},
                            ]
                        },
                    ]
                },
            ]
        },
        {"some": [{"var": 1}, {"var": ["x"]}]},
        {"some": [{"merge": [{"var": "a"}]}, {"var": "y"}]},
        {"var": ""},
    ]
}
IN_DEVICE = "/and/1/some/1/and"


def test_each_read_has_its_path_default_scope_and_pointer() -> None:
    assert list(var_reads(READS)) == [
        VarRead("site.state_code", False, None, "/and/0/in/0"),
        VarRead("extra", False, None, "/and/0/in/1/1"),  # inside a literal array
        VarRead("devices", False, None, "/and/1/some/0"),
        VarRead("type", False, "devices", f"{IN_DEVICE}/0/in/0"),
        VarRead("kind", False, "devices", f"{IN_DEVICE}/0/in/1/0"),
        VarRead("serial", True, "devices", f"{IN_DEVICE}/1/!!/0"),  # missing: null is a default
        VarRead("ports", False, "devices", f"{IN_DEVICE}/2/some/0"),
        VarRead("ok", False, "devices[].ports", f"{IN_DEVICE}/2/some/1"),
        VarRead("ports", False, "devices", f"{IN_DEVICE}/3/reduce/0"),
        VarRead("accumulator", False, "devices[].ports", f"{IN_DEVICE}/3/reduce/1/+/0"),
        VarRead("base", True, "devices", f"{IN_DEVICE}/3/reduce/2"),  # reduce's initial value
        VarRead("1", False, None, "/and/2/some/0"),
        VarRead("x", False, "?", "/and/2/some/1"),  # a number is no collection path
        VarRead("a", False, None, "/and/3/some/0/merge/0"),
        VarRead("y", False, "?", "/and/3/some/1"),  # a computed collection
        VarRead("", False, None, "/and/4"),
    ]


def test_root_paths_are_the_roots_read_and_iterated_without_computed_ones() -> None:
    assert root_paths(READS) == ["site.state_code", "extra", "devices", "1", "a"]


def test_pointers_escape_and_unescape_operator_names() -> None:
    rule = {"and": [{"a~b/c": [{"nope": [1]}]}, {"/": [{"var": "n"}, 2]}]}

    assert LogicEngine().unknown_operators(rule) == [("a~b/c", "/and/0"), ("nope", "/and/0/a~0b~1c/0")]
    assert [pointer for _, pointer, _ in walk_operations(rule)][-2:] == ["/and/1", "/and/1/~1/0"]
    assert pointer_path("/and/0/a~0b~1c/0") == ("and", 0, "a~b/c", 0)
    assert pointer_path("/a~01") == ("a~1",)  # ~1 is undone before ~0


def test_an_unknown_operator_at_the_root_is_placed_at_slash() -> None:
    with pytest.raises(ValueError, match=r"^unknown operator 'nope' at /$"):
        LogicEngine().compile({"nope": [1]})


@pytest.mark.parametrize(
    "rule",
    [
        {"and": [{">": [{"var": ["a"]}, 1]}, {"<": [{"var": ["b"]}, 2]}]},
        {"or": [{"in": [{"var": ["s"]}, ["TX"]]}, {">=": [{"var": ["n"]}, 3]}]},
        {"some": [{"var": ["devices"]}, {">": [{"var": ["age_days"]}, 10]}]},
        {"if": [{">": [{"var": ["a"]}, 1]}, {"<": [{"var": ["b"]}, 2]}, {"==": [1, 1]}]},
    ],
    ids=["and", "or", "some", "if"],
)
def test_conditions_that_cannot_meet_an_object_compile_as_written(rule: dict[str, Any]) -> None:
    """As written (with operands as lists), so their evaluation stays native."""
    assert LogicEngine().compile(rule).normalized == rule


@pytest.mark.parametrize(
    ("rule", "data", "expected"),
    [
        # an `if` whose chosen branch is an object makes and/or see a truthy operand
        ({"and": [{"if": [True, {"var": "o"}, 0]}, 1]}, {"o": {}}, 1),
        ({"and": [{"if": [False, 0, True, {"var": "o"}, 0]}, 1]}, {"o": {}}, 1),
        ({"or": [{"and": [1, {"var": "o"}]}, 2]}, {"o": {}}, {}),
        ({"if": [{"var": "o"}, "yes"]}, {"o": {}}, "yes"),
        ({"merge": [[[1, None]]]}, {}, [[1, None]]),
        # missing with computed keys: all of them, one list, or a key list and a count
        ({"missing": [{"var": "k"}, "b"]}, {"k": "a"}, ["a", "b"]),
        ({"missing": {"var": "k"}}, {"k": "a", "a": ""}, ["a"]),
        ({"missing": {"var": "k"}}, {"k": ["a", "b"], "b": 1}, ["a"]),
        ({"missing_some": [1, {"var": "k"}]}, {"k": ["a", "b"], "a": 1}, []),
        ({"missing_some": [2, {"var": "k"}]}, {"k": ["a", "b"], "a": 1}, ["b"]),
        ({"missing_some": [{"var": "n"}, {"var": "k"}]}, {"k": ["a"], "n": "x"}, []),
        ({"missing_some": [1, []]}, {}, []),
        ({"missing_some": [1, {"var": "k"}, 3]}, {"k": ["a"]}, ["a"]),  # a third argument is ignored
        ({"days_between": ["2026-01-01", {"var": "d"}]}, {"d": "2026-01-05T23:00:00Z"}, 4),
    ],
)
def test_values_where_a_rewrite_decides(rule: Any, data: Any, expected: Any) -> None:
    assert evaluate_logic(rule, data) == expected


def test_a_fresh_engine_has_the_custom_operators() -> None:
    engine = LogicEngine()
    rule = {
        "and": [
            {"missing": {"var": "k"}},
            {"!": {"missing_some": [1, {"var": "k"}]}},
            {"days_between": [{"var": "a"}, "2026-01-03"]},
        ]
    }
    session = engine.session()
    handle = session.prepare({"k": ["x", "y"], "y": 1, "a": "2026-01-01"})

    assert session.value(engine.compile(rule), handle) == 2


@pytest.mark.parametrize(
    ("rule", "data", "message"),
    [
        ({">": [{"var": "x"}, 1]}, {"x": "huge"}, "a value is not a number in '>'"),
        ({"some": [[1]]}, {}, "Invalid arguments: Invalid Arguments in 'some'"),
    ],
)
def test_library_errors_are_described_with_their_operator(rule: Any, data: Any, message: str) -> None:
    engine = LogicEngine()
    session = engine.session()
    condition = engine.compile(rule)
    handle = session.prepare(data)

    for call in (session.value, session.is_true):
        with pytest.raises(EvaluationError) as caught:
            call(condition, handle)
        assert str(caught.value) == message


def test_data_the_library_cannot_hold_is_made_representable_or_refused() -> None:
    engine = LogicEngine()
    session = engine.session()
    holds = engine.compile({"and": [{"==": [{"var": "zip"}, "77002"]}, {"var": "big.0"}]})

    assert session.value(holds, session.prepare({"zip": "77002", "big": [2**70]})) == 2.0**70
    with pytest.raises(EvaluationError) as caught:
        session.prepare({"x": object()})
    assert (
        str(caught.value)
        == "enrollment data cannot be evaluated: unsupported Python value: unsupported type object"
    )


def test_representable_keeps_64_bit_integers_and_floats_the_rest() -> None:
    values = [-(2**63), 2**63 - 1, 2**63, -(2**63) - 1, 5, True]
    converted = representable({"values": values})

    assert converted == {"values": [-(2**63), 2**63 - 1, 2.0**63, -(2.0**63), 5, True]}
    assert [type(v) for v in converted["values"]] == [int, int, float, float, int, bool]


def test_a_third_argument_is_not_a_key_list() -> None:
    assert list(var_reads({"missing_some": [1, ["a"], 3]})) == [VarRead("a", True, None, "")]


def test_a_predicate_with_a_third_argument_loads_and_fails_when_evaluated() -> None:
    with pytest.raises(EvaluationError, match=r"^Invalid arguments: Invalid Arguments in 'some'$"):
        evaluate_logic({"some": [[1], {"var": ""}, 3]}, {})
