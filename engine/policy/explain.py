"""Why an enrollment gets its decision: each evaluated rule, what it read, what decided it.

Evaluation is deterministic, so explanations are recomputed on demand from the policy,
the enrollment and ``now`` rather than stored with every decision.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from engine.errors import EvaluationError
from engine.policy.decision import Decision
from engine.policy.document import Policy, substitute_decision
from engine.policy.evaluator import Evaluator
from engine.policy.facts import FactsBuilder
from engine.policy.logic import Condition, LogicEngine, default_engine, is_operation, lookup, operands


@dataclass(frozen=True)
class Step:
    """One sub-condition that decided a rule's outcome, and its value."""

    expression: Any
    value: Any


@dataclass(frozen=True)
class RuleExplanation:
    rule_id: str
    kind: str  # "rule" | "group"
    matched: bool
    reads: dict[str, Any]
    missing: list[str]
    decided_by: list[Step]
    error: str | None = None


@dataclass
class Explanation:
    enrollment_id: str | None
    decision: Decision
    rules: list[RuleExplanation] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def explain(policy: Policy, raw: Any, now: datetime, engine: LogicEngine | None = None) -> Explanation:
    """Explain the decision for one raw enrollment."""
    return Explainer(policy, now, engine).explain(raw)


class Explainer:
    """Explains many enrollments of one policy at one ``now`` (a report explains every row).

    Conditions and their sub-conditions are compiled once and the facts are serialized once
    per enrollment, so explaining costs a small multiple of evaluating. Not thread-safe.
    """

    def __init__(self, policy: Policy, now: datetime, engine: LogicEngine | None = None) -> None:
        self.policy = policy
        self.now = now.astimezone(UTC)
        self._engine = engine or default_engine()
        self._evaluator = Evaluator(policy, self.now, engine=self._engine)
        self._session = self._engine.session()
        self._facts = FactsBuilder(self.now)
        # Keyed by id(): the cached entry keeps the expression alive, so an id is never reused.
        self._compiled: dict[int, tuple[Any, Condition]] = {}
        self._group_sources: dict[tuple[str, str | None, str | None], Any] = {}

    def explain(self, raw: Any, decision: Decision | None = None) -> Explanation:
        """Explain ``raw``; pass its ``decision`` when it is already evaluated (same policy, same now)."""
        decision = decision or self._evaluator.evaluate(raw)
        result = Explanation(decision.enrollment_id, decision)
        if not isinstance(raw, dict) or decision.action.value == "skip":
            return result
        facts, warnings = self._facts.build(raw)
        result.warnings = warnings
        data = _Facts(facts, self._session.prepare(facts))
        for rule in self.policy.rules:
            item = self._explain_condition(rule.id, "rule", rule.condition.source, data)
            result.rules.append(item)
            if item.matched or item.error:
                break
        if decision.action.value == "error":
            return result
        decided = {"status": decision.status, "rule_id": decision.rule_id}
        for group in self.policy.groups:
            key = (group.id, decision.status, decision.rule_id)
            source = self._group_sources.get(key)
            if source is None:
                source = self._group_sources[key] = substitute_decision(group.source, decided)
            item = self._explain_condition(group.id, "group", source, data)
            if group.reads_decision:
                item.reads.update({f"decision.{name}": value for name, value in decided.items()})
            result.rules.append(item)
        return result

    def _compile(self, expression: Any) -> Condition:
        cached = self._compiled.get(id(expression))
        if cached is None:
            cached = self._compiled[id(expression)] = (expression, self._engine.compile(expression))
        return cached[1]

    def _value(self, expression: Any, data: _Facts) -> Any:
        return self._session.value(self._compile(expression), data.handle)

    def _truthy(self, expression: Any, data: _Facts) -> bool:
        return self._session.is_true(self._compile(expression), data.handle)

    def _explain_condition(self, rule_id: str, kind: str, source: Any, data: _Facts) -> RuleExplanation:
        reads = {path: lookup(data.facts, path) for path in self._compile(source).reads}
        missing = [path for path, value in reads.items() if value in (None, "")]
        try:
            matched = self._truthy(source, data)
        except EvaluationError as exc:
            return RuleExplanation(rule_id, kind, False, reads, missing, [], str(exc))
        steps = self._deciding_steps(source, data, matched)
        return RuleExplanation(rule_id, kind, matched, reads, missing, steps)

    def _deciding_steps(self, expression: Any, data: _Facts, truthy: bool) -> list[Step]:
        """Follow ``and``/``or``/``!`` down to the sub-condition that settled the outcome."""
        if not is_operation(expression):
            return [Step(expression, expression)]
        (operator,) = expression
        args = operands(expression)
        if operator in ("!", "!!") and args:
            inner = truthy if operator == "!!" else not truthy
            return [Step(expression, truthy), *self._deciding_steps(args[0], data, inner)]
        if operator in ("and", "or") and args:
            deciding_value = operator == "or"
            for arg in args:
                arg_truthy = self._truthy(arg, data)
                if arg_truthy == deciding_value:
                    return [Step(expression, truthy), *self._deciding_steps(arg, data, arg_truthy)]
            return [Step(expression, truthy)]  # every operand agreed: all held (and) / none (or)
        return [Step(expression, self._value(expression, data))]


class _Facts:
    """One enrollment's facts, and the same converted once for every sub-condition."""

    __slots__ = ("facts", "handle")

    def __init__(self, facts: dict[str, Any], handle: Any) -> None:
        self.facts = facts
        self.handle = handle
