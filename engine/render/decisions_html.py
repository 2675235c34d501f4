"""The HTML report of a set of decisions (``run``, and the pieces ``plan``, ``review``, ``diff``
and ``backtest`` reuse): header facts, summary cards and the decision table.

``HtmlWriter`` writes a run's report as its decisions come (memory does not grow with the
run); ``ExplainedDecisions`` collects them to build the same page whole (``decisions_page``).

Personal data never reaches the page: a rule read of a site's names, email or street address
is shown as withheld, and so is a reason whose template copies one of them.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, TextIO

from engine.policy.decision import Action, Decision
from engine.policy.document import Policy
from engine.policy.explain import Explainer, Explanation, RuleExplanation
from engine.policy.lint import PERSONAL_FIELDS
from engine.render.html import (
    Bar,
    BarsCard,
    Card,
    Column,
    Detail,
    DetailSection,
    DetailTable,
    ListCard,
    Page,
    PageWriter,
    Row,
    RuleStep,
    StatCard,
    Table,
    Tone,
    Verdict,
)

WITHHELD = "(personal data, not shown)"
_VALUE_CLIP = 200
_EXPRESSION_CLIP = 300


@dataclass(frozen=True, slots=True)
class ReportContext:
    """What the header says about where the decisions came from."""

    title: str
    mode: str  # "offline preview", "dry run", "live", ...
    program_id: str
    evaluated_at: datetime
    policy_name: str | None = None
    policy_version: str | None = None
    policy_hash: str | None = None

    @classmethod
    def for_policy(cls, policy: Policy, *, title: str, mode: str, program_id: str | None,
                   evaluated_at: datetime) -> ReportContext:  # fmt: skip
        return cls(
            title=title, mode=mode, program_id=program_id or policy.program_id, evaluated_at=evaluated_at,
            policy_name=policy.name or policy.program_id, policy_version=policy.version,
            policy_hash=policy.content_hash,
        )  # fmt: skip

    def facts(self) -> list[tuple[str, str]]:
        return [
            ("Policy", self.policy_name or "-"),
            ("Version", self.policy_version or "unversioned"),
            ("Hash", (self.policy_hash or "-")[:12]),
            ("Program", self.program_id),
            ("Evaluated at", self.evaluated_at.strftime("%Y-%m-%d %H:%M:%S UTC")),
            ("Mode", self.mode),
        ]


def decisions_page(
    context: ReportContext,
    decisions: Sequence[Decision],
    details: DetailTable | None = None,
    detail_ids: Sequence[int | None] | None = None,
    *,
    extra_cards: Sequence[Card] = (),
    notes: Sequence[str] = (),
) -> Page:
    """The report of ``decisions``; ``detail_ids[i]`` is decision i's explanation in ``details``."""
    ids = list(detail_ids) if detail_ids is not None else [None] * len(decisions)
    rows = [Row(decision_cells(d), detail) for d, detail in zip(decisions, ids, strict=True)]
    table = Table(DECISION_COLUMNS, rows, details, noun="enrollments", empty=DECISIONS_EMPTY)
    cards = [*summary_cards(decisions), *extra_cards]
    return Page(title=context.title, facts=context.facts(), cards=cards, table=table, notes=notes)


DECISION_COLUMNS: tuple[Column, ...] = (
    Column("enrollment_id", "Enrollment", width="24.5em", mono=True),  # a whole UUID
    Column("action", "Action", filter=True, badge=True, width="6.5em"),
    Column("current_status", "Current", filter=True, badge=True, width="11.5em"),
    Column("status", "New status", filter=True, badge=True, width="11.5em"),
    Column("rule_id", "Rule", filter=True, width="minmax(10em, 1.1fr)", mono=True),
    Column("groups", "Groups", width="minmax(7em, 0.8fr)", mono=True),
    Column("reason", "Reason / error", width="minmax(14em, 3fr)"),
    Column("transition", "Change", filter=True, hidden=True),
    Column("warnings", "Data warnings", hidden=True),
)
DECISIONS_EMPTY = "No enrollment matches."


def decision_cells(decision: Decision) -> dict[str, str | None]:
    groups = [*(f"+{g}" for g in decision.groups_added), *(f"\u2212{g}" for g in decision.groups_removed)]
    detail = decision.error if decision.action is Action.ERROR else decision.reason
    return {
        "enrollment_id": decision.enrollment_id or "?",
        "action": decision.action.value,
        "current_status": decision.current_status or "-",
        "status": decision.status if decision.status_changes else None,
        "rule_id": decision.rule_id,
        "groups": " ".join(groups) or None,
        "reason": detail,
        "transition": decision.transition,
        "warnings": "; ".join(decision.warnings) or None,
    }


def summary_cards(decisions: Iterable[Decision]) -> list[Card]:
    tally = DecisionTally()
    for decision in decisions:
        tally.add(decision)
    return tally.cards()


class DecisionTally:
    """The numbers of the summary cards, counted one decision at a time."""

    def __init__(self) -> None:
        self.count = 0
        self.actions: Counter[Action] = Counter()
        self.status_changes = 0  # updates that change the status
        self.transitions: Counter[str] = Counter()
        self.rules: Counter[str] = Counter()
        self.warned = 0  # decisions with data warnings
        self.warnings: Counter[str] = Counter()  # distinct warnings per fact (the text before the colon)

    def add(self, decision: Decision) -> None:
        self.count += 1
        self.actions[decision.action] += 1
        if decision.action is Action.UPDATE and decision.status_changes:
            self.status_changes += 1
        self.transitions[decision.transition] += 1
        if decision.rule_id:
            self.rules[decision.rule_id] += 1
        if decision.warnings:
            self.warned += 1
            self.warnings.update(w.split(":", 1)[0] for w in set(decision.warnings))

    def cards(self) -> list[Card]:
        actions = self.actions
        changes = actions[Action.UPDATE]
        evaluated = self.count - actions[Action.SKIP]
        # Order matters: the three numbers and the warnings share the first row, the charts the second.
        return [
            StatCard("Enrollments", self.count, f"{evaluated:,} evaluated, {actions[Action.SKIP]:,} skipped"),
            StatCard(
                "Changes",
                changes,
                f"{self.status_changes:,} status, {changes - self.status_changes:,} groups only",
                tone="info" if changes else "muted",
            ),
            StatCard(
                "Errors",
                actions[Action.ERROR],
                "could not be evaluated; nothing is sent",
                tone="bad" if actions[Action.ERROR] else "muted",
            ),
            ListCard("Data warnings", self.warning_items(), tone="warn" if self.warned else "muted"),
            BarsCard("By transition", count_bars(self.transitions, _transition_tone), "transition"),
            BarsCard("Rule hits", count_bars(self.rules, _rule_tone), "rule_id", empty="no rule decided"),
        ]

    def warning_items(self) -> list[tuple[str, int | str]]:
        """Enrollments with warnings, then the number per fact (the text before the colon)."""
        if not self.warned:
            return []
        top = sorted(self.warnings.items(), key=lambda item: (-item[1], item[0]))[:8]
        return [("enrollments with warnings", self.warned), *top]


def count_bars(counts: Counter[str], tone: Callable[[str], Tone]) -> list[Bar]:
    """A bar per label, the largest first (ties by label)."""
    order = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    return [Bar(label, count, tone(label)) for label, count in order]


def _rule_tone(_rule: str) -> Tone:
    return "info"


def _transition_tone(label: str) -> Tone:
    if label == "error":
        return "bad"
    if label == "skip" or label.endswith("(unchanged)"):
        return "muted"
    return status_tone(label.rsplit("-> ", 1)[-1]) if "->" in label else "info"


def status_tone(status: str) -> Tone:
    return _STATUS_TONES.get(status, "neutral")


_STATUS_TONES: dict[str, Tone] = {
    "ACTIVE": "good", "REJECTED": "bad", "UNENROLLED": "bad", "NEEDS_ACTION": "warn",
    "PAUSED": "warn", "PENDING": "info", "SUBMITTED": "info", "CREATED": "neutral",
}  # fmt: skip


# --- explanations -------------------------------------------------------------------------


def personal_reason_rules(policy: Policy) -> frozenset[str]:
    """Rule ids whose reason template copies personal data (their reasons are withheld)."""
    found = {rule.id for rule in policy.rules if PERSONAL_FIELDS.intersection(rule.reason.paths)}
    if policy.default_reason is not None and PERSONAL_FIELDS.intersection(policy.default_reason.paths):
        found.add("default")
    return frozenset(found)


def withhold_personal_reasons(decisions: Sequence[Decision], policy: Policy) -> list[Decision]:
    """``decisions`` with the reasons of ``personal_reason_rules`` replaced by ``WITHHELD``."""
    rules = personal_reason_rules(policy)
    if not rules:
        return list(decisions)
    return [_withheld(d) if d.rule_id in rules and d.reason else d for d in decisions]


def _withheld(decision: Decision) -> Decision:
    return replace(decision, reason=WITHHELD)


def explanation_detail(
    explanation: Explanation, *, reason_withheld: bool = False, texts: ExpressionTexts | None = None
) -> Detail:
    """A row's detail: the decision in one line, data warnings, then each rule in order.

    Pass one ``ExpressionTexts`` for many explanations of one policy (it caches the text of
    each sub-condition)."""
    decision = explanation.decision
    if reason_withheld and decision.reason:
        decision = _withheld(decision)
    summary = decision_summary(decision)
    return Detail(
        summary=summary,
        notes=[f"data warning: {w}" for w in explanation.warnings],
        sections=[explanation_section(explanation, texts=texts)],
    )


def decision_summary(decision: Decision) -> str:
    """The decision in one plain sentence, for the top of a row's explanation."""
    if decision.action is Action.SKIP:
        return f"Skipped: status {decision.current_status} is not one this policy decides."
    if decision.action is Action.ERROR:
        return f"Could not be evaluated, nothing is sent: {decision.error}"
    rule = "the default" if decision.rule_id == "default" else f"rule {decision.rule_id}"
    if decision.status is None:
        parts = [f"No rule decided; the status stays {decision.current_status}."]
    elif decision.status_changes:
        parts = [f"{decision.current_status} \u2192 {decision.status}, decided by {rule}."]
    else:
        parts = [f"Stays {decision.status}, decided by {rule}."]
    if decision.reason:
        parts.append(f"Reason: \u201c{decision.reason}\u201d.")
    if decision.groups_change:
        changes = [
            *(f"+{g}" for g in decision.groups_added),
            *(f"\u2212{g}" for g in decision.groups_removed),
        ]
        parts.append(f"Groups: {' '.join(changes)}.")
    parts.append("A change is sent." if decision.action is Action.UPDATE else "Nothing to send.")
    return " ".join(parts)


def explanation_section(
    explanation: Explanation, title: str | None = None, *, texts: ExpressionTexts | None = None
) -> DetailSection:
    if explanation.decision.action is Action.SKIP:
        note = "Skipped: its status is not in the policy's applies_to, so no rule was evaluated."
        return DetailSection(title, [], note)
    if not explanation.rules:
        return DetailSection(title, [], explanation.decision.error or "No rule was evaluated.")
    texts = texts or ExpressionTexts()
    return DetailSection(title, [rule_step(rule, texts) for rule in explanation.rules])


def rule_step(rule: RuleExplanation, texts: ExpressionTexts | None = None) -> RuleStep:
    texts = texts or ExpressionTexts()
    verdict: Verdict = "error" if rule.error else ("match" if rule.matched else "no match")
    reads = [(path, read_value(path, value), path in rule.missing) for path, value in rule.reads.items()]
    decided = [
        (texts.text(step.expression), _step_value(step.expression, step.value)) for step in rule.decided_by
    ]
    return RuleStep(rule.rule_id, rule.kind, verdict, reads=reads, decided_by=decided, error=rule.error)


class ExpressionTexts:
    """The compact JSON text of each sub-condition, made once: explanations of one policy
    point at the same condition objects again and again."""

    def __init__(self) -> None:
        # Keyed by id(): the entry keeps the expression alive, so an id is never reused.
        self._texts: dict[int, tuple[Any, str]] = {}

    def text(self, expression: Any) -> str:
        found = self._texts.get(id(expression))
        if found is None:
            found = self._texts[id(expression)] = (expression, _clip(_compact(expression), _EXPRESSION_CLIP))
        return found[1]


def read_value(path: str, value: Any) -> str:
    """A value a rule read, as the page shows it: personal fields withheld, long values clipped."""
    if path in PERSONAL_FIELDS:
        return WITHHELD
    if path == "devices" and isinstance(value, list):
        # The whole device list is noise in a table cell: say what there is.
        kinds = [str(d.get("type")) if isinstance(d, dict) else "?" for d in value]
        noun = "device" if len(kinds) == 1 else "devices"
        return f"{len(kinds)} {noun}: {', '.join(kinds)}" if kinds else "no devices"
    return _clip(_compact(value), _VALUE_CLIP)


def _step_value(expression: Any, value: Any) -> str:
    # A bare {"var": "site.email"} as a condition would show the value itself.
    if isinstance(expression, dict) and "var" in expression:
        path = expression["var"]
        path = path[0] if isinstance(path, list) and path else path
        if path in PERSONAL_FIELDS:
            return WITHHELD
    return _clip(_compact(value), _VALUE_CLIP)


