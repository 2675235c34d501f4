"""The JSON Schema of a JsonLogic condition, naming every operator the loader accepts.

Policy models mark their condition fields with ``JsonLogic``; ``policy_json_schema`` (in
``document``) adds the definitions below, so an editor flags an unknown operator and
completes the known ones, and a third-party validator refuses what ``validate`` refuses.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import WithJsonSchema

from engine.policy.logic import ALLOWED_OPERATORS

CONDITION_DEF = "Condition"
OPERATION_DEF = "Operation"
REF_OPERATOR = "ref"  # expanded when the policy loads, so the logic engine never sees it

# Pydantic resolves every $ref against definitions it made itself, so a condition field is
# marked and the mark becomes the $ref afterwards (``with_condition_definitions``).
_MARK = "x-jsonlogic-condition"
JsonLogic = Annotated[Any, WithJsonSchema({_MARK: True})]
"""A condition field: any value for the loader (which checks it), a JsonLogic condition in the schema."""
RuleCondition = Annotated[Any, WithJsonSchema({_MARK: True, "not": {"type": "null"}})]
"""A rule's or group's ``when``: a condition, never left empty (the loader refuses null too)."""

OPERATOR_DESCRIPTIONS: dict[str, str] = {
    "var": 'The fact at a path ("site.state_code"), or [path, default]. Inside some/all/none/'
    'filter/map, the current element ("" is the element itself).',
    "missing": "The listed paths that are null, empty text or absent (a list of them).",
    "missing_some": "[n, paths]: [] when at least n of the paths are present, else the missing ones.",
    "if": "[test, then, test2, then2, ..., else]: the value of the first branch whose test is truthy.",
    "?:": "[test, then, else]: like if.",
    "==": "Equal, with JsonLogic coercion (numeric text equals its number; null equals only null).",
    "===": "Equal, same type.",
    "!=": "Not equal, with coercion (the opposite of ==).",
    "!==": "Not equal or not the same type.",
    "!": "Not: true when the operand is falsy (false, null, 0, empty text, []).",
    "!!": "True when the operand is truthy (anything but false, null, 0, empty text, []).",
    "or": "The first truthy operand, else the last.",
    "and": "The first falsy operand, else the last.",
    ">": "Greater than (numbers; a value that is not a number is an evaluation error).",
    ">=": "Greater than or equal (numbers).",
    "<": "Less than; [a, b, c] is a < b < c (numbers).",
    "<=": "Less than or equal; [a, b, c] is a <= b <= c (numbers).",
    "max": "The largest number.",
    "min": "The smallest number.",
    "+": "Sum; a lone operand becomes a number.",
    "-": "Difference (folds over every operand); a lone operand is negated.",
    "*": "Product.",
    "/": "Quotient (folds over every operand).",
    "%": "Remainder.",
    "map": "[list, expression]: the expression for each element.",
    "reduce": "[list, expression, initial]: folds the list; the expression reads "
    '"current" and "accumulator".',
    "filter": "[list, test]: the elements for which the test is truthy.",
    "all": "[list, test]: true when the list is not empty and the test holds for every element.",
    "none": "[list, test]: true when the test holds for no element.",
    "some": "[list, test]: true when the test holds for at least one element.",
    "merge": "One list of the operands' items (lists are flattened one level).",
    "in": "[needle, list or text]: true when the list holds it or the text contains it.",
    "cat": "The operands joined as text.",
    "substr": "[text, start, length]: part of the text (negative start or length count from the end).",
    "days_between": "[a, b]: whole days from date a to date b (ISO dates or date-times); "
    "null if either is not a date.",
    REF_OPERATOR: "The named condition from definitions.",
}


def operator_names() -> list[str]:
    """Every operator a policy may write, in a stable order."""
    return [*sorted(ALLOWED_OPERATORS), REF_OPERATOR]


def with_condition_definitions(schema: dict[str, Any]) -> dict[str, Any]:
    """A model's JSON Schema with its ``JsonLogic`` fields pointing at the condition schema."""
    resolved = _resolve_marks(schema)
    resolved.setdefault("$defs", {}).update(_condition_definitions())
    return dict(resolved)


def _resolve_marks(node: Any) -> Any:
    if isinstance(node, list):
        return [_resolve_marks(item) for item in node]
    if not isinstance(node, dict):
        return node
    if node.get(_MARK) is True:
        rest = {key: value for key, value in node.items() if key != _MARK}
        return {"$ref": f"#/$defs/{CONDITION_DEF}", **rest}
    return {key: _resolve_marks(value) for key, value in node.items()}


def _condition_definitions() -> dict[str, Any]:
    condition = {"$ref": f"#/$defs/{CONDITION_DEF}"}
    properties: dict[str, Any] = {
        name: {**condition, "description": OPERATOR_DESCRIPTIONS[name]}
        for name in operator_names()
        if name != REF_OPERATOR
    }
    properties[REF_OPERATOR] = {"type": "string", "description": OPERATOR_DESCRIPTIONS[REF_OPERATOR]}
    return {
        CONDITION_DEF: {
            "description": "A JsonLogic condition: a literal, a list, or an operation "
            "{operator: arguments} with exactly one known operator.",
            # if/then rather than anyOf: a validator then names the unexpected operator.
            "if": {"type": "object"},
            "then": {"$ref": f"#/$defs/{OPERATION_DEF}"},
            "else": {"type": ["null", "boolean", "number", "string", "array"], "items": condition},
        },
        OPERATION_DEF: {
            "description": "One operation: an object with one key, the operator ({} is a literal).",
            "type": "object",
            "maxProperties": 1,
            "properties": properties,
            "additionalProperties": False,
        },
    }
