"""The HTML reports of ``diff`` and ``backtest``: pages of ``engine.render.html`` built from the
reports' own numbers (the ones ``to_dict`` gives) and the pieces of ``decisions_html``.

* ``diff_page``: both policies in the header; the counts, the transitions of the decided
  status, what changed per field and per rule, the rule hits under each policy; then every
  changed enrollment, whose row opens into both explanations (each policy's rules in order).
* ``backtest_page``: the policy and the labelled set in the header; agreement overall and per
  person's status, the confusion matrix (a cell filters the table), each status rule's
  precision; then every disagreement, whose row opens into the policy's explanation as
  backtest evaluated it (the enrollment's status replaced by ``as_status``).

Explanations are recomputed for the rows shown (evaluation is deterministic) from the
enrollments the report was made of; an enrollment whose id is missing or repeated gets none
rather than another's. Personal data never reaches the page: reads of names, email and street
address are withheld, and so is a reason whose template copies one of them.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any, Protocol, TypeVar

from engine.policy.coverage import RuleHits
from engine.policy.decision import Action, Decision
from engine.policy.document import Policy
from engine.policy.explain import Explainer
from engine.render.decisions_html import (
    WITHHELD,
    ExpressionTexts,
    explanation_section,
    personal_reason_rules,
    status_tone,
)
from engine.render.html import (
    Bar,
    BarsCard,
    Card,
    Column,
    Detail,
    DetailSection,
    DetailTable,
    Mark,
    Page,
    Row,
    StatCard,
    Table,
    TableCard,
    Tone,
)
from engine.runs.backtest import DATA_NOTE, BacktestReport, Disagreement
from engine.runs.diff import Change, DiffReport

__all__ = ["FIELD_LABELS", "backtest_page", "diff_page"]

_TIME = "%Y-%m-%d %H:%M:%S UTC"
_ARROW = " \u2192 "
NONE = "none"  # a decided status of None: "left as is", as in the table and CSV

# The compared fields as the page names them (the JSON keeps COMPARED_FIELDS' names).
FIELD_LABELS = {"status": "status", "rule_id": "rule", "group_ids": "groups", "action": "action",
                "reason": "reason"}  # fmt: skip


def _status(value: str | None) -> str:
    return value or NONE


def _pair(old: str | None, new: str | None) -> str:
    """A bar's label and a hidden filter cell: ``ACTIVE -> PENDING``, as the run report writes it."""
    return f"{_status(old)} -> {_status(new)}"


def _sorted_bars(counts: Counter[str], tone: Tone = "info") -> list[Bar]:
    order = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    return [Bar(label, n, tone) for label, n in order]


def _by_id(enrollments: Iterable[Any]) -> dict[str, Any]:
    """Each enrollment by the id its decision carries; repeated ids are left out."""
    found: dict[str, Any] = {}
    repeated: set[str] = set()
    for raw in enrollments:
        if not isinstance(raw, dict) or raw.get("id") is None:
            continue
        value = raw["id"]
        key = value if isinstance(value, str) else str(value)
        if key in found:
            repeated.add(key)
        found[key] = raw
    for key in repeated:
        del found[key]
    return found


class _Item(Protocol):
    @property
    def enrollment_id(self) -> str | None: ...


_T = TypeVar("_T", bound=_Item)


def _rows(
    items: Sequence[_T],
    enrollments: Iterable[Any],
    cells: Callable[[_T], Mapping[str, str | None]],
    detail: Callable[[_T, dict[str, Any]], Detail],
) -> tuple[list[Row], DetailTable]:
    """A row for each item; its explanation made from the enrollment of its id, when known."""
    raws = _by_id(enrollments) if items else {}
    details = DetailTable()
    rows = []
    for item in items:
        raw = raws.get(item.enrollment_id or "")
        rows.append(Row(cells(item), details.add(detail(item, raw)) if raw is not None else None))
    return rows, details


# --- diff -------------------------------------------------------------------------------------


DIFF_COLUMNS: tuple[Column, ...] = (
    Column("enrollment_id", "Enrollment", width="24.5em", mono=True),
    Column("changed", "What changed", filter=True, split=", ", width="minmax(8em, 1fr)"),
    Column("base_status", "Base status", filter=True, badge=True, width="9.5em"),
    Column("new_status", "New status", filter=True, badge=True, width="9.5em"),
    Column("rule", "Rule", width="minmax(8em, 1.2fr)", mono=True),
    Column("groups", "Groups", width="minmax(6em, 1fr)", mono=True),
    Column("reason", "Reason", width="minmax(10em, 2.6fr)"),
    Column("transition", "Transition", filter=True, hidden=True),
    Column("rule_change", "Rule change", filter=True, hidden=True),
)


def diff_page(
    report: DiffReport,
    base: Policy,
    new: Policy,
    enrollments: Sequence[Any],
    now: datetime,
    *,
    source: str,
    program_id: str | None = None,
) -> Page:
    """The diff as a page; ``enrollments`` are the ones both policies evaluated (for the
    explanations), ``source`` says where they came from."""
    sides = _Sides(base, new, now)
    rows, details = _rows(report.changes, enrollments, sides.cells, sides.detail)
    table = Table(
        DIFF_COLUMNS,
        rows,
        details,
        noun="changed enrollments",
        empty="No enrollment is decided differently.",
        hint="Click a row (or press Enter on it) to see how each policy decides it: each rule in order, "
        "the values it read and what decided it.",
    )
    return Page(
        title="Policy diff",
        facts=_diff_facts(report, (base, new), now, source=source, program_id=program_id),
        cards=_diff_cards(report),
        table=table,
        notes=(
            "Read-only: both policies evaluated the same enrollments at the same time; nothing was "
            "stored or sent. An enrollment is changed when its decided status, rule, groups (as a set), "
            "action or reason differ.",
        ),
    )


def _diff_facts(
    report: DiffReport, policies: tuple[Policy, Policy], now: datetime, *, source: str, program_id: str | None
) -> list[tuple[str, str]]:
    names = [policy.name or policy.program_id for policy in policies]
    return [
        ("Policy", names[0] if names[0] == names[1] else _ARROW.join(names)),
        ("Base", report.base_label),
        ("New", report.new_label),
        ("Program", program_id or policies[1].program_id),
        ("Evaluated at", now.strftime(_TIME)),
        ("Input", source),
        ("Mode", "diff: read-only"),
    ]


class _Sides:
    """Cells and explanations of a change, each side by its own policy (reasons that copy
    personal data withheld by the policy that wrote them)."""

    def __init__(self, base: Policy, new: Policy, now: datetime) -> None:
        self.base, self.new, self.now = base, new, now
        self._withheld = (personal_reason_rules(base), personal_reason_rules(new))
        self._explainers: tuple[Explainer, Explainer] | None = None
        self._texts = ExpressionTexts()

    def said(self, decision: Decision, side: int) -> str | None:
        """What a side's decision says: its reason, or its error."""
        if decision.action is Action.ERROR:
            return f"error: {decision.error}"
        if decision.reason and decision.rule_id in self._withheld[side]:
            return WITHHELD
        return decision.reason

    def cells(self, change: Change) -> dict[str, str | None]:
        base, new = change.base, change.new
        reasons = (self.said(base, 0), self.said(new, 1))
        return {
            "enrollment_id": change.enrollment_id or "?",
            "base_status": _status(base.status),
            "new_status": _status(new.status),
            "rule": _either(base.rule_id, new.rule_id),
            "groups": _groups(base.group_ids, new.group_ids),
            "reason": _reasons(*reasons),
            "changed": ", ".join(FIELD_LABELS[name] for name in change.changed),
            "transition": _pair(base.status, new.status) if base.status != new.status else None,
            "rule_change": _rule_change(change),
        }

    def detail(self, change: Change, raw: Any) -> Detail:
        if self._explainers is None:
            self._explainers = (Explainer(self.base, self.now), Explainer(self.new, self.now))
        decisions = (change.base, change.new)
        explained = [e.explain(raw, d) for e, d in zip(self._explainers, decisions, strict=True)]
        sections = []
        for side, explanation in enumerate(explained):
            title = ("Base policy", "New policy")[side]
            steps = explanation_section(explanation, texts=self._texts).steps
            # The side's decision leads its section; a skipped side has no steps, and says why.
            sections.append(DetailSection(title, steps, self.summary(explanation.decision, side)))
        changed = ", ".join(FIELD_LABELS[name] for name in change.changed)
        return Detail(
            summary=f"What changed: {changed}.",
            notes=[f"data warning: {w}" for w in explained[1].warnings],
            sections=sections,
        )

    def summary(self, decision: Decision, side: int) -> str:
        """One side's decision in a sentence (a diff sends nothing: no word of sending)."""
        if decision.action is Action.SKIP:
            return f"Skipped: status {decision.current_status} is not one this policy decides."
        if decision.action is Action.ERROR:
            return f"Could not be evaluated: {decision.error}"
        rule = "the default" if decision.rule_id == "default" else f"rule {decision.rule_id}"
        if decision.status is None:
            parts = [f"No rule decided; the status is left as it is ({decision.current_status})."]
        else:
            parts = [f"{decision.status}, decided by {rule}."]
        reason = self.said(decision, side)
        if reason:
            parts.append(f"Reason: \u201c{reason}\u201d.")
        parts.append(f"Groups: {' '.join(decision.group_ids) or 'none'}.")
        return " ".join(parts)


