"""The policy's review settings: ``review.require_approval`` and ``approval: required``."""

from __future__ import annotations

import pytest

from engine.errors import PolicyError
from engine.policy.decision import Action, Decision
from engine.policy.document import Policy, load_policy_text, policy_json_schema
from engine.policy.evaluator import Evaluator

POLICY = """\
program_id: prog-test
applies_to: [SUBMITTED]
rules:
  - id: reject-out-of-state
    when: {"!=": [{"var": "site.state_code"}, "TX"]}
    status: REJECTED
    reason: Outside the territory
  - id: pause-new-zone
    when: {"==": [{"var": "site.zip_code"}, "77999"]}
    status: PAUSED
    reason: New zone
    approval: required
  - id: approve
    when: {"==": [{"var": "site.zip_code"}, "77002"]}
    status: ACTIVE
    reason: Approved
default:
  status: PENDING
  reason: Needs review
  approval: required
groups:
  - id: houston
    when: {"==": [{"var": "site.zip_code"}, "77002"]}
    add: [LZ_HOUSTON]
review:
  require_approval: [REJECTED, UNENROLLED]
"""


def enrollment(state: str, zip_code: str, status: str = "SUBMITTED") -> dict[str, object]:
    return {
        "id": f"e-{state}-{zip_code}",
        "status": status,
        "site": {"state_code": state, "zip_code": zip_code},
    }


@pytest.fixture
def policy() -> Policy:
    return load_policy_text(POLICY, "policy.yaml")


def decide(policy: Policy, raw: dict[str, object]) -> Decision:
    return Evaluator(policy).evaluate(raw)


def test_review_section_loads(policy: Policy) -> None:
    assert policy.approval_statuses == frozenset({"REJECTED", "UNENROLLED"})
    assert policy.approval_rules == frozenset({"pause-new-zone", "default"})


def test_changes_to_a_listed_status_wait(policy: Policy) -> None:
    rejected = decide(policy, enrollment("CA", "90001"))
    assert (rejected.status, rejected.action) == ("REJECTED", Action.UPDATE)
    assert policy.requires_approval(rejected)


def test_a_rule_marked_approval_required_waits_others_do_not(policy: Policy) -> None:
    assert policy.requires_approval(decide(policy, enrollment("TX", "77999")))
    assert policy.requires_approval(decide(policy, enrollment("TX", "12345")))  # the default
    approved = decide(policy, enrollment("TX", "77002"))
    assert approved.status == "ACTIVE"
    assert not policy.requires_approval(approved)


def test_decisions_that_change_nothing_never_wait(policy: Policy) -> None:
    unchanged = decide(policy, enrollment("CA", "90001", status="REJECTED"))
    assert unchanged.action is Action.SKIP
    assert not policy.requires_approval(unchanged)
    already = load_policy_text(POLICY.replace("applies_to: [SUBMITTED]", "applies_to: [SUBMITTED, REJECTED]"))
    same = decide(already, enrollment("CA", "90001", status="REJECTED"))
    assert same.action is Action.NONE
    assert not already.requires_approval(same)


def test_a_policy_without_review_sends_everything() -> None:
    text = POLICY.split("review:", maxsplit=1)[0].replace("approval: required\n", "approval: null\n")
    plain = load_policy_text(text)
    assert plain.approval_statuses == frozenset()
    assert not plain.requires_approval(decide(plain, enrollment("CA", "90001")))


@pytest.mark.parametrize(
    ("old", "new", "where"),
    [
        (
            "require_approval: [REJECTED, UNENROLLED]",
            "require_approval: [REJECTED, DENIED]",
            "review.require_approval.1",
        ),
        ("require_approval: [REJECTED, UNENROLLED]", "require_approval: REJECTED", "review.require_approval"),
        ("require_approval: [REJECTED, UNENROLLED]", "needs_approval: [REJECTED]", "review.needs_approval"),
        ("    approval: required", "    approval: maybe", "rules.1.approval"),
        ("  approval: required\ngroups", "  approval: always\ngroups", "default.approval"),
    ],
)
def test_bad_review_settings_name_where(old: str, new: str, where: str) -> None:
    text = POLICY.replace(old, new, 1)
    assert text != POLICY
    with pytest.raises(PolicyError) as info:
        load_policy_text(text, "policy.yaml")
    messages = [str(problem) for problem in info.value.problems]
    assert any(where in message and message.startswith("policy.yaml:") for message in messages), messages


def test_the_schema_describes_the_review_keys() -> None:
    schema = policy_json_schema()
    review = schema["$defs"]["ReviewSettings"]["properties"]["require_approval"]
    assert review["items"] == {"$ref": "#/$defs/EnrollmentStatus"}
    rule = schema["$defs"]["StatusRule"]["properties"]["approval"]
    assert {"const": "required", "type": "string"} in rule["anyOf"] or {
        "enum": ["required"],
        "type": "string",
    } in rule["anyOf"]
