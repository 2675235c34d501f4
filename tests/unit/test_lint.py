"""Lint: warnings for policies that load but probably do not say what their author meant."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.errors import Problem
from engine.policy.document import load_policy, load_policy_text
from engine.policy.lint import lint_policy

HEADER = "program_id: p\napplies_to: [SUBMITTED]\nrules:\n"


def lint(text: str) -> list[Problem]:
    problems = lint_policy(load_policy_text(text, "lint.yaml"))
    assert all(problem.severity == "warning" for problem in problems)
    assert all(problem.location.path == "lint.yaml" for problem in problems)
    return problems


def one_rule(when: str, reason: str = "r") -> str:
    return HEADER + f"  - id: a\n    when: {when}\n    status: ACTIVE\n    reason: {reason!r}\n"


EXAMPLES = sorted(
    p.name
    for p in (Path(__file__).resolve().parents[2] / "rules").glob("*.yaml")
    if not p.name.endswith(".test.yaml")
)


def test_there_are_example_policies() -> None:
    assert len(EXAMPLES) >= 2


@pytest.mark.parametrize("name", EXAMPLES)
def test_example_policies_lint_clean(rules_dir: Path, name: str) -> None:
    assert lint_policy(load_policy(rules_dir / name)) == []


@pytest.mark.parametrize(
    ("path", "suggestion"),
    [
        ("site.zip_cod", "site.zip_code"),
        ("site.stat_code", "site.state_code"),
        ("stauts", "status"),
        ("device.0.type", "devices.0.type"),
        ("totally_unknown", None),
    ],
)
def test_unknown_fact_path_with_suggestion(path: str, suggestion: str | None) -> None:
    problems = lint(one_rule(f'{{"==": [{{"var": "{path}"}}, "x"]}}'))
    assert len(problems) == 1
    problem = problems[0]
    assert f"{path!r} is not a fact" in problem.message
    assert problem.message.startswith("rules.0.when: ")
    assert problem.suggestion == suggestion
    assert (problem.location.line, problem.location.column) == (5, 19)
    if suggestion:
        assert str(problem).endswith(f"(did you mean {suggestion}?)")


@pytest.mark.parametrize(
    "path",
    [
        "site.state_code",
        "site.group_ids",
        "program.anything_at_all",
        "totals.battery_capacity_wh",
        "totals.device_count",
        "devices.0.install_date",
        "devices.1.attributes.x",
        "now",
        "status",
        "id",
        "updated_at",
    ],
)
def test_known_fact_paths_are_quiet(path: str) -> None:
    assert lint(one_rule(f'{{"==": [{{"var": "{path}"}}, "x"]}}')) == []


def test_unknown_key_inside_a_device_iteration() -> None:
    problems = lint(one_rule('{"some": [{"var": "devices"}, {"==": [{"var": "typ"}, "BATTERY"]}]}'))
    assert len(problems) == 1
    assert "'typ' is not a fact (inside an iteration over devices)" in problems[0].message
    assert problems[0].suggestion == "type"


def test_iteration_over_something_else_is_not_checked() -> None:
    when = '{"some": [{"var": "site.groups"}, {"==": [{"var": "anything"}, "X"]}]}'
    assert lint(one_rule(when)) == []


def test_decision_is_a_fact_only_in_groups() -> None:
    text = one_rule('{"==": [{"var": "decision.status"}, "ACTIVE"]}') + (
        "groups:\n"
        "  - id: g\n"
        '    when: {"==": [{"var": "decision.status"}, "ACTIVE"]}\n'
        "    add: [G]\n"
        "  - id: h\n"
        '    when: {"==": [{"var": "decision.stat"}, "ACTIVE"]}\n'
        "    add: [H]\n"
    )
    problems = lint(text)
    assert [(p.location.line, p.message.split(":")[0]) for p in problems] == [
        (5, "rules.0.when"),
        (13, "groups.1.when"),
    ]
    assert problems[1].suggestion == "decision.status"


def test_relational_comparison_of_a_var_without_default_warns() -> None:
    problems = lint(one_rule('{">=": [{"var": "totals.battery_capacity_wh"}, 10000]}'))
    assert len(problems) == 1
    assert "coerced to 0 when it is missing" in problems[0].message
    assert (problems[0].location.line, problems[0].location.column) == (5, 11)


@pytest.mark.parametrize(
    "when",
    [
        '{">=": [{"var": ["totals.battery_capacity_wh", 0]}, 10000]}',
        '{">=": [{"var": "totals.device_count"}, 1]}',
        '{"<": [{"var": "now"}, "2027"]}',
        '{"==": [{"var": "site.zip_code"}, "77002"]}',
    ],
)
def test_comparisons_that_cannot_coerce_a_missing_value_are_quiet(when: str) -> None:
    assert lint(one_rule(when)) == []


def test_rules_after_an_always_true_rule_are_unreachable() -> None:
    text = HEADER + (
        "  - id: first\n    when: true\n    status: ACTIVE\n    reason: r\n"
        '  - id: second\n    when: {"var": "status"}\n    status: PENDING\n    reason: r\n'
        "  - id: third\n    when: false\n    status: PENDING\n    reason: r\n"
        "default: {status: PENDING, reason: d}\n"
    )
    problems = lint(text)
    assert [(p.location.line, p.message) for p in problems] == [
        (8, "rules.1: rule 'second' can never match: rule 'first' above it is always true"),
        (12, "rules.2: rule 'third' can never match: rule 'first' above it is always true"),
        (16, "default can never apply: rule 'first' is always true"),
    ]


@pytest.mark.parametrize("when", ["false", "0", '""', "[]", '{"var": "site.state_code"}', '{"==": [1, 2]}'])
def test_rules_that_are_not_always_true_do_not_shadow(when: str) -> None:
    text = HEADER + (
        f"  - id: first\n    when: {when}\n    status: ACTIVE\n    reason: r\n"
        "  - id: second\n    when: true\n    status: PENDING\n    reason: r\n"
    )
    assert lint(text) == []


def test_constant_but_true_expression_shadows() -> None:
    text = HEADER + (
        '  - id: first\n    when: {"==": [1, 1]}\n    status: ACTIVE\n    reason: r\n'
        "  - id: second\n    when: true\n    status: PENDING\n    reason: r\n"
    )
    assert [p.message for p in lint(text)] == [
        "rules.1: rule 'second' can never match: rule 'first' above it is always true"
    ]


def test_placeholders_that_are_not_facts() -> None:
    text = one_rule('{"var": "status"}', "{site.stat_code} {program.ok} {totals.ok} {nope}") + (
        "default: {status: PENDING, reason: '{site.state_code} {devices.0.serial_numbr}'}\n"
    )
    problems = lint(text)
    assert [(p.location.line, p.message, p.suggestion) for p in problems] == [
        (7, "rules.0.reason: placeholder {site.stat_code} is not a fact", "site.state_code"),
        (7, "rules.0.reason: placeholder {nope} is not a fact", None),
        (8, "default.reason: placeholder {devices.0.serial_numbr} is not a fact", "devices.0.serial_number"),
    ]


def test_unknown_path_inside_a_definition_points_into_the_rule() -> None:
    text = (
        "program_id: p\napplies_to: [SUBMITTED]\n"
        'definitions:\n  tx: {"==": [{"var": "site.stat_code"}, "TX"]}\n'
        'rules:\n  - id: a\n    when: {"ref": "tx"}\n    status: ACTIVE\n    reason: r\n'
    )
    problems = lint(text)
    assert len(problems) == 1
    assert problems[0].location.line == 7
    assert problems[0].suggestion == "site.state_code"
