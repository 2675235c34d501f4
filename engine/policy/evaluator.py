"""Evaluate enrollments against a compiled policy: facts in, a ``Decision`` out."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from typing import Any

from engine.clock import utc_now
from engine.errors import EvaluationError
from engine.policy.decision import DEFAULT_RULE_ID, Action, Decision, RuleTrace
from engine.policy.document import CompiledGroupRule, CompiledRule, Policy
from engine.policy.facts import FactsBuilder, FactsPlan, fingerprint, group_ids_of
from engine.policy.logic import (
    LogicEngine,
    LogicError,
    LogicSession,
    default_engine,
    describe_logic_error,
    literal_keys,
    lookup,
    missing_keys,
    var_reads,
    walk_operations,
)


class Evaluator:
    """Evaluates enrollments for one policy at one fixed ``now``; one per thread.

    ``trace=False`` skips collecting the facts each rule read (``explain`` recomputes them
    on demand, since evaluation is deterministic); ``trace_reads=False`` keeps the trace of
    which rules were evaluated and matched (what hit counts need) without the facts read.
    Only the facts the policy reads are built; ``full_facts=True`` builds them all (the
    reference the tests compare against).
    """

    def __init__(
        self,
        policy: Policy,
        now: datetime | None = None,
        *,
        trace: bool = True,
        engine: LogicEngine | None = None,
        full_facts: bool = False,
        trace_reads: bool = True,
    ) -> None:
        self.policy = policy
        self.now = (now or utc_now(whole_seconds=True)).astimezone(UTC)
        self.trace = trace
        self._reads = _reads if trace_reads else _no_reads
        self._engine = engine or default_engine()
        self._session: LogicSession = self._engine.session()
        self._plan = FactsPlan() if full_facts else facts_plan(policy)
        self._facts = FactsBuilder(self.now, self._plan)
        self._applies_to = policy.applies_to

    def evaluate_many(self, enrollments: Iterable[Any]) -> Iterator[Decision]:
        for raw in enrollments:
            yield self.evaluate(raw)

    def evaluate(self, raw: Any) -> Decision:
        """Decide for one raw enrollment dict. Never raises: failures become ``error``."""
        if not isinstance(raw, dict):
            return _error_decision(None, None, [], f"enrollment is a {type(raw).__name__}, not an object")
        enrollment_id = _text(raw.get("id"))
        current_status = _text(raw.get("status"))
        current_groups = group_ids_of(raw.get("site"))
        if current_status not in self._applies_to:
            return Decision(
                enrollment_id, current_status, None, None, None, current_groups, current_groups,
                [], [], Action.SKIP, updated_at=_text(raw.get("updated_at")),
            )  # fmt: skip
        try:
            return self._decide(raw, enrollment_id, current_status, current_groups)
        except EvaluationError as exc:
            return _error_decision(enrollment_id, current_status, current_groups, str(exc), raw)
        except Exception as exc:  # noqa: BLE001 - one odd enrollment must not stop a run
            message = f"unexpected data: {type(exc).__name__}: {exc}"
            return _error_decision(enrollment_id, current_status, current_groups, message, raw)

    def _decide(
        self,
        raw: dict[str, Any],
        enrollment_id: str | None,
        current_status: str | None,
        current_groups: list[str],
    ) -> Decision:
        facts, warnings = self._facts.build(raw)
        handle = self._session.prepare(facts)
        trace: list[RuleTrace] = []
        status: str | None = None
        reason: str | None = None
        rule_id: str | None = None
        matched_rule = self._first_match(handle)
        if self.trace:
            for rule in self.policy.rules:
                hit = rule is matched_rule
                trace.append(RuleTrace(rule.id, "rule", hit, self._reads(facts, rule.condition.reads)))
                if hit:
                    break
        if matched_rule is not None:
            status, rule_id = matched_rule.status, matched_rule.id
            reason = matched_rule.reason.render(lambda path: lookup(facts, path))
        else:
            default = self.policy.document.default
            if default is not None and self.policy.default_reason is not None:
                status, rule_id = default.status.value, DEFAULT_RULE_ID
                reason = self.policy.default_reason.render(lambda path: lookup(facts, path))
        group_ids = self._groups(handle, facts, (status, rule_id), current_groups, trace)
        added = [g for g in group_ids if g not in current_groups]
        removed = [g for g in current_groups if g not in group_ids]
        changes = (status is not None and status != current_status) or bool(added or removed)
        return Decision(
            enrollment_id=enrollment_id,
            current_status=current_status,
            status=status,
            reason=reason,
            rule_id=rule_id,
            group_ids=group_ids,
            current_group_ids=current_groups,
            groups_added=added,
            groups_removed=removed,
            action=Action.UPDATE if changes else Action.NONE,
            warnings=warnings,
            trace=trace,
            updated_at=_text(raw.get("updated_at")),
            facts_fingerprint=fingerprint(raw, self._plan),
        )

    def _first_match(self, handle: Any) -> CompiledRule | None:
        """The first status rule whose condition holds: one tight loop over native calls."""
        is_true = self._session.truthy_function()
        for rule in self.policy.rules:
            try:
                if is_true(rule.condition.native, handle):
                    return rule
            except LogicError as exc:  # a try costs nothing until it catches (3.11+)
                message = f"rule {rule.id!r}: {describe_logic_error(exc)}"
                raise EvaluationError(message, rule_id=rule.id) from exc
        return None

    def _groups(
        self,
        handle: Any,
        facts: dict[str, Any],
        decided: tuple[str | None, str | None],
        current: list[str],
        trace: list[RuleTrace],
    ) -> list[str]:
        """Apply every matching group entry in file order, starting from the current ids."""
        status, rule_id = decided
        group_ids = current
        is_true = self._session.truthy_function()
        for group in self.policy.groups:
            condition = group.condition_for(self._engine, status, rule_id)
            try:
                matched = is_true(condition.native, handle)
            except LogicError as exc:
                message = f"rule {group.id!r}: {describe_logic_error(exc)}"
                raise EvaluationError(message, rule_id=group.id) from exc
            if self.trace:
                trace.append(RuleTrace(group.id, "group", matched, self._reads(facts, condition.reads)))
            if matched:
                group_ids = _apply_group(group, group_ids)
        return list(group_ids)


def facts_plan(policy: Policy) -> FactsPlan:
    """Which facts a policy reads (every condition and reason template), for FactsBuilder."""
    conditions = [rule.condition.source for rule in policy.rules] + [g.source for g in policy.groups]
    for condition in conditions:
        for operator, _pointer, node in walk_operations(condition):
            args = node[operator] if isinstance(node[operator], list) else [node[operator]]
            literal = bool(args) and isinstance(args[0], str | int) and not isinstance(args[0], bool)
            if operator == "var" and not literal:
                return FactsPlan()  # a computed path: anything may be read
            if operator in ("missing", "missing_some") and literal_keys(missing_keys(operator, args)) is None:
                return FactsPlan()
    reads = [(read.path, read.scope) for c in conditions for read in var_reads(c)]
    templates = [rule.reason for rule in policy.rules]
    if policy.default_reason is not None:
        templates.append(policy.default_reason)
    reads += [(path, None) for template in templates for path in template.paths]
    return FactsPlan.from_reads(reads)


def _apply_group(group: CompiledGroupRule, group_ids: list[str]) -> list[str]:
    result = list(group_ids)
    for group_id in group.add:
        if group_id not in result:
            result.append(group_id)
    return [g for g in result if g not in group.remove]


def _reads(facts: dict[str, Any], paths: tuple[str, ...]) -> dict[str, Any]:
    return {path: lookup(facts, path) for path in paths if path != "devices"}


def _no_reads(_facts: dict[str, Any], _paths: tuple[str, ...]) -> dict[str, Any]:
    return {}


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


def _error_decision(
    enrollment_id: str | None,
    current_status: str | None,
    current_groups: list[str],
    message: str,
    raw: dict[str, Any] | None = None,
) -> Decision:
    return Decision(
        enrollment_id, current_status, None, None, None, current_groups, current_groups, [], [],
        Action.ERROR, error=message, updated_at=_text(raw.get("updated_at")) if raw else None,
    )  # fmt: skip