def _compact(value: Any) -> str:
    # Most values read are scalars: skip the encoder machinery for them.
    if value is None or isinstance(value, bool):
        return "null" if value is None else ("true" if value else "false")
    if isinstance(value, str):
        return _quote(value)
    if isinstance(value, int):
        return str(value)
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=str)


_quote: Callable[[str], str] = json.encoder.encode_basestring  # the C encoder json.dumps uses for a str


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "\u2026"


class DecisionDetails:
    """The explanation of each decision of one policy at one ``now``, as a row's ``Detail``
    (a reason that copies personal data withheld)."""

    def __init__(self, policy: Policy, now: datetime) -> None:
        self.policy = policy
        self.withheld = personal_reason_rules(policy)
        self._explainer = Explainer(policy, now)
        self._texts = ExpressionTexts()

    def __call__(self, raw: Any, decision: Decision) -> Detail:
        explanation = self._explainer.explain(raw, decision)
        withheld = decision.rule_id in self.withheld
        return explanation_detail(explanation, reason_withheld=withheld, texts=self._texts)

    def shown(self, decision: Decision) -> Decision:
        """``decision`` as its row shows it."""
        return _withheld(decision) if decision.rule_id in self.withheld and decision.reason else decision


class ExplainedDecisions:
    """Explains each decision as it is made, keeping only the compact explanation (a run
    drops raw enrollments as it goes), then builds the report page. For a page of any size,
    ``HtmlWriter`` writes the same page as the decisions come instead.

    Call it with ``(raw, decision)`` for every enrollment in order; the decisions must come
    from the same policy at the same ``now``.
    """

    def __init__(self, policy: Policy, now: datetime) -> None:
        self.policy = policy
        self.details = DetailTable()
        self.detail_ids: list[int | None] = []
        self._details = DecisionDetails(policy, now)

    def __call__(self, raw: Any, decision: Decision) -> None:
        self.detail_ids.append(self.details.add(self._details(raw, decision)))

    def page(self, context: ReportContext, decisions: Sequence[Decision], **kwargs: Any) -> Page:
        if len(decisions) != len(self.detail_ids):
            raise ValueError(f"{len(decisions)} decisions but {len(self.detail_ids)} explanations")
        shown = withhold_personal_reasons(decisions, self.policy)
        return decisions_page(context, shown, self.details, self.detail_ids, **kwargs)


class HtmlWriter:
    """The report of a run written into ``stream`` as its decisions come: the page
    ``ExplainedDecisions.page`` builds, in memory that does not grow with the run (rows go
    out in chunks, explanations wait in a temporary file, the cards keep counts).

    Call it with ``(raw, decision)`` for every enrollment in order (``on_evaluated`` of a
    run), or ``write(decision)`` for a row without an explanation (a ``DecisionWriter``).
    ``close()`` writes the header and cards: set ``context`` and ``notes`` first when they
    are known only at the end (a run's id, its footer). Nothing is written before the first
    decision.
    """

    columns: tuple[Column, ...] = DECISION_COLUMNS

    def __init__(
        self, stream: TextIO, policy: Policy, now: datetime, context: ReportContext, *,
        notes: Sequence[str] = (), **page_options: int,
    ) -> None:  # fmt: skip
        self.policy = policy
        self.context = context
        self.notes: Sequence[str] = notes
        self.tally = DecisionTally()
        self._details = DecisionDetails(policy, now)
        table = Table(self.columns, (), noun="enrollments", empty=DECISIONS_EMPTY)
        self._page = PageWriter(stream, table, **page_options)

    def __call__(self, raw: Any, decision: Decision) -> None:
        self._row(decision, self._details(raw, decision))

    def write(self, decision: Decision, program: str | None = None) -> None:
        self._row(decision, None)

    def _row(self, decision: Decision, detail: Detail | None) -> None:
        self.tally.add(decision)
        self._page.row(self.cells(decision), detail)

    def cells(self, decision: Decision) -> dict[str, str | None]:
        """A row's cells (a subclass adds its own columns)."""
        return decision_cells(self._details.shown(decision))

    def cards(self) -> list[Card]:
        return self.tally.cards()

    def facts(self) -> list[tuple[str, str]]:
        return self.context.facts()

    def close(self) -> None:
        self._page.close(title=self.context.title, facts=self.facts(), cards=self.cards(), notes=self.notes)

    def abandon(self) -> None:
        """Stop without finishing the page (the run failed)."""
        self._page.abandon()