def _either(old: str | None, new: str | None) -> str | None:
    """One value when both sides agree, else ``old → new`` (``-`` for none)."""
    return new if old == new else f"{old or '-'}{_ARROW}{new or '-'}"


def _groups(old: Sequence[str], new: Sequence[str]) -> str | None:
    if set(old) == set(new):
        return " ".join(new) or None
    return _either(" ".join(old) or "(none)", " ".join(new) or "(none)")


def _reasons(old: str | None, new: str | None) -> str | None:
    """Reasons are long and the start of a cell is what shows: the new one first, then the old."""
    if old == new:
        return new
    return f"{_quoted(new)} (was {_quoted(old)})"


def _quoted(reason: str | None) -> str:
    return f"\u201c{reason}\u201d" if reason else "none"


def _rule_change(change: Change) -> str:
    old, new = change.base.rule_id or "-", change.new.rule_id or "-"
    return new if old == new else f"{old} -> {new}"


def _diff_cards(report: DiffReport) -> list[Card]:
    total = report.enrollments
    share = f"{100 * report.changed / total:.1f}% of the enrollments" if total else ""
    transitions = report.sorted_transitions()
    status_changes = sum(count for _, _, count in transitions)
    fields = Counter(FIELD_LABELS[name] for change in report.changes for name in change.changed)
    rules = Counter(_rule_change(change) for change in report.changes)
    errors = sum(c.new.action is Action.ERROR and c.base.action is not Action.ERROR for c in report.changes)
    fixed = sum(c.base.action is Action.ERROR and c.new.action is not Action.ERROR for c in report.changes)
    unmatched = [hit.id for hit in report.new_hits if hit.kind == "rule" and hit.hits == 0]
    # Six numbers fill the first row; the hits table stands beside the three charts.
    return [
        StatCard("Enrollments", total, "evaluated by both policies"),
        StatCard("Changed", report.changed, share, tone="info" if report.changed else "muted"),
        StatCard("Unchanged", report.unchanged, "decided the same by both", tone="muted"),
        StatCard(
            "Status changes",
            status_changes,
            "the decided status differs",
            tone="info" if status_changes else "muted",
        ),
        StatCard(
            "New errors",
            errors,
            f"the new policy cannot evaluate them; {fixed:,} fixed",
            tone="bad" if errors else "muted",
        ),
        StatCard(
            "Rules never matched",
            len(unmatched),
            "status rules of the new policy that matched no enrollment",
            tone="warn" if unmatched else "muted",
        ),
        BarsCard(
            "Transitions of the decided status (base -> new)",
            [Bar(_pair(old, new), count, status_tone(_status(new))) for old, new, count in transitions],
            filter_key="transition",
            empty="no decided status changes",
        ),
        _hits_card(report.base_hits, report.new_hits),
        BarsCard("What changed", _sorted_bars(fields), filter_key="changed", empty="nothing changed"),
        BarsCard(
            "Changes by rule (base -> new)",
            _sorted_bars(rules, "neutral"),
            filter_key="rule_change",
            empty="nothing changed",
        ),
    ]


def _hits_card(base: Sequence[RuleHits], new: Sequence[RuleHits]) -> TableCard:
    """Hits of each rule item under both policies, new order first (as the table prints them)."""
    before = {(hit.kind, hit.id): hit.hits for hit in base}
    after = {(hit.kind, hit.id): hit.hits for hit in new}
    keys = [*after, *(key for key in before if key not in after)]
    rows: list[list[int | str | Mark]] = []
    for kind, item in keys:
        old, current = before.get((kind, item)), after.get((kind, item))
        delta = (current or 0) - (old or 0)
        rows.append([
            Mark(item, "warn") if kind == "rule" and current == 0 else item,
            kind,
            "-" if old is None else old,
            "-" if current is None else Mark(current, "warn") if kind == "rule" and current == 0 else current,
            Mark(f"{delta:+,}", "info") if delta else Mark("0", "muted"),
        ])  # fmt: skip
    return TableCard(
        "Rule hits (enrollments each rule matched)",
        ["Rule", "Kind", "Base", "New", "Change"],
        rows,
        note="In amber: a status rule the new policy matched on no enrollment.",
        empty="no rules",
        row_span=3,
    )


# --- backtest ---------------------------------------------------------------------------------


BACKTEST_COLUMNS: tuple[Column, ...] = (
    Column("enrollment_id", "Enrollment", width="24.5em", mono=True),
    Column("human_status", "Person", filter=True, badge=True, width="11.5em"),
    Column("status", "Policy", filter=True, badge=True, width="11.5em"),
    Column("rule_id", "Rule", filter=True, width="minmax(10em, 1.1fr)", mono=True),
    Column("reason", "Policy's reason", width="minmax(14em, 3fr)"),
    Column("pair", "Person -> policy", filter=True, hidden=True),
)


def backtest_page(
    report: BacktestReport,
    policy: Policy,
    enrollments: Sequence[Any],
    now: datetime,
    *,
    source: str,
    program_id: str | None = None,
    min_agreement: float | None = None,
    explain_hint: str | None = None,
) -> Page:
    """The backtest as a page; ``enrollments`` are the ones it read (for the explanations)."""
    explained = _Disagreements(policy, now, report.as_status)
    rows, details = _rows(report.disagreements, enrollments, explained.cells, explained.detail)
    hint = (
        f"Click a row (or press Enter on it) to see why the policy decides it so, evaluated as if it were "
        f"{report.as_status} again: each rule in order, the values it read and what decided it."
    )
    if explain_hint:
        hint += f" On the command line: {explain_hint.strip('`')}"
    table = Table(
        BACKTEST_COLUMNS, rows, details, noun="disagreements", empty="The policy agrees with every person.",
        hint=hint,
    )  # fmt: skip
    notes = [DATA_NOTE]
    if report.left_out_applied:
        notes.append(
            f"Left out: {report.left_out_applied:,} enrollments whose status this tool applied itself "
            "(the policy's own decisions, not a person's)."
        )
    return Page(
        title="Backtest: the policy against people's decisions",
        facts=_backtest_facts(report, policy, now, source=source, program_id=program_id),
        cards=_backtest_cards(report, min_agreement),
        table=table,
        notes=notes,
    )


def _backtest_facts(
    report: BacktestReport, policy: Policy, now: datetime, *, source: str, program_id: str | None
) -> list[tuple[str, str]]:
    return [
        ("Policy", policy.name or policy.program_id),
        ("Version", policy.version or "unversioned"),
        ("Hash", policy.content_hash[:12]),
        ("Program", program_id or policy.program_id),
        ("Decided statuses", ", ".join(report.decided)),
        ("Evaluated as", report.as_status),
        ("Evaluated at", now.strftime(_TIME)),
        ("Input", source),
        ("Mode", "backtest: read-only"),
    ]


