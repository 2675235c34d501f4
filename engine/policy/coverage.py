"""Which rules and sub-conditions a set of enrollments exercised: policy test coverage and
the per-rule hit counts of runs, diffs and backtests.

Rule items are every status rule, the default and every group entry; each counts as
covered once some enrollment matched it. Conditions are the operands of ``and``/``or``, the
condition of each ``if``/``?:`` branch and the operand of ``!``/``!!`` (also inside the
body of ``some``/``all``/``none``, per element); each has two outcomes, true and false,
covered once some enrollment evaluated it to that value. A sub-condition that was
short-circuited was not evaluated. Operators nested inside anything else (a comparison,
``in``, arithmetic, ``map``...) are part of that leaf.

Rule hits come from the evaluator's own decisions; condition outcomes come from a tracer
that walks the same conditions over the same facts the evaluator built, evaluating every
leaf (and every quantifier as a whole) with the same compiled native rules, so it cannot
disagree with the decision. Positions are the policy file's: a sub-condition written in a
``definitions`` entry is reported there, where it can be fixed.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from engine.errors import EvaluationError
from engine.policy.decision import DEFAULT_RULE_ID, Action, Decision
from engine.policy.document import Policy, expand_refs, substitute_decision
from engine.policy.evaluator import facts_plan
from engine.policy.facts import FactsBuilder
from engine.policy.logic import (
    Condition,
    LogicEngine,
    LogicSession,
    default_engine,
    is_operation,
)
from engine.policy.sourcemap import SourceMap
from engine.policy.yamlsafe import YamlPath

RULE_KINDS = ("rule", "default", "group")
_Decided = tuple[str | None, str | None]  # (status, rule_id) a group condition is evaluated with
_QUANTIFIERS = frozenset({"some", "all", "none"})
_BRANCHING = frozenset({"if", "?:"})


@dataclass(frozen=True, slots=True)
class RuleHits:
    """How many enrollments one rule item matched, and where it is written."""

    id: str
    kind: str  # "rule" | "default" | "group"
    file: str
    line: int | None
    hits: int

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "kind": self.kind, "file": self.file, "line": self.line, "hits": self.hits}


@dataclass(frozen=True, slots=True)
class ConditionOutcomes:
    """One tracked sub-condition: where it is and whether it was seen true and false."""

    file: str
    line: int | None
    column: int | None
    pointer: str
    true: bool
    false: bool

    def to_dict(self) -> dict[str, Any]:
        return {
            "file": self.file, "line": self.line, "column": self.column, "pointer": self.pointer,
            "true": self.true, "false": self.false,
        }  # fmt: skip


@dataclass(frozen=True)
class CoverageReport:
    """Rule items and condition outcomes of one or more policies.

    The percentage counts both together: each rule item is one thing to cover, each
    condition two (true and false); ``percent = 100 * covered / total``.
    """

    rules: list[RuleHits]
    conditions: list[ConditionOutcomes]

    @property
    def covered(self) -> int:
        rules = sum(rule.hits > 0 for rule in self.rules)
        return rules + sum(int(c.true) + int(c.false) for c in self.conditions)

    @property
    def total(self) -> int:
        return len(self.rules) + 2 * len(self.conditions)

    @property
    def percent(self) -> float:
        return 100.0 if self.total == 0 else round(100.0 * self.covered / self.total, 1)

    @property
    def unmatched(self) -> list[RuleHits]:
        return [rule for rule in self.rules if rule.hits == 0]

    @property
    def uncovered(self) -> list[ConditionOutcomes]:
        return [c for c in self.conditions if not (c.true and c.false)]

    @staticmethod
    def combine(reports: Iterable[CoverageReport]) -> CoverageReport:
        rules: list[RuleHits] = []
        conditions: list[ConditionOutcomes] = []
        for report in reports:
            rules.extend(report.rules)
            conditions.extend(report.conditions)
        return CoverageReport(rules, conditions)


# --- rule hits -------------------------------------------------------------------------


def rule_items(policy: Policy) -> list[tuple[str, str, YamlPath]]:
    """``(id, kind, yaml path)`` of every rule item, in file order."""
    items: list[tuple[str, str, YamlPath]] = [
        (rule.id, "rule", ("rules", index)) for index, rule in enumerate(policy.rules)
    ]
    if policy.document.default is not None:
        items.append((DEFAULT_RULE_ID, "default", ("default",)))
    items += [(group.id, "group", ("groups", index)) for index, group in enumerate(policy.groups)]
    return items


class HitCounter:
    """Counts, over decisions of one policy, how many each status rule, the default and
    each group entry matched. Group matches are read from the decisions' trace: decisions
    made without one (a run's ``trace=False``) count status rules only."""

    def __init__(self, policy: Policy, *, traced: bool = False) -> None:
        self.policy = policy
        self.rules: Counter[str] = Counter()
        self.groups: Counter[str] = Counter()
        self.traced = traced  # True: group hits are known even before a traced decision

    def add(self, decision: Decision) -> None:
        if decision.action in (Action.SKIP, Action.ERROR):
            return
        if decision.rule_id is not None:
            self.rules[decision.rule_id] += 1
        self.traced = self.traced or bool(decision.trace)
        for step in decision.trace:
            if step.kind == "group" and step.matched:
                self.groups[step.rule_id] += 1

    def add_all(self, decisions: Iterable[Decision]) -> HitCounter:
        for decision in decisions:
            self.add(decision)
        return self

    def hits(self) -> list[RuleHits]:
        found = []
        sources = SourceMap.of(self.policy)
        for item_id, kind, path in rule_items(self.policy):
            if kind == "group" and not self.traced:
                continue  # unknown, not zero
            counts = self.groups if kind == "group" else self.rules
            line = sources.position(path)[0]
            found.append(RuleHits(item_id, kind, self.policy.source, line, counts[item_id]))
        return found


def rule_hits(policy: Policy, decisions: Iterable[Decision]) -> list[RuleHits]:
    """Per rule item: how many of these decisions it matched."""
    return HitCounter(policy).add_all(decisions).hits()


# --- condition coverage ----------------------------------------------------------------


@dataclass
class _Node:
    """One node of a condition as the tracer sees it.

    ``op`` is ``and``/``or``/``!``/``!!``/``if`` (tracked children), a quantifier (the
    whole node is evaluated natively, its body traced per element), or ``leaf``.
    ``point`` is the index of this node's outcome in the tracker, when it is tracked.
    """

    op: str
    source: Any  # refs expanded
    scoped: bool  # inside a quantifier body: reads the element, never decision.*
    children: list[_Node] = field(default_factory=list)
    point: int | None = None
    compiled: dict[_Decided, Condition] = field(default_factory=dict)


class CoverageTracker:
    """Accumulates rule hits and condition outcomes over evaluated enrollments of one policy."""

    def __init__(self, policy: Policy, engine: LogicEngine | None = None) -> None:
        self.policy = policy
        self._engine = engine or default_engine()
        self._session: LogicSession = self._engine.session()
        self._plan = facts_plan(policy)
        self._facts: dict[datetime, FactsBuilder] = {}
        self._hits = HitCounter(policy, traced=True)  # policy tests evaluate with a trace
        self._paths: list[YamlPath] = []
        self._true: list[bool] = []
        self._false: list[bool] = []
        self._index: dict[YamlPath, int] = {}
        definitions = policy.document.definitions
        self._rules = [
            self._build(rule.when, ("rules", index, "when"), definitions, scoped=False)
            for index, rule in enumerate(policy.document.rules)
        ]
        self._groups = [
            self._build(group.when, ("groups", index, "when"), definitions, scoped=False)
            for index, group in enumerate(policy.document.groups)
        ]

    # building

    def _point(self, path: YamlPath) -> int:
        found = self._index.get(path)
        if found is None:
            found = self._index[path] = len(self._paths)
            self._paths.append(path)
            self._true.append(False)
            self._false.append(False)
        return found

    def _build(self, node: Any, path: YamlPath, definitions: dict[str, Any], *, scoped: bool) -> _Node:
        if is_operation(node) and "ref" in node and isinstance(node["ref"], str):
            name = node["ref"]
            return self._build(definitions[name], ("definitions", name), definitions, scoped=scoped)
        source = expand_refs(node, definitions)
        if not is_operation(node):
            return _Node("leaf", source, scoped)
        (operator,) = node
        args = node[operator]
        listed = isinstance(args, list)
        operand_paths = [(*path, operator, i) for i in range(len(args))] if listed else [(*path, operator)]
        operand_nodes = args if listed else [args]
        tracked = _tracked_operands(operator, len(operand_nodes))
        if tracked is None:
            return _Node("leaf", source, scoped)
        if operator in _QUANTIFIERS:
            body = self._build(operand_nodes[1], operand_paths[1], definitions, scoped=True)
            collection = _Node("leaf", expand_refs(operand_nodes[0], definitions), scoped)
            return _Node(operator, source, scoped, [collection, body])
        children = []
        for index, (operand, operand_path) in enumerate(zip(operand_nodes, operand_paths, strict=True)):
            child = self._build(operand, operand_path, definitions, scoped=scoped)
            if index in tracked:
                child.point = self._point(operand_path)
            children.append(child)
        return _Node("if" if operator in _BRANCHING else operator, source, scoped, children)

    # tracing

    def add(self, raw: Any, decision: Decision, now: datetime) -> str | None:
        """Trace one enrollment the evaluator decided ``decision`` for at ``now``.

        Returns the id of the first status rule the trace found true (None when none was,
        or the enrollment was skipped or could not be evaluated): always the decision's own.
        """
        self._hits.add(decision)
        if not isinstance(raw, dict) or decision.action is Action.SKIP:
            return None
        builder = self._facts.get(now)
        if builder is None:
            builder = self._facts[now] = FactsBuilder(now, self._plan)
        facts, _warnings = builder.build(raw)
        matched: str | None = None
        try:
            handle = self._session.prepare(facts)
            for rule, compiled in zip(self._rules, self.policy.rules, strict=True):
                if self._truth(rule, handle, facts, (None, None)):
                    matched = compiled.id
                    break
            if decision.action is Action.ERROR:
                return None
            decided = (decision.status, decision.rule_id)
            for group in self._groups:
                self._truth(group, handle, facts, decided)
        except EvaluationError:
            return None  # the evaluator stopped here too: nothing after it was evaluated
        return matched

    def _truth(self, node: _Node, handle: Any, data: Any, decided: _Decided) -> bool:
        value = self._evaluate(node, handle, data, decided)
        if node.point is not None:
            (self._true if value else self._false)[node.point] = True
        return value

    def _evaluate(self, node: _Node, handle: Any, data: Any, decided: _Decided) -> bool:
        if node.op in ("and", "or"):
            stop_at = node.op == "or"  # or stops at the first truthy operand, and at the first falsy
            for child in node.children:
                if self._truth(child, handle, data, decided) == stop_at:
                    return stop_at
            return not stop_at
        if node.op == "!":
            return not self._truth(node.children[0], handle, data, decided)
        if node.op == "!!":
            return self._truth(node.children[0], handle, data, decided)
        if node.op == "if":
            return self._branch(node.children, handle, data, decided)
        value = self._session.is_true(self._compiled(node, decided), handle)
        if node.op in _QUANTIFIERS:
            self._trace_body(node, data, decided)
        return value

    def _branch(self, children: list[_Node], handle: Any, data: Any, decided: _Decided) -> bool:
        """``if``: conditions at even places, each followed by its value; a last odd one is
        the else value; no else is null."""
        index = 0
        while index + 1 < len(children):
            if self._truth(children[index], handle, data, decided):
                return self._truth(children[index + 1], handle, data, decided)
            index += 2
        return index < len(children) and self._truth(children[index], handle, data, decided)

    def _trace_body(self, node: _Node, data: Any, decided: _Decided) -> None:
        """Trace a quantifier's body on each element it evaluated (all stops at the first
        falsy element, some and none at the first truthy one, as the library does)."""
        collection, body = node.children
        items = self._engine.evaluate_json(self._compiled(collection, decided), data)
        if not isinstance(items, list):
            return
        stop_at = node.op != "all"
        try:
            for item in items:
                if self._truth(body, self._session.prepare(item), item, decided) == stop_at:
                    return
        except EvaluationError:
            return  # the quantifier as a whole held up natively: only this element's trace ends

    def _compiled(self, node: _Node, decided: _Decided) -> Condition:
        key = (None, None) if node.scoped else decided
        found = node.compiled.get(key)
        if found is None:
            source = node.source
            if not node.scoped:
                source = substitute_decision(source, {"status": key[0], "rule_id": key[1]})
            found = node.compiled[key] = self._engine.compile(source)
        return found

    # reporting

    def report(self) -> CoverageReport:
        conditions = []
        sources = SourceMap.of(self.policy)
        for index, path in enumerate(self._paths):
            line, column = sources.position(path)
            conditions.append(
                ConditionOutcomes(
                    self.policy.source,
                    line,
                    column,
                    json_pointer(path),
                    self._true[index],
                    self._false[index],
                )
            )
        conditions.sort(key=lambda c: (c.line or 0, c.column or 0, c.pointer))
        return CoverageReport(self._hits.hits(), conditions)


class CoverageSet:
    """One tracker per policy file, shared by every test file that names it."""

    def __init__(self, engine: LogicEngine | None = None) -> None:
        self._engine = engine
        self._trackers: dict[str, CoverageTracker] = {}

    def tracker(self, policy: Policy) -> CoverageTracker:
        found = self._trackers.get(policy.source)
        if found is None:
            found = self._trackers[policy.source] = CoverageTracker(policy, self._engine)
        return found

    def report(self) -> CoverageReport:
        return CoverageReport.combine(tracker.report() for tracker in self._trackers.values())


def _tracked_operands(operator: str, count: int) -> set[int] | None:
    """Which operands of an operation are tracked conditions; None when it is a leaf."""
    if operator in ("and", "or") and count >= 1:
        return set(range(count))
    if operator in ("!", "!!") and count == 1:
        return {0}
    if operator in _BRANCHING and count >= 2:
        return set(range(0, count - 1, 2))
    if operator in _QUANTIFIERS and count == 2:
        return set()
    return None


def json_pointer(path: YamlPath) -> str:
    """A YAML path as a JSON pointer into the policy document (``/rules/0/when/and/1``)."""
    return "".join("/" + str(part).replace("~", "~0").replace("/", "~1") for part in path)
