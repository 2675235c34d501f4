"""Policy test files (``*.test.yaml``): fixture enrollments and the decisions they must get.

::

    policy: tx_residential_battery.yaml     # relative to this file
    now: "2026-11-25T00:00:00Z"             # optional; fixed evaluation time
    base: {status: SUBMITTED}               # optional; merged under every case's enrollment
    cases:
      - name: approves a big battery
        enrollment: {site: {state_code: TX}, devices: [...]}
        expect: {status: ACTIVE, rule_id: approve, group_ids: [LZ_HOUSTON], action: update}

A case's enrollment is partial: everything it does not give is empty.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from engine.errors import PolicyError, Problem, SourceLocation
from engine.policy.coverage import CoverageSet
from engine.policy.decision import Decision
from engine.policy.document import Policy, load_policy
from engine.policy.evaluator import Evaluator
from engine.policy.yamlsafe import load_yaml


class Expectation(BaseModel):
    model_config = ConfigDict(extra="forbid")

    status: str | None
    rule_id: str | None
    group_ids: list[str] | None = None
    action: str | None = None
    reason: str | None = None


class TestCase(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    enrollment: dict[str, Any] = Field(default_factory=dict)
    expect: Expectation


class TestFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    policy: str
    now: datetime | None = None
    base: dict[str, Any] = Field(default_factory=dict)
    cases: list[TestCase] = Field(min_length=1)


@dataclass(frozen=True)
class Mismatch:
    field: str
    expected: Any
    actual: Any


@dataclass(frozen=True)
class CaseResult:
    name: str
    location: SourceLocation
    decision: Decision
    mismatches: list[Mismatch]

    @property
    def passed(self) -> bool:
        return not self.mismatches


@dataclass
class TestFileResult:
    path: str
    policy: Policy
    cases: list[CaseResult] = field(default_factory=list)

    @property
    def failed(self) -> int:
        return sum(not case.passed for case in self.cases)

    @property
    def passed(self) -> int:
        return sum(case.passed for case in self.cases)


def run_test_file(path: Path, coverage: CoverageSet | None = None) -> TestFileResult:
    """Load a test file and its policy, evaluate every case (recording what each case
    exercised into ``coverage`` when given). Raises ``PolicyError``."""
    source = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise PolicyError.at(source, f"cannot read the file: {exc}") from exc
    loaded = load_yaml(text, source)
    try:
        spec = TestFile.model_validate(loaded.data)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            line, column = loaded.position(tuple(error["loc"])) or (None, None)
            where = ".".join(str(p) for p in error["loc"])
            problems.append(Problem(SourceLocation(source, line, column), f"{where}: {error['msg']}"))
        raise PolicyError(problems) from exc
    policy = load_policy(path.parent / spec.policy)
    now = (spec.now or datetime(2026, 1, 1, tzinfo=UTC)).astimezone(UTC)
    evaluator = Evaluator(policy, now)
    tracker = coverage.tracker(policy) if coverage is not None else None
    result = TestFileResult(source, policy)
    for index, case in enumerate(spec.cases):
        enrollment = deep_merge(spec.base, case.enrollment)
        enrollment.setdefault("id", f"case-{index + 1}")
        decision = evaluator.evaluate(enrollment)
        if tracker is not None:
            tracker.add(enrollment, decision, now)
        line, column = loaded.position(("cases", index)) or (None, None)
        location = SourceLocation(source, line, column)
        result.cases.append(CaseResult(case.name, location, decision, compare(case.expect, decision)))
    return result


def compare(expect: Expectation, decision: Decision) -> list[Mismatch]:
    """What differs between an expectation and a decision (only the fields it gives)."""
    mismatches = []
    for name in ("status", "rule_id", "group_ids", "action", "reason"):
        if name not in expect.model_fields_set:
            continue
        expected = getattr(expect, name)
        actual = getattr(decision, name)
        if name == "action":
            actual = decision.action.value
        if name == "group_ids" and expected is not None:
            expected, actual = sorted(expected), sorted(actual)
        if expected != actual:
            mismatches.append(Mismatch(name, expected, actual))
    return mismatches


def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """``override`` on top of ``base``: nested objects merge, everything else replaces."""
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged
