"""Every example policy's own cases pass; the policy test runner reports what differs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from engine.errors import PolicyError
from engine.policy.decision import Action, Decision
from engine.policy.paths import find_policy_files
from engine.policy.testfile import (
    Expectation,
    Mismatch,
    compare,
    deep_merge,
    run_test_file,
)
from engine.render.text import render_test_results

RULES = Path(__file__).resolve().parents[2] / "rules"
TEST_FILES = sorted(RULES.glob("*.test.yaml"))

POLICY = {
    "program_id": "p",
    "applies_to": ["SUBMITTED", "PENDING"],
    "rules": [
        {
            "id": "reject-ok",
            "when": {"==": [{"var": "site.state_code"}, "OK"]},
            "status": "REJECTED",
            "reason": "Site is in {site.state_code}",
        },
        {
            "id": "approve",
            "when": {"==": [{"var": "site.state_code"}, "TX"]},
            "status": "ACTIVE",
            "reason": "ok",
        },
    ],
    "default": {"status": "PENDING", "reason": "review"},
    "groups": [{"id": "zone", "when": {"==": [{"var": "site.zip_code"}, "77002"]}, "add": ["HOUSTON"]}],
}


def write_suite(folder: Path, body: str, policy: dict[str, Any] | None = None) -> Path:
    (folder / "policy.yaml").write_text(json.dumps(policy or POLICY), encoding="utf-8")
    path = folder / "policy.test.yaml"
    path.write_text(body, encoding="utf-8")
    return path


def test_every_example_policy_ships_a_test_file() -> None:
    policies = sorted(p for p in RULES.glob("*.yaml") if not p.name.endswith(".test.yaml"))
    assert len(TEST_FILES) >= 2
    assert sorted(p.name.replace(".test.yaml", ".yaml") for p in TEST_FILES) == [p.name for p in policies]


@pytest.mark.parametrize("path", TEST_FILES, ids=lambda p: p.name)
def test_example_policy_cases_pass(path: Path) -> None:
    result = run_test_file(path)
    assert result.cases, "a test file with no cases"
    failures = [
        f"{case.location} {case.name}: {case.mismatches} error={case.decision.error}"
        for case in result.cases
        if not case.passed
    ]
    assert failures == []
    assert result.passed == len(result.cases)
    assert result.failed == 0


def test_find_test_files(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    for name in ("b.test.yaml", "a.test.yaml", "sub/c.test.yaml", "policy.yaml", "sub/z.yaml", "notes.txt"):
        (tmp_path / name).write_text("x", encoding="utf-8")
    found = find_policy_files([tmp_path], tests=True)
    assert [p.relative_to(tmp_path).as_posix() for p in found] == [
        "a.test.yaml",
        "b.test.yaml",
        "sub/c.test.yaml",
    ]
    policies = find_policy_files([tmp_path])
    assert [p.relative_to(tmp_path).as_posix() for p in policies] == ["policy.yaml", "sub/z.yaml"]
    named = tmp_path / "policy.yaml"
    missing = tmp_path / "missing.test.yaml"
    assert find_policy_files([named, missing], tests=True) == [named, missing]
    assert [p.name for p in find_policy_files([RULES], tests=True)] == [p.name for p in TEST_FILES]


def test_failing_case_is_reported_with_its_mismatches(tmp_path: Path) -> None:
    path = write_suite(
        tmp_path,
        "policy: policy.yaml\n"
        "now: '2026-11-25T00:00:00Z'\n"
        "cases:\n"
        "  - name: right\n"
        "    enrollment: {status: SUBMITTED, site: {state_code: TX}}\n"
        "    expect: {status: ACTIVE, rule_id: approve}\n"
        "  - name: wrong\n"
        "    enrollment: {status: SUBMITTED, site: {state_code: OK, zip_code: '77002'}}\n"
        "    expect: {status: ACTIVE, rule_id: approve, group_ids: [], action: update, reason: ok}\n",
    )
    result = run_test_file(path)
    assert (result.passed, result.failed) == (1, 1)
    right, wrong = result.cases
    assert right.passed
    assert right.mismatches == []
    assert not wrong.passed
    assert wrong.name == "wrong"
    assert (wrong.location.line, wrong.location.column) == (7, 5)
    assert wrong.mismatches == [
        Mismatch("status", "ACTIVE", "REJECTED"),
        Mismatch("rule_id", "approve", "reject-ok"),
        Mismatch("group_ids", [], ["HOUSTON"]),
        Mismatch("reason", "ok", "Site is in OK"),
    ]
    report = render_test_results([result])
    lines = report.splitlines()
    assert lines[0] == f"FAIL {path}:7:5 wrong"
    assert '    status: expected "ACTIVE", got "REJECTED"' in lines
    assert '    group_ids: expected [], got ["HOUSTON"]' in lines
    assert any(line.startswith("    trace rule reject-ok: MATCH") for line in lines)
    assert lines[-1] == "1 passed, 1 failed"
    assert "right" not in report
    assert f"PASS {path}:4:5 right" in render_test_results([result], verbose=True)


def test_base_is_merged_under_every_case(tmp_path: Path) -> None:
    path = write_suite(
        tmp_path,
        "policy: policy.yaml\n"
        "base:\n"
        "  status: SUBMITTED\n"
        "  site: {state_code: TX, zip_code: '77002'}\n"
        "cases:\n"
        "  - name: inherits everything\n"
        "    expect: {status: ACTIVE, rule_id: approve, group_ids: [HOUSTON]}\n"
        "  - name: overrides one nested key and keeps the other\n"
        "    enrollment: {site: {state_code: OK}}\n"
        "    expect: {status: REJECTED, rule_id: reject-ok, group_ids: [HOUSTON]}\n"
        "  - name: replaces the status\n"
        "    enrollment: {status: ACTIVE}\n"
        "    expect: {status: null, rule_id: null, action: skip}\n"
        "  - name: a null replaces a whole object\n"
        "    enrollment: {site: null}\n"
        "    expect: {status: PENDING, rule_id: default, group_ids: []}\n",
    )
    result = run_test_file(path)
    assert [case.mismatches for case in result.cases] == [[], [], [], []]
    assert [case.decision.enrollment_id for case in result.cases] == ["case-1", "case-2", "case-3", "case-4"]


def test_group_ids_are_compared_as_sets_and_unset_fields_are_not_compared() -> None:
    decision = Decision(
        "e", "SUBMITTED", "ACTIVE", "ok", "approve", ["B", "A"], [], ["B", "A"], [], Action.UPDATE
    )
    assert compare(Expectation(status="ACTIVE", rule_id="approve", group_ids=["A", "B"]), decision) == []
    assert compare(Expectation(status="ACTIVE", rule_id="approve"), decision) == []
    assert compare(Expectation(status="ACTIVE", rule_id="approve", action="none"), decision) == [
        Mismatch("action", "none", "update")
    ]


def test_deep_merge() -> None:
    base = {"a": 1, "site": {"x": 1, "y": {"z": 1}}, "list": [1, 2]}
    merged = deep_merge(base, {"site": {"y": {"w": 2}}, "list": [3], "b": 2})
    assert merged == {"a": 1, "site": {"x": 1, "y": {"z": 1, "w": 2}}, "list": [3], "b": 2}
    assert base == {"a": 1, "site": {"x": 1, "y": {"z": 1}}, "list": [1, 2]}


def test_malformed_test_file_points_at_the_problem(tmp_path: Path) -> None:
    path = write_suite(
        tmp_path,
        "policy: policy.yaml\ncases:\n  - name: a\n"
        "    expect: {status: ACTIVE, rule_id: a}\n    colour: red\n",
    )
    with pytest.raises(PolicyError) as info:
        run_test_file(path)
    (problem,) = info.value.problems
    assert (problem.location.path, problem.location.line) == (str(path), 5)
    assert problem.message.startswith("cases.0.colour:")


def test_test_file_without_cases_is_refused(tmp_path: Path) -> None:
    path = write_suite(tmp_path, "policy: policy.yaml\ncases: []\n")
    with pytest.raises(PolicyError, match="cases"):
        run_test_file(path)


def test_test_file_naming_a_missing_policy(tmp_path: Path) -> None:
    path = tmp_path / "x.test.yaml"
    path.write_text("policy: nowhere.yaml\ncases:\n  - {name: a, expect: {status: null, rule_id: null}}\n")
    with pytest.raises(PolicyError) as info:
        run_test_file(path)
    assert "nowhere.yaml" in str(info.value)
    assert "cannot read the file" in str(info.value)


def test_test_file_with_a_broken_policy_reports_the_policy_error(tmp_path: Path) -> None:
    broken = {**POLICY, "rules": [{**POLICY["rules"][0], "status": "APPROVED"}]}
    body = "policy: policy.yaml\ncases:\n  - {name: a, expect: {status: null, rule_id: null}}\n"
    path = write_suite(tmp_path, body, policy=broken)
    with pytest.raises(PolicyError, match="'APPROVED' is not a Flip status"):
        run_test_file(path)


def test_unsafe_yaml_in_a_test_file_is_refused(tmp_path: Path) -> None:
    path = write_suite(tmp_path, "policy: policy.yaml\ncases: !!python/object/apply:os.system [echo]\n")
    with pytest.raises(PolicyError, match="not allowed"):
        run_test_file(path)
