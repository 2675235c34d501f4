"""Loading a policy: every problem is a ``PolicyError`` that says ``file:line:column``."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from typing import Any

import pytest

from engine.errors import PolicyError, SourceLocation
from engine.policy.document import Policy, ReasonTemplate, load_policy_text, policy_json_schema
from engine.policy.logic import ALLOWED_OPERATORS
from engine.policy.sourcemap import SourceMap

BASE_LINES = [
    "program_id: prog-test",  # 1
    "name: Test program",  # 2
    'version: "1"',  # 3
    "applies_to: [SUBMITTED, PENDING]",  # 4
    "definitions:",  # 5
    '  in_tx: {"==": [{"var": "site.state_code"}, "TX"]}',  # 6
    '  big: {">=": [{"var": ["totals.battery_capacity_wh", 0]}, 10000]}',  # 7
    "rules:",  # 8
    "  - id: reject-out-of-state",  # 9
    '    when: {"!": {"ref": "in_tx"}}',  # 10
    "    status: REJECTED",  # 11
    '    reason: "Site is in {site.state_code}"',  # 12
    "  - id: approve",  # 13
    '    when: {"and": [{"ref": "in_tx"}, {"ref": "big"}]}',  # 14
    "    status: ACTIVE",  # 15
    "    reason: Approved",  # 16
    "default:",  # 17
    "  status: PENDING",  # 18
    "  reason: Needs review",  # 19
    "groups:",  # 20
    "  - id: houston",  # 21
    '    when: {"==": [{"var": "decision.status"}, "ACTIVE"]}',  # 22
    "    add: [LZ_HOUSTON]",  # 23
    "    remove: [LZ_NORTH]",  # 24
    "limits:",  # 25
    "  max_reject_ratio: 0.5",  # 26
    "  max_changes: 100",  # 27
    "  allow_leaving_active: [UNENROLLED]",  # 28
]
BASE = "\n".join(BASE_LINES) + "\n"


def edited(replace: dict[int, str] | None = None, insert_after: dict[int, str] | None = None) -> str:
    """The base policy with 1-based lines replaced and lines inserted after others."""
    lines: list[str] = []
    for number, line in enumerate(BASE_LINES, start=1):
        lines.append((replace or {}).get(number, line))
        if insert_after and number in insert_after:
            lines.append(insert_after[number])
    return "\n".join(lines) + "\n"


def load_error(text: str) -> PolicyError:
    with pytest.raises(PolicyError) as info:
        load_policy_text(text, "policy.yaml")
    return info.value


def single(error: PolicyError) -> tuple[int | None, int | None, str]:
    assert len(error.problems) == 1, [str(p) for p in error.problems]
    problem = error.problems[0]
    assert problem.location.path == "policy.yaml"
    return problem.location.line, problem.location.column, problem.message


def column_of(line: str, fragment: str) -> int:
    return line.index(fragment) + 1


# --- the base policy loads ----------------------------------------------------------------


def test_base_policy_loads_and_is_compiled() -> None:
    policy = load_policy_text(BASE, "policy.yaml")
    assert policy.program_id == "prog-test"
    assert policy.name == "Test program"
    assert policy.version == "1"
    assert policy.applies_to == frozenset({"SUBMITTED", "PENDING"})
    assert [rule.id for rule in policy.rules] == ["reject-out-of-state", "approve"]
    assert [rule.status for rule in policy.rules] == ["REJECTED", "ACTIVE"]
    assert [group.id for group in policy.groups] == ["houston"]
    assert policy.groups[0].add == ("LZ_HOUSTON",)
    assert policy.groups[0].remove == ("LZ_NORTH",)
    assert policy.groups[0].reads_decision
    assert policy.default_reason is not None
    assert policy.default_reason.text == "Needs review"
    assert policy.document.limits.max_reject_ratio == 0.5
    assert policy.document.limits.max_changes == 100
    assert [s.value for s in policy.document.limits.allow_leaving_active] == ["UNENROLLED"]
    assert policy.content_hash == hashlib.sha256(BASE.encode("utf-8")).hexdigest()
    assert policy.source == "policy.yaml"
    assert policy.source_text == BASE


def test_refs_are_expanded_at_load() -> None:
    policy = load_policy_text(BASE, "policy.yaml")
    in_tx = {"==": [{"var": "site.state_code"}, "TX"]}
    assert policy.rules[0].condition.source == {"!": in_tx}
    assert policy.rules[1].condition.source == {
        "and": [in_tx, {">=": [{"var": ["totals.battery_capacity_wh", 0]}, 10000]}]
    }


def test_positions_are_in_the_source_map_not_in_the_runtime_policy() -> None:
    policy = load_policy_text(BASE, "policy.yaml")
    assert not hasattr(policy, "yaml")
    assert not hasattr(policy, "expanded")
    sources = SourceMap.of(policy)
    assert sources.location(("rules", 1, "when")) == SourceLocation("policy.yaml", 14, 11)
    assert sources.position(("rules", 1, "when", "and", 5)) == (14, 19)  # its nearest ancestor, the list
    assert sources.position(("groups", 0, "add", 0)) == (23, 11)


def test_read_paths_cover_conditions_and_templates_but_not_decision() -> None:
    policy = load_policy_text(BASE, "policy.yaml")
    assert set(policy.read_paths) == {"site.state_code", "totals.battery_capacity_wh"}


def test_minimal_policy_loads() -> None:
    text = (
        "program_id: p\napplies_to: [SUBMITTED]\nrules:\n  - {id: a, when: true, status: ACTIVE, reason: r}\n"
    )
    policy = load_policy_text(text)
    assert policy.source == "<policy>"
    assert policy.document.default is None
    assert policy.default_reason is None
    assert policy.groups == []
    assert policy.name is None
    assert policy.version is None


def test_numeric_version_becomes_text() -> None:
    policy = load_policy_text(edited(replace={3: "version: 7"}), "policy.yaml")
    assert policy.version == "7"


def test_policy_loads_from_a_file(policy_from_text: Callable[..., Policy]) -> None:
    policy = policy_from_text(BASE, name="mine.yaml")
    assert policy.source.endswith("mine.yaml")
    assert policy.program_id == "prog-test"


# --- schema errors with positions --------------------------------------------------------


def test_unknown_key_points_at_the_key() -> None:
    line, column, message = single(load_error(edited(insert_after={16: "    colour: red"})))
    assert (line, column) == (17, 5)
    assert message == "rules.1.colour: unknown key"


def test_unknown_top_level_key() -> None:
    line, column, message = single(load_error(BASE + "extras: 1\n"))
    assert (line, column) == (29, 1)
    assert message == "extras: unknown key"


def test_wrong_type_points_at_the_value() -> None:
    line, column, message = single(load_error(edited(replace={4: "applies_to: SUBMITTED"})))
    assert (line, column) == (4, 13)
    assert message.startswith("applies_to: ")
    assert "list" in message


def test_rule_id_of_the_wrong_type() -> None:
    line, column, message = single(load_error(edited(replace={13: "  - id: 123"})))
    assert (line, column) == (13, 9)
    assert message.startswith("rules.1.id: ")


def test_bad_rule_status() -> None:
    line, column, message = single(load_error(edited(replace={15: "    status: APPROVED"})))
    assert (line, column) == (15, 13)
    assert "'APPROVED' is not a Flip status" in message
    assert "SUBMITTED" in message


def test_bad_status_in_applies_to() -> None:
    text = edited(replace={4: "applies_to: [SUBMITTED, Approved]"})
    line, column, message = single(load_error(text))
    assert (line, column) == (4, 25)
    assert message.startswith("applies_to.1: 'Approved' is not a Flip status")


def test_bad_default_status() -> None:
    line, column, message = single(load_error(edited(replace={18: "  status: MAYBE"})))
    assert (line, column) == (18, 11)
    assert message.startswith("default.status: 'MAYBE'")


def test_bad_group_id() -> None:
    line, column, message = single(load_error(edited(replace={23: "    add: [LZ HOUSTON]"})))
    assert (line, column) == (23, 11)
    assert message == "groups.0.add.0: 'LZ HOUSTON' must be letters, digits, '-' or '_'"


def test_bad_rule_id() -> None:
    line, column, message = single(load_error(edited(replace={13: '  - id: "approve me"'})))
    assert (line, column) == (13, 9)
    assert "'approve me' must be letters, digits" in message


def test_duplicate_rule_ids() -> None:
    line, column, message = single(load_error(edited(replace={13: "  - id: reject-out-of-state"})))
    assert (line, column) == (13, 9)
    assert "duplicate id 'reject-out-of-state'" in message


def test_duplicate_group_ids() -> None:
    extra = "  - id: houston\n    when: true\n    add: [OTHER]\n"
    text = edited(insert_after={24: extra.rstrip("\n")})
    line, column, message = single(load_error(text))
    assert (line, column) == (25, 9)
    assert "duplicate id 'houston'" in message


@pytest.mark.parametrize(
    ("number", "line", "fragment"),
    [
        (26, "  max_reject_ratio: 1.5", "1.5"),
        (27, "  max_changes: -1", "-1"),
        (28, "  allow_leaving_active: [GONE]", "GONE"),
    ],
)
def test_bad_limits(number: int, line: str, fragment: str) -> None:
    found_line, column, message = single(load_error(edited(replace={number: line})))
    assert (found_line, column) == (number, column_of(line, fragment))
    assert message.startswith("limits.")


def test_missing_required_keys() -> None:
    error = load_error("name: nothing else\n")
    messages = sorted(p.message for p in error.problems)
    assert messages == ["applies_to: Field required", "program_id: Field required", "rules: Field required"]
    assert all(p.location.line == 1 for p in error.problems)


@pytest.mark.parametrize(
    ("text", "where"),
    [
        (edited(replace={4: "applies_to: []"}), "applies_to"),
        ("\n".join(BASE_LINES[:7]) + "\nrules: []\n", "rules"),
    ],
)
def test_empty_lists_are_refused(text: str, where: str) -> None:
    _, _, message = single(load_error(text))
    assert message.startswith(f"{where}: ")
    assert "at least 1" in message


def test_every_problem_is_reported() -> None:
    text = edited(replace={15: "    status: APPROVED"}, insert_after={2: "colour: red"})
    error = load_error(text)
    assert sorted((p.location.line, p.message.split(":")[0]) for p in error.problems) == [
        (3, "colour"),
        (16, "rules.1.status"),
    ]
    assert str(error).count("policy.yaml:") == 2


# --- conditions, refs and templates ------------------------------------------------------


@pytest.mark.parametrize(
    ("when", "operator", "fragment"),
    [
        ('{"and": [{"ref": "in_tx"}, {"method": [{"var": "site.city"}, "upper"]}]}', "method", '{"method"'),
        ('{"log": {"var": "site.city"}}', "log", '{"log"'),
        ('{"!": {"or": [false, {"eval": "1"}]}}', "eval", '{"eval"'),
        ('{"var": {"method": ["x", "upper"]}}', "method", '{"method"'),
    ],
)
def test_unknown_operator(when: str, operator: str, fragment: str) -> None:
    line = f"    when: {when}"
    found_line, column, message = single(load_error(edited(replace={14: line})))
    assert (found_line, column) == (14, column_of(line, fragment))
    assert message == f"rules.1.when: unknown operator {operator!r}"


@pytest.mark.parametrize(("line_no", "where"), [(14, "rules.1.when"), (22, "groups.0.when")])
@pytest.mark.parametrize("empty", ["    when:", "    when: null", "    when: ~"])
def test_an_empty_condition_is_an_error_not_a_rule_dropped(line_no: int, where: str, empty: str) -> None:
    found_line, _column, message = single(load_error(edited(replace={line_no: empty})))
    assert found_line == line_no
    assert message == f"{where}: a condition is required (`true` matches every enrollment)"


def test_unknown_operator_in_a_group() -> None:
    line = '    when: {"in": [{"var": "decision.status"}, {"log": ["ACTIVE"]}]}'
    found_line, column, message = single(load_error(edited(replace={22: line})))
    assert (found_line, column) == (22, column_of(line, '{"log"'))
    assert message == "groups.0.when: unknown operator 'log'"


def test_unknown_operator_in_a_definition_points_at_the_definition() -> None:
    text = edited(replace={7: '  big: {"method": ["x", "upper"]}'})
    found_line, _column, message = single(load_error(text))
    assert found_line == 7
    assert message == "definitions.big: unknown operator 'method'"


def test_every_classic_operator_is_allowed() -> None:
    assert {"var", "missing", "missing_some", "==", "some", "days_between", "substr"} <= ALLOWED_OPERATORS
    assert not {"method", "log", "eval", "ref"} & ALLOWED_OPERATORS


def test_unknown_ref() -> None:
    line = '    when: {"!": {"ref": "in_texas"}}'
    found_line, column, message = single(load_error(edited(replace={10: line})))
    assert (found_line, column) == (10, 11)
    assert message == "rules.0.when: unknown ref 'in_texas' (definitions: big, in_tx)"


def test_ref_that_is_not_a_name() -> None:
    _, _, message = single(load_error(edited(replace={10: '    when: {"ref": 5}'})))
    assert "unknown ref 5" in message


def test_ref_cycle() -> None:
    text = edited(
        replace={10: '    when: {"ref": "a"}'},
        insert_after={7: '  a: {"and": [true, {"ref": "b"}]}\n  b: {"!": {"ref": "a"}}'},
    )
    found_line, column, message = single(load_error(text))
    assert (found_line, column) == (8, 6)
    assert message == "definitions.a: ref cycle: a -> b -> a"


def test_ref_to_itself() -> None:
    text = edited(
        replace={10: '    when: {"ref": "loop"}'}, insert_after={7: '  loop: {"!": {"ref": "loop"}}'}
    )
    _, _, message = single(load_error(text))
    assert message.endswith("ref cycle: loop -> loop")


def test_ref_in_a_group_is_expanded() -> None:
    text = edited(
        replace={22: '    when: {"and": [{"ref": "in_tx"}, {"==": [{"var": "decision.status"}, "ACTIVE"]}]}'}
    )
    policy = load_policy_text(text, "policy.yaml")
    assert policy.groups[0].source["and"][0] == {"==": [{"var": "site.state_code"}, "TX"]}


def _policy_json(when: Any, definitions: dict[str, Any] | None = None) -> str:
    rules = [{"id": "r", "when": when, "status": "ACTIVE", "reason": "x"}]
    document = {
        "program_id": "p",
        "applies_to": ["SUBMITTED"],
        "definitions": definitions or {},
        "rules": rules,
    }
    return json.dumps(document)  # JSON is YAML


def _ref_chain(depth: int) -> str:
    """A rule whose condition is a chain of ``depth`` refs: d1 -> d2 -> ... -> d<depth>."""
    definitions: dict[str, Any] = {f"d{i}": {"ref": f"d{i + 1}"} for i in range(1, depth)}
    definitions[f"d{depth}"] = {"==": [{"var": "site.state_code"}, "TX"]}
    return _policy_json({"ref": "d1"}, definitions)


def test_a_ref_chain_of_exactly_32_loads() -> None:
    policy = load_policy_text(_ref_chain(32), "policy.yaml")
    assert policy.rules[0].condition.source == {"==": [{"var": "site.state_code"}, "TX"]}


def test_a_ref_chain_of_33_is_refused() -> None:
    _, _, message = single(load_error(_ref_chain(33)))
    assert "refs nested too deep (more than 32)" in message


def _condition_of(parts: int) -> Any:
    """``{"or": [true, ...]}`` with ``parts`` parts: the operation, its list and each item."""
    return {"or": [True] * (parts - 2)}


def test_a_condition_of_exactly_5000_parts_loads() -> None:
    policy = load_policy_text(_policy_json(_condition_of(5_000)), "policy.yaml")
    assert len(policy.rules[0].condition.source["or"]) == 4_998


def test_a_condition_of_5001_parts_is_refused() -> None:
    _, _, message = single(load_error(_policy_json(_condition_of(5_001))))
    assert "condition too large: more than 5000 parts" in message


def test_the_part_limit_counts_refs_expanded() -> None:
    """Each use of a definition counts its parts again: two uses of 2,500 parts are too many."""
    definitions = {"half": _condition_of(2_500)}
    _, _, message = single(load_error(_policy_json({"and": [{"ref": "half"}, {"ref": "half"}]}, definitions)))
    assert "condition too large" in message
    assert load_policy_text(_policy_json({"ref": "half"}, definitions), "policy.yaml")


def test_ref_cycle_in_an_unused_definition_is_a_load_error() -> None:
    text = edited(insert_after={7: '  a: {"ref": "b"}\n  b: {"ref": "a"}'})
    error = load_error(text)
    assert "ref cycle" in str(error)


@pytest.mark.parametrize(
    ("reason", "character"),
    [
        ('"Site is in {site.state_code"', 12),
        ('"x {} y"', 3),
        ('"closing } alone"', 9),
        ('"{ }"', 1),
    ],
)
def test_bad_reason_template(reason: str, character: int) -> None:
    found_line, column, message = single(load_error(edited(replace={12: f"    reason: {reason}"})))
    assert (found_line, column) == (12, 13)
    assert message.startswith("rules.0.reason: reason template: ")
    assert f"at character {character}" in message
    assert "{{" in message


def test_bad_default_reason_template() -> None:
    found_line, column, message = single(load_error(edited(replace={19: '  reason: "{oops"'})))
    assert (found_line, column) == (19, 11)
    assert message.startswith("default.reason: reason template:")


def test_multi_key_object_as_condition_is_refused() -> None:
    _, _, message = single(load_error(edited(replace={10: '    when: {"==": [1, 1], "!": true}'})))
    assert message.startswith("rules.0.when: cannot compile condition")


# --- reason templates ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "parts"),
    [
        ("plain", ((False, "plain"),)),
        ("{a.b}", ((True, "a.b"),)),
        ("x {a} y", ((False, "x "), (True, "a"), (False, " y"))),
        ("{ a }", ((True, "a"),)),
        ("{{a}}", ((False, "{"), (False, "a"), (False, "}"))),
        ("{{{a}}}", ((False, "{"), (True, "a"), (False, "}"))),
        ("", ()),
    ],
)
def test_reason_template_parts(text: str, parts: tuple[tuple[bool, str], ...]) -> None:
    template = ReasonTemplate.parse(text)
    assert template.parts == parts
    assert template.text == text


@pytest.mark.parametrize("text", ["{", "}", "{}", "{ }", "a {b", "a} b", "{a{b}}", "{{a}"])
def test_reason_template_refuses_unbalanced_braces(text: str) -> None:
    with pytest.raises(ValueError, match="unbalanced or empty brace"):
        ReasonTemplate.parse(text)


def test_reason_template_renders_values() -> None:
    values = {
        "s": "TX",
        "n": 13500,
        "f": 2.0,
        "g": 2.5,
        "t": True,
        "no": False,
        "l": [1, "a"],
        "d": {"b": 1, "a": 2},
    }
    template = ReasonTemplate.parse("{s} {n} {f} {g} {t} {no} {l} {d} [{missing}] {{ok}}")
    assert template.render(values.get) == """TX 13500 2 2.5 true false [1, "a"] {"a": 2, "b": 1} [] {ok}"""
    assert template.paths == ["s", "n", "f", "g", "t", "no", "l", "d", "missing"]


# --- the JSON Schema -----------------------------------------------------------------------


def test_json_schema_describes_the_policy_keys() -> None:
    schema = policy_json_schema()
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["title"] == "flip-autoapprove policy"
    assert set(schema["required"]) == {"program_id", "applies_to", "rules"}
    assert set(schema["properties"]) == {
        "program_id",
        "name",
        "version",
        "applies_to",
        "definitions",
        "rules",
        "default",
        "groups",
        "limits",
        "review",
    }
    assert schema["additionalProperties"] is False
    statuses = schema["$defs"]["EnrollmentStatus"]["enum"]
    assert "SUBMITTED" in statuses
    assert "APPROVED" not in statuses
