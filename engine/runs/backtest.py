"""How a policy agrees with the people who decided so far.

The labelled set is every enrollment whose current status is one of the decided statuses
(by default ACTIVE, REJECTED, NEEDS_ACTION), less those whose current status this tool
applied itself (online, the store knows; they are the policy's own decisions, not a
person's). Each is evaluated as if it were still awaiting review: its status replaced by
``as_status`` (default: the first status in the policy's ``applies_to``), everything else as
it is now. The decided status is compared with the person's: a policy that decides nothing
(no rule, no default) disagrees with status ``none``; one that cannot evaluate the
enrollment disagrees with ``error``.

Read-only: nothing is stored or sent. The data may have changed since the person decided.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from engine.errors import InputError
from engine.policy.coverage import HitCounter, RuleHits
from engine.policy.decision import DEFAULT_RULE_ID, Action, Decision
from engine.policy.document import Policy
from engine.policy.evaluator import Evaluator
from engine.policy.statuses import STATUS_VALUES, EnrollmentStatus, not_a_status

DEFAULT_DECIDED = ("ACTIVE", "REJECTED", "NEEDS_ACTION")
NO_DECISION = "none"
ERROR = "error"
DATA_NOTE = "Enrollments are evaluated as they are now: their data may have changed since the person decided."


def parse_statuses(text: str, option: str = "--decided") -> tuple[str, ...]:
    """``ACTIVE,REJECTED`` as Flip statuses, in order, without repeats; ``InputError`` otherwise."""
    found: list[str] = []
    for part in text.split(","):
        name = part.strip().upper()
        if name not in STATUS_VALUES:
            raise InputError(f"{option}: {not_a_status(part.strip())}")
        if name not in found:
            found.append(name)
    return tuple(found)


@dataclass(frozen=True)
class Disagreement:
    enrollment_id: str | None
    human_status: str
    status: str  # the policy's decided status, "none" or "error"
    rule_id: str | None
    reason: str | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "enrollment_id": self.enrollment_id, "human_status": self.human_status,
            "status": self.status, "rule_id": self.rule_id, "reason": self.reason,
        }  # fmt: skip


@dataclass(frozen=True)
class RuleAgreement:
    """A status rule's precision against people: how many it matched, how many agree."""

    rule_id: str
    matched: int
    agree: int

    def to_dict(self) -> dict[str, Any]:
        return {"rule_id": self.rule_id, "matched": self.matched, "agree": self.agree}


@dataclass
class BacktestReport:
    """The agreement, ready for any renderer (table, JSON, CSV, HTML)."""

    policy_label: str
    as_status: str
    decided: tuple[str, ...]
    evaluated: int = 0
    agree: int = 0
    left_out_applied: int = 0  # decided by this tool itself (online only)
    confusion: dict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    rules: list[RuleAgreement] = field(default_factory=list)
    disagreements: list[Disagreement] = field(default_factory=list)
    hits: list[RuleHits] = field(default_factory=list)

    @property
    def agreement(self) -> float:
        return self.agree / self.evaluated if self.evaluated else 0.0

    def by_status(self) -> dict[str, dict[str, Any]]:
        """Per person's status: how many, how many the policy agrees with, and the ratio."""
        result = {}
        for human in self.human_statuses():
            row = self.confusion[human]
            total = sum(row.values())
            agree = row.get(human, 0)
            result[human] = {"evaluated": total, "agree": agree, "agreement": agree / total if total else 0.0}
        return result

    def human_statuses(self) -> list[str]:
        """The decided statuses in the order asked for, then any other seen."""
        seen = [status for status in self.decided if status in self.confusion]
        return seen + sorted(status for status in self.confusion if status not in seen)

    def policy_columns(self) -> list[str]:
        """Columns of the confusion matrix: the statuses seen, then ``none`` and ``error``."""
        seen = {column for row in self.confusion.values() for column in row}
        statuses = [s.value for s in EnrollmentStatus if s.value in seen]
        return statuses + [c for c in (NO_DECISION, ERROR) if c in seen]

    def to_dict(self) -> dict[str, Any]:
        """The ``--format json`` document (the shape is a contract)."""
        return {
            "summary": {
                "evaluated": self.evaluated,
                "agree": self.agree,
                "agreement": self.agreement,
                "by_status": self.by_status(),
                "confusion": {human: dict(self.confusion[human]) for human in self.human_statuses()},
                "rules": [rule.to_dict() for rule in self.rules],
                "policy": self.policy_label,
                "as_status": self.as_status,
                "decided": list(self.decided),
                "left_out_applied_by_this_tool": self.left_out_applied,
                "rule_hits": [hit.to_dict() for hit in self.hits],
                "note": DATA_NOTE,
            },
            "disagreements": [item.to_dict() for item in self.disagreements],
        }


def default_as_status(policy: Policy) -> str:
    return policy.document.applies_to[0].value


def backtest(
    policy: Policy,
    enrollments: Iterable[Any],
    now: datetime,
    *,
    decided: tuple[str, ...] = DEFAULT_DECIDED,
    as_status: str | None = None,
    applied_by_us: Mapping[str, str] | None = None,
    label: str | None = None,
) -> BacktestReport:
    """Evaluate every labelled enrollment as if awaiting review and compare with the person.

    ``applied_by_us`` maps enrollment ids to the status this tool last applied to them;
    an enrollment whose current status is that one is left out. Raises ``InputError`` when
    nothing is labelled, or ``as_status`` is one the policy never evaluates.
    """
    waiting = as_status or default_as_status(policy)
    if waiting not in policy.applies_to:
        allowed = ", ".join(s.value for s in policy.document.applies_to)
        raise InputError(
            f"--as-status {waiting}: the policy only evaluates {allowed} (applies_to); "
            "nothing would be decided"
        )
    evaluator = Evaluator(policy, now, trace_reads=False)
    hits = HitCounter(policy)
    matched: Counter[str] = Counter()
    agreed: Counter[str] = Counter()
    report = BacktestReport(label or policy.source, waiting, decided)
    wanted = frozenset(decided)
    applied = applied_by_us or {}
    for raw in enrollments:
        human = raw.get("status") if isinstance(raw, dict) else None
        if not isinstance(human, str) or human not in wanted:
            continue
        if applied.get(str(raw.get("id"))) == human:
            report.left_out_applied += 1
            continue
        decision = evaluator.evaluate({**raw, "status": waiting})
        hits.add(decision)
        verdict = _verdict(decision)
        report.evaluated += 1
        report.confusion[human][verdict] += 1
        if decision.rule_id is not None and decision.action is not Action.ERROR:
            matched[decision.rule_id] += 1
        if verdict == human:
            report.agree += 1
            if decision.rule_id is not None:
                agreed[decision.rule_id] += 1
        else:
            report.disagreements.append(
                Disagreement(decision.enrollment_id, human, verdict, decision.rule_id, decision.reason)
            )
    if report.evaluated == 0:
        raise InputError(_empty_message(report, decided))
    report.rules = [
        RuleAgreement(rule_id, matched[rule_id], agreed[rule_id]) for rule_id in _status_rules(policy)
    ]
    report.hits = hits.hits()
    return report


def _verdict(decision: Decision) -> str:
    if decision.action is Action.ERROR:
        return ERROR
    return decision.status or NO_DECISION


def _status_rules(policy: Policy) -> list[str]:
    ids = [rule.id for rule in policy.rules]
    return [*ids, DEFAULT_RULE_ID] if policy.document.default is not None else ids


def _empty_message(report: BacktestReport, decided: tuple[str, ...]) -> str:
    message = f"no enrollment is labelled: none has a decided status ({', '.join(decided)})"
    if report.left_out_applied:
        message += f" other than the {report.left_out_applied} whose status this tool applied itself"
    return message + "; pick others with --decided"
