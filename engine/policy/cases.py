"""Policy test cases from real enrollments: only what the policy reads, expecting today's decision.

A case's enrollment keeps the fields the policy's conditions and reason templates read (the
same plan the evaluator builds facts from), the status, and the site's current group ids;
every field it reads is written even when empty, so a test file's ``base`` cannot fill it
in. Names, email and street address are never copied, whatever the policy reads. Each case
is checked: evaluated again, it must get the decision the full enrollment got.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from engine.policy.decision import Action, Decision
from engine.policy.document import Policy
from engine.policy.evaluator import Evaluator, facts_plan
from engine.policy.facts import ENROLLMENT_KEYS, SITE_KEYS, FactsPlan, group_ids_of
from engine.policy.lint import PERSONAL_FIELDS

PERSONAL_SITE_KEYS = frozenset(path.split(".", 1)[1] for path in PERSONAL_FIELDS)


@dataclass(frozen=True)
class Case:
    """One test case, in the ``*.test.yaml`` case format (``as_dict``)."""

    name: str
    enrollment: dict[str, Any]
    expect: dict[str, Any]
    exact: bool  # False: the policy read something left out (personal data); expect is for the case

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "enrollment": self.enrollment, "expect": self.expect}


def build_cases(policy: Policy, enrollments: Iterable[Any], now: datetime) -> list[Case]:
    """A case per enrollment (objects only), each expecting the decision it gets at ``now``."""
    evaluator = Evaluator(policy, now, trace=False)
    plan = facts_plan(policy)
    cases = []
    for raw in enrollments:
        if not isinstance(raw, dict):
            continue
        decision = evaluator.evaluate(raw)
        cases.append(_case(evaluator, plan, raw, decision))
    return cases


def _case(evaluator: Evaluator, plan: FactsPlan, raw: dict[str, Any], decision: Decision) -> Case:
    wanted = decision.outcome()
    enrollment = project(raw, plan)
    if evaluator.evaluate(enrollment).outcome() != wanted:
        enrollment = project(raw, FactsPlan())  # the plan missed something: keep all but personal data
    got = evaluator.evaluate(enrollment).outcome()
    return Case(_name(decision), enrollment, got, got == wanted)


def _name(decision: Decision) -> str:
    label = decision.enrollment_id or "enrollment"
    if decision.action is Action.ERROR:
        return f"{label}: cannot be evaluated"
    if decision.action is Action.SKIP:
        return f"{label}: {decision.current_status} is not in applies_to, skipped"
    return f"{label}: {decision.transition} by {decision.rule_id or 'no rule'}"


def project(raw: dict[str, Any], plan: FactsPlan) -> dict[str, Any]:
    """The fields of ``raw`` that ``plan`` reads (all when it is full), never personal data."""
    site_value = raw.get("site")
    site: dict[str, Any] = site_value if isinstance(site_value, dict) else {}
    if plan.full:
        # Anything may be read: every key as sent, and the known ones even when absent.
        result = {key: raw.get(key) for key in ENROLLMENT_KEYS} | dict(raw)
        result["devices"] = _as_list(raw.get("devices"))
        result["program_specific_attributes"] = _as_list(raw.get("program_specific_attributes"))
        full_site = {key: site.get(key) for key in SITE_KEYS if key != "group_ids"} | site
        full_site["groups"] = _as_list(site.get("groups"))
        result["site"] = {key: value for key, value in full_site.items() if key not in PERSONAL_SITE_KEYS}
        return result
    result = {"status": raw.get("status")}
    for key in plan.top_keys:
        if key not in ("site", "devices", "program_specific_attributes"):
            result[key] = raw.get(key)
    projected_site = {key: site.get(key) for key in plan.site_keys if key not in PERSONAL_SITE_KEYS}
    projected_site["groups"] = [{"id": group_id} for group_id in group_ids_of(site)]
    result["site"] = projected_site
    if plan.reads_devices or plan.device_age or "device_count" in plan.totals_keys:
        result["devices"] = [_device(d, plan) for d in _as_list(raw.get("devices")) if isinstance(d, dict)]
    if plan.program_names:
        result["program_specific_attributes"] = [
            {key: attribute.get(key) for key in ("name", "type", "value") if key in attribute}
            for attribute in _as_list(raw.get("program_specific_attributes"))
            if isinstance(attribute, dict) and attribute.get("name") in plan.program_names
        ]
    return result


def _device(device: dict[str, Any], plan: FactsPlan) -> dict[str, Any]:
    if plan.device_whole:
        return dict(device)
    kept: dict[str, Any] = {}
    for path in plan.device_fields:
        head, _, rest = path.partition(".")
        if not rest:
            if head in device:
                kept[head] = device[head]
            continue
        nested = device.get(head)
        if isinstance(nested, dict) and rest in nested:
            kept.setdefault(head, {})[rest] = nested[rest]
    attributes = device.get("attributes")
    if isinstance(attributes, dict):
        for key in plan.totals_keys - {"device_count"}:
            if key in attributes:
                kept.setdefault("attributes", {})[key] = attributes[key]
    return kept


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []
