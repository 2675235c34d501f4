"""The PATCH body a decision asks the Flip API for: built here and nowhere else.

The body sets absolute values and names only what changes: ``status`` and
``status_reason`` when the status changes, the whole ``group_ids`` list when the groups
change (the API replaces the list). A value the API would refuse (a status it does not
know, a group id outside its pattern) makes no body: the change is recorded as failed
instead of sent. The store plans with it, the service re-checks with it, the review queue
compares with it; the API client validates what it sends against its wire model.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from engine.policy.decision import Action, Decision
from engine.policy.facts import group_ids_of
from engine.policy.statuses import STATUS_VALUES, EnrollmentStatus, group_id_problem, not_a_status

__all__ = ["comparable_body", "patch_body", "patch_is_applied", "planned_body"]


def patch_body(decision: Decision) -> tuple[dict[str, Any], str | None]:
    """The PATCH body a decision asks for (empty when it asks for none), or why the API
    would refuse it (then the body is empty)."""
    if decision.action is not Action.UPDATE:
        return {}, None
    body: dict[str, Any] = {}
    if decision.status_changes and decision.status:
        status = decision.status
        if not isinstance(status, str) or status not in STATUS_VALUES:
            return {}, f"status: {not_a_status(status)}"
        body["status"] = status if type(status) is str else EnrollmentStatus(status).value
        if decision.reason is not None:
            if not isinstance(decision.reason, str):
                return {}, f"status_reason: {decision.reason!r} is not text"
            body["status_reason"] = str(decision.reason)
    if decision.groups_change:
        group_ids = list(decision.group_ids)
        for index, group_id in enumerate(group_ids):
            problem = group_id_problem(group_id)
            if problem is not None:
                return {}, f"group_ids.{index}: {problem} (got {group_id!r})"
        body["group_ids"] = group_ids
    return body, None


def planned_body(decision: Decision) -> tuple[dict[str, Any] | None, str | None]:
    """The PATCH body to plan for a decision (``None`` when nothing is to be sent), or why
    none can be sent although the decision asks for a change."""
    if decision.action is not Action.UPDATE:
        return None, None
    if not decision.enrollment_id:
        return None, "the decision has no enrollment id to send a change to"
    body, problem = patch_body(decision)
    if problem is not None:
        return None, f"no valid PATCH body: {problem}"
    return (body or None), None


def patch_is_applied(body: Mapping[str, Any], enrollment: Mapping[str, Any]) -> bool:
    """Whether an enrollment already has the state a PATCH body asks for."""
    if "status" in body and enrollment.get("status") != body["status"]:
        return False
    return "group_ids" not in body or set(group_ids_of(enrollment.get("site"))) == set(body["group_ids"])


def comparable_body(body: Mapping[str, Any]) -> dict[str, Any]:
    """A PATCH body with its group ids sorted: the API keeps them as a set."""
    result = dict(body)
    if isinstance(result.get("group_ids"), list):
        result["group_ids"] = sorted(result["group_ids"])
    return result