def _backtest_cards(report: BacktestReport, min_agreement: float | None) -> list[Card]:
    summary = report.to_dict()["summary"]
    agreement = summary["agreement"]
    note = f"{agreement:.3f} of the evaluated"
    tone: Tone = "neutral"
    if min_agreement is not None:
        below = agreement < min_agreement
        note += f"; {'below' if below else 'meets'} --min-agreement {min_agreement:g}"
        tone = "bad" if below else "good"
    disagree = summary["evaluated"] - summary["agree"]
    by_status = summary["by_status"]
    return [
        StatCard("Evaluated", summary["evaluated"], "enrollments a person decided"),
        StatCard("Agree", summary["agree"], f"{disagree:,} disagree", tone="info" if disagree else "muted"),
        StatCard("Agreement", f"{100 * agreement:.1f}%", note, tone=tone),
        BarsCard(
            "Agreement per person's status",
            [Bar(human, row["agree"], "good", of=row["evaluated"]) for human, row in by_status.items()],
            filter_key="human_status",
        ),
        _confusion_card(report),
        BarsCard(
            "Status rules against people (agree of matched: the rule's precision)",
            [
                Bar(r["rule_id"], r["agree"], "good" if r["matched"] else "muted", of=r["matched"])
                for r in summary["rules"]
            ],
            filter_key="rule_id",
            empty="the policy has no status rules",
        ),
    ]


def _confusion_card(report: BacktestReport) -> TableCard:
    confusion = report.to_dict()["summary"]["confusion"]
    columns = report.policy_columns()
    rows: list[list[int | str | Mark]] = []
    for human, counts in confusion.items():
        row: list[int | str | Mark] = [human]
        for column in columns:
            n = counts.get(column, 0)
            if column == human:
                row.append(Mark(n, "good" if n else "muted"))
            else:
                row.append(Mark(n, "bad", filter_value=_pair(human, column)) if n else Mark(0, "muted"))
        row.append(sum(counts.values()))
        rows.append(row)
    return TableCard(
        "Confusion: the person's status (rows) by the policy's (columns)",
        ["Person \u2193 / policy \u2192", *columns, "Total"],
        rows,
        note="Green: agree. Red: disagree (click a number to list those enrollments).",
        filter_key="pair",
    )


class _Disagreements:
    """Cells and explanations of disagreements, evaluated the way backtest did."""

    def __init__(self, policy: Policy, now: datetime, as_status: str) -> None:
        self.as_status = as_status
        self._withheld = personal_reason_rules(policy)
        self._explainer = Explainer(policy, now)
        self._texts = ExpressionTexts()

    def reason(self, rule_id: str | None, reason: str | None) -> str | None:
        return WITHHELD if reason and rule_id in self._withheld else reason

    def cells(self, item: Disagreement) -> dict[str, str | None]:
        return {
            "enrollment_id": item.enrollment_id or "?",
            "human_status": item.human_status,
            "status": item.status,
            "rule_id": item.rule_id,
            "reason": self.reason(item.rule_id, item.reason),
            "pair": _pair(item.human_status, item.status),
        }

    def detail(self, item: Disagreement, raw: dict[str, Any]) -> Detail:
        explanation = self._explainer.explain({**raw, "status": self.as_status})
        decision = explanation.decision
        if decision.action is Action.ERROR:
            policy = f"could not evaluate it ({decision.error})"
        elif decision.status is None:
            policy = "decides nothing (no rule and no default matched)"
        else:
            rule = "the default" if decision.rule_id == "default" else f"rule {decision.rule_id}"
            policy = f"decides {decision.status} by {rule}"
        human = item.human_status
        parts = [f"The person decided {human}; the policy {policy}, evaluated as {self.as_status}."]
        reason = self.reason(decision.rule_id, decision.reason)
        if reason and decision.action is not Action.ERROR:
            parts.append(f"Reason: \u201c{reason}\u201d.")
        return Detail(
            summary=" ".join(parts),
            notes=[f"data warning: {w}" for w in explanation.warnings],
            sections=[explanation_section(explanation, "The policy's rules in order", texts=self._texts)],
        )
