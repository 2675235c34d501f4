"""The one PATCH body builder (``engine.runs.patch``): what it builds is what the API's wire
model (``EnrollmentPatch``, checked by the client before sending) accepts, and what the wire
model refuses it refuses too."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from engine.flip.models import EnrollmentPatch
from engine.policy.decision import Action, Decision
from engine.policy.statuses import EnrollmentStatus
from engine.runs.patch import comparable_body, patch_body, planned_body

STATUSES = [*(s.value for s in EnrollmentStatus), *EnrollmentStatus, "", "active", "NOPE", "ACTIVE\n"]
GROUP_IDS = ["zone-a", "LZ_2", "-", "zoné", "日本", "x²", "a\u0301", "", "zone a", "x\n", "a/b"]


def decision(
    status: str | None,
    current_status: str | None = "SUBMITTED",
    group_ids: list[str] | None = None,
    current_group_ids: list[str] | None = None,
    reason: str | None = "r",
    action: Action = Action.UPDATE,
    enrollment_id: str | None = "enr-1",
) -> Decision:
    groups = group_ids or []
    current = current_group_ids or []
    return Decision(
        enrollment_id=enrollment_id,
        current_status=current_status,
        status=status,
        reason=reason,
        rule_id="r",
        group_ids=groups,
        current_group_ids=current,
        groups_added=[g for g in groups if g not in current],
        groups_removed=[g for g in current if g not in groups],
        action=action,
    )


def wire_body(made: Decision) -> dict[str, Any] | None:
    """The body built with the wire model alone, or None when it refuses."""
    try:
        status = EnrollmentStatus(made.status) if made.status_changes and made.status else None
        patch = EnrollmentPatch(
            status=status,
            status_reason=made.reason if status is not None else None,
            group_ids=list(made.group_ids) if made.groups_change else None,
        )
    except ValueError:
        return None
    return patch.body()


@given(
    status=st.none() | st.sampled_from(STATUSES),
    current_status=st.none() | st.sampled_from(STATUSES),
    group_ids=st.lists(st.sampled_from(GROUP_IDS), max_size=3),
    current_group_ids=st.lists(st.sampled_from(GROUP_IDS), max_size=2),
    reason=st.none() | st.text(max_size=5),
)
def test_the_body_is_the_wire_models_and_refusals_agree(
    status: str | None,
    current_status: str | None,
    group_ids: list[str],
    current_group_ids: list[str],
    reason: str | None,
) -> None:
    made = decision(status, current_status, group_ids, current_group_ids, reason)
    body, problem = patch_body(made)
    expected = wire_body(made)
    if expected is None:
        assert body == {}
        assert problem is not None
    else:
        assert (body, problem) == (expected, None)
        assert all(type(value) is not EnrollmentStatus for value in body.values())


def test_only_what_changes_is_in_the_body() -> None:
    assert patch_body(decision("ACTIVE", reason="ok")) == ({"status": "ACTIVE", "status_reason": "ok"}, None)
    groups_only = decision("SUBMITTED", group_ids=["B"], current_group_ids=["A"])
    assert patch_body(groups_only) == ({"group_ids": ["B"]}, None)
    assert patch_body(decision("ACTIVE", action=Action.NONE)) == ({}, None)


def test_a_refused_value_is_named() -> None:
    body, problem = patch_body(decision("SUBMITTED", group_ids=["ok", "zone a"]))
    assert body == {}
    assert problem is not None
    assert problem.startswith("group_ids.1: ")
    assert "'zone a'" in problem
    assert patch_body(decision("APPROVED"))[1] == "status: 'APPROVED' is not a Flip status " + (
        "(one of CREATED, ACTIVE, NEEDS_ACTION, PENDING, REJECTED, UNENROLLED, SUBMITTED, PAUSED)"
    )


def test_the_planned_body_says_why_none_can_be_sent() -> None:
    assert planned_body(decision("ACTIVE", action=Action.SKIP)) == (None, None)
    assert planned_body(decision("ACTIVE", enrollment_id=None)) == (
        None,
        "the decision has no enrollment id to send a change to",
    )
    body, problem = planned_body(decision("NOPE"))
    assert body is None
    assert problem is not None
    assert problem.startswith("no valid PATCH body: status: ")
    assert planned_body(decision("ACTIVE", reason=None)) == ({"status": "ACTIVE"}, None)


def test_comparable_bodies_ignore_group_order() -> None:
    assert comparable_body({"group_ids": ["b", "a"], "status": "ACTIVE"}) == {
        "group_ids": ["a", "b"],
        "status": "ACTIVE",
    }
