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
from engine.policy.logic import LogicEngine, default_engine, is_operation, lookup, operands


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
    engine = engine or default_engine()
    decision = Evaluator(policy, now, engine=engine).evaluate(raw)
    result = Explanation(decision.enrollment_id, decision)
    if not isinstance(raw, dict) or decision.action.value == "skip":
        return result
    facts, warnings = FactsBuilder(now.astimezone(UTC)).build(raw)
    result.warnings = warnings
    for rule in policy.rules:
        item = _explain_condition(engine, rule.id, "rule", rule.condition.source, facts)
        result.rules.append(item)
        if item.matched or item.error:
            break
    if decision.action.value == "error":
        return result
    decided = {"status": decision.status, "rule_id": decision.rule_id}
    for group in policy.groups:
        source = substitute_decision(group.source, decided)
        item = _explain_condition(engine, group.id, "group", source, facts)
        if group.reads_decision:
            item.reads.update({f"decision.{key}": value for key, value in decided.items()})
        result.rules.append(item)
    return result


def _explain_condition(
    engine: LogicEngine, rule_id: str, kind: str, source: Any, facts: Any
) -> RuleExplanation:
    reads = {path: lookup(facts, path) for path in engine.compile(source).reads}
    missing = [path for path, value in reads.items() if value in (None, "")]
    try:
        value = _value(engine, source, facts)
    except EvaluationError as exc:
        return RuleExplanation(rule_id, kind, False, reads, missing, [], str(exc))
    matched = engine.truthy(value)
    steps = _deciding_steps(engine, source, facts, matched)
    return RuleExplanation(rule_id, kind, matched, reads, missing, steps)


def _value(engine: LogicEngine, expression: Any, facts: Any) -> Any:
    return engine.evaluate_json(engine.compile(expression), facts)


def _deciding_steps(engine: LogicEngine, expression: Any, facts: Any, truthy: bool) -> list[Step]:
    """Follow ``and``/``or``/``!`` down to the sub-condition that settled the outcome."""
    if not is_operation(expression):
        return [Step(expression, expression)]
    (operator,) = expression
    args = operands(expression)
    if operator in ("!", "!!") and args:
        inner = truthy if operator == "!!" else not truthy
        return [Step(expression, truthy), *_deciding_steps(engine, args[0], facts, inner)]
    if operator in ("and", "or") and args:
        deciding_value = operator == "or"
        for arg in args:
            arg_truthy = engine.truthy(_value(engine, arg, facts))
            if arg_truthy == deciding_value:
                return [Step(expression, truthy), *_deciding_steps(engine, arg, facts, arg_truthy)]
        return [Step(expression, truthy)]  # every operand agreed: all held (and) / none (or)
    return [Step(expression, _value(engine, expression, facts))]
