"""The shipped JSON Schema: what the loader accepts, for editors and third-party validators.

Every example policy is valid under it; every broken policy below is refused both by the
schema (through the ``jsonschema`` library, as ``check-jsonschema`` would) and by the loader.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from engine.errors import PolicyError
from engine.policy.document import load_policy_text, policy_json_schema
from engine.policy.logic import ALLOWED_OPERATORS
from engine.policy.schema import OPERATOR_DESCRIPTIONS
from engine.policy.yamlsafe import load_yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
SHIPPED = REPO_ROOT / "schema" / "policy.schema.json"
EXAMPLES = sorted(p for p in (REPO_ROOT / "rules").glob("*.yaml") if not p.name.endswith(".test.yaml"))


@pytest.fixture(scope="module")
def validator() -> jsonschema.Draft202012Validator:
    schema = json.loads(SHIPPED.read_text(encoding="utf-8"))
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def test_the_shipped_schema_is_the_one_the_models_make() -> None:
    assert json.loads(SHIPPED.read_text(encoding="utf-8")) == policy_json_schema()


def test_the_schema_names_every_operator_the_loader_accepts() -> None:
    operation = policy_json_schema()["$defs"]["Operation"]
    assert set(operation["properties"]) == ALLOWED_OPERATORS | {"ref"}
    assert operation["additionalProperties"] is False
    assert operation["maxProperties"] == 1
    assert all(operation["properties"][name]["description"] for name in operation["properties"])
    assert set(OPERATOR_DESCRIPTIONS) == ALLOWED_OPERATORS | {"ref"}


def test_every_condition_field_is_a_condition() -> None:
    schema = policy_json_schema()
    condition = {"$ref": "#/$defs/Condition"}
    assert schema["$defs"]["StatusRule"]["properties"]["when"]["$ref"] == condition["$ref"]
    assert schema["$defs"]["GroupRule"]["properties"]["when"]["$ref"] == condition["$ref"]
    assert schema["properties"]["definitions"]["additionalProperties"] == condition
    assert "x-jsonlogic-condition" not in json.dumps(schema)


@pytest.mark.parametrize("policy", EXAMPLES, ids=lambda p: p.name)
def test_every_example_policy_is_valid(validator: jsonschema.Draft202012Validator, policy: Path) -> None:
    data = load_yaml(policy.read_text(encoding="utf-8"), str(policy)).data
    assert [error.message for error in validator.iter_errors(data)] == []


def test_there_are_example_policies() -> None:
    assert len(EXAMPLES) >= 2


BASE: dict[str, Any] = {
    "program_id": "prog-test",
    "applies_to": ["SUBMITTED"],
    "definitions": {"in_tx": {"==": [{"var": "site.state_code"}, "TX"]}},
    "rules": [{"id": "approve", "when": {"ref": "in_tx"}, "status": "ACTIVE", "reason": "ok"}],
    "default": {"status": "PENDING", "reason": "review"},
    "groups": [{"id": "zone", "when": {"var": "decision.status"}, "add": ["LZ_1"]}],
    "limits": {"max_changes": 10},
}


def _policy(
    path: tuple[str | int, ...] = (), value: Any = None, *, drop: str | None = None
) -> dict[str, Any]:
    """The base policy with the value at ``path`` replaced (or a top-level key dropped)."""
    document = copy.deepcopy(BASE)
    if drop is not None:
        del document[drop]
    if path:
        target: Any = document
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value
    return document


def _with_key(path: tuple[str | int, ...], key: str, value: Any) -> dict[str, Any]:
    document = copy.deepcopy(BASE)
    target: Any = document
    for part in path:
        target = target[part]
    target[key] = value
    return document


def _when(condition: Any) -> dict[str, Any]:
    return _policy(("rules", 0, "when"), condition)


BROKEN = {
    # unknown operators, wherever a condition is written
    "unknown-operator": _when({"method": [{"var": "site"}, "upper"]}),
    "unknown-nested-operator": _when({"and": [True, {"or": [{"log": 1}]}]}),
    "unknown-operator-in-a-list": _when([{"var": "a"}, {"throw": "x"}]),
    "library-extension": _when({"starts_with": [{"var": "site.zip_code"}, "77"]}),
    "unknown-operator-in-a-definition": _policy(("definitions", "in_tx"), {"upper": "tx"}),
    "unknown-operator-in-a-group": _policy(("groups", 0, "when"), {"exists": "decision"}),
    "two-operators-in-one-object": _when({"==": [1, 1], "!": True}),
    "ref-to-a-number": _when({"ref": 5}),
    # misspelled keys
    "misspelled-top-level-key": _with_key((), "rule", []),
    "misspelled-rule-key": _with_key(("rules", 0), "staus", "ACTIVE"),
    "misspelled-group-key": _with_key(("groups", 0), "ad", ["LZ_2"]),
    "misspelled-default-key": _with_key(("default",), "reasons", "x"),
    "misspelled-limit": _with_key(("limits",), "max_change", 5),
    # wrong types and values
    "applies-to-a-string": _policy(("applies_to",), "SUBMITTED"),
    "unknown-status": _policy(("rules", 0, "status"), "APPROVED"),
    "unknown-status-in-applies-to": _policy(("applies_to",), ["SUBMITTED", "DONE"]),
    "rule-id-with-a-space": _policy(("rules", 0, "id"), "my rule"),
    "reason-a-number": _policy(("rules", 0, "reason"), 5),
    "reject-ratio-above-one": _policy(("limits", "max_reject_ratio"), 2),
    "negative-max-changes": _policy(("limits", "max_changes"), -1),
    "group-add-a-string": _policy(("groups", 0, "add"), "LZ_1"),
    "rules-an-object": _policy(("rules",), {"approve": True}),
    "no-rules": _policy(("rules",), []),
    "no-applies-to": _policy(drop="applies_to"),
    "no-program-id": _policy(drop="program_id"),
}


@pytest.mark.parametrize("document", BROKEN.values(), ids=BROKEN.keys())
def test_a_broken_policy_is_refused_by_the_schema_and_by_the_loader(
    validator: jsonschema.Draft202012Validator, document: dict[str, Any]
) -> None:
    assert list(validator.iter_errors(document)), "the schema accepted it"
    with pytest.raises(PolicyError):
        load_policy_text(json.dumps(document), "policy.yaml")


def test_the_base_of_the_broken_policies_is_valid(validator: jsonschema.Draft202012Validator) -> None:
    assert list(validator.iter_errors(BASE)) == []
    load_policy_text(json.dumps(BASE), "policy.yaml")


@pytest.mark.parametrize("operator", sorted(ALLOWED_OPERATORS))
def test_every_operator_is_accepted_by_both(
    validator: jsonschema.Draft202012Validator, operator: str
) -> None:
    document = _when({"!!": [{operator: [{"var": "site.size"}, 1]}]})
    assert list(validator.iter_errors(document)) == []
    load_policy_text(json.dumps(document), "policy.yaml")


@pytest.mark.parametrize("condition", [True, 5, "text", [1, {"var": "a"}], {}, {"and": []}])
def test_literals_lists_and_the_empty_object_are_conditions(
    validator: jsonschema.Draft202012Validator, condition: Any
) -> None:
    assert list(validator.iter_errors(_when(condition))) == []
    load_policy_text(json.dumps(_when(condition)), "policy.yaml")


def test_an_empty_when_is_refused_by_both(validator: jsonschema.Draft202012Validator) -> None:
    """`when:` left empty is null: not a condition (a rule that could never match)."""
    errors = list(validator.iter_errors(_when(None)))
    assert [list(e.absolute_path) for e in errors] == [["rules", 0, "when"]]
    with pytest.raises(PolicyError, match=r"rules\.0\.when: a condition is required"):
        load_policy_text(json.dumps(_when(None)), "policy.yaml")


def test_the_schema_names_the_unknown_operator(validator: jsonschema.Draft202012Validator) -> None:
    error = jsonschema.exceptions.best_match(validator.iter_errors(_when({"and": [True, {"neq": [1, 2]}]})))
    assert error is not None
    assert "'neq' was unexpected" in error.message
    assert list(error.absolute_path) == ["rules", 0, "when", "and", 1]
