"""Test cases from real enrollments: only what the policy reads, and they pass as written."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from engine.policy.cases import PERSONAL_SITE_KEYS, build_cases
from engine.policy.document import Policy, load_policy
from engine.policy.lint import PERSONAL_FIELDS
from engine.policy.testfile import run_test_file
from engine.render.cases import render_cases_yaml
from engine.sandbox.generator import generate_enrollments

NOW = datetime(2026, 11, 25, tzinfo=UTC)


def test_generated_cases_pass_as_a_test_file_even_under_a_conflicting_base(
    sample_policy_path: Path, generated_program: str, tmp_path: Path
) -> None:
    policy = load_policy(sample_policy_path)
    enrollments = list(generate_enrollments(generated_program, 60, seed=21, now=NOW))
    cases = build_cases(policy, enrollments, NOW)
    assert len(cases) == 60
    reads_personal = any(path in PERSONAL_FIELDS for path in policy.read_paths)  # bench30 reads company_name
    assert all(case.exact for case in cases) or reads_personal
    text = render_cases_yaml(cases, NOW, "p")
    # A base that would change every decision if a case relied on it.
    base = (
        "base:\n  status: SUBMITTED\n  site: {state_code: OK, zip_code: '00000', groups: [{id: X}]}\n"
        "  devices: [{type: BATTERY, attributes: {battery_capacity_wh: 1}}]\n"
        "  program_specific_attributes: [{name: tariff, type: string, value: NONE}]\n"
    )
    test_file = tmp_path / "generated.test.yaml"
    test_file.write_text(
        f"policy: {sample_policy_path}\nnow: '2026-11-25T00:00:00Z'\n{base}cases:\n{text}", encoding="utf-8"
    )
    result = run_test_file(test_file)
    assert (result.passed, result.failed) == (60, 0), [c.mismatches for c in result.cases if not c.passed][:3]


def test_cases_never_hold_personal_data(tx_policy: Policy) -> None:
    enrollments = list(generate_enrollments("prog-tx-residential-battery", 200, seed=2, now=NOW))
    text = render_cases_yaml(build_cases(tx_policy, enrollments, NOW), NOW, "p")
    for raw in enrollments:
        site = raw.get("site") or {}
        for key in ("first_name", "last_name", "email", "street_address"):
            value = site.get(key)
            if value:
                assert str(value) not in text
    for key in PERSONAL_SITE_KEYS:
        assert f"{key}:" not in text


def test_only_the_fields_the_policy_reads_are_kept(
    tx_policy: Policy, tx_enrollment: Callable[..., dict]
) -> None:
    raw = tx_enrollment(status_reason="called twice", created_at="2026-01-01T00:00:00Z")
    raw["site"].update(
        first_name="Maria", email="maria@example.com", city="Houston", service_account_id="SA-1"
    )
    raw["devices"][0].update(manufacturer_name="Tesla", configuration={"reserve_percentage": 20})
    raw["program_specific_attributes"].append({"name": "unused", "type": "string", "value": "x"})
    (case,) = build_cases(tx_policy, [raw], NOW)
    assert case.exact
    assert case.enrollment == {
        "status": "SUBMITTED",
        "site": {"state_code": "TX", "zip_code": "77002", "groups": []},
        "devices": [
            {
                "type": "BATTERY",
                "install_date": "2023-05-01T00:00:00Z",
                "attributes": {"battery_capacity_wh": 13500, "battery_power_output_w": 5000},
            }
        ],
        "program_specific_attributes": [
            {"name": "utility_account_number", "type": "string", "value": "TX-0012345678"},
            {"name": "has_solar", "type": "boolean", "value": "no"},
            {"name": "tariff", "type": "string", "value": "RES-STD"},
        ],
    }
    assert case.expect == {
        "status": "ACTIVE", "rule_id": "approve", "group_ids": ["LZ_HOUSTON"], "action": "update",
        "reason": "Meets program requirements (13500 Wh of storage)",
    }  # fmt: skip
    assert case.name == "enr-1: SUBMITTED -> ACTIVE by approve"


def test_a_policy_that_reads_personal_data_still_gets_none_and_says_so(
    policy_from_text: Callable[..., Policy],
) -> None:
    policy = policy_from_text(
        "program_id: p\napplies_to: [SUBMITTED]\nrules:\n"
        '  - {id: named, status: ACTIVE, reason: "Hello {site.first_name}",\n'
        '     when: {"var": "site.first_name"}}\n'
        "default: {status: PENDING, reason: d}\n"
    )
    raw = {"id": "a", "status": "SUBMITTED", "site": {"first_name": "Maria", "email": "m@example.com"}}
    (case,) = build_cases(policy, [raw], NOW)
    assert not case.exact
    assert "Maria" not in json.dumps(case.as_dict())
    assert case.expect["rule_id"] == "default"  # what the case itself gets, without the name
    assert "personal fields" in render_cases_yaml([case], NOW, "p")
