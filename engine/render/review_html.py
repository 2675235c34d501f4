"""The HTML reports of ``plan`` and ``review``: a saved plan's decisions, and the review queue.

Both are pages of ``engine.render.html`` built from the pieces of ``decisions_html``: the
same header facts, cards, escaping and personal-data rules as a run's report.

* ``PlanHtmlWriter``: the run's decisions (every one, with its explanation), written as the
  run decides them, under a header that names the plan, the API it was made against and how
  to apply it; a card counts the changes a person would normally confirm (applying the plan
  approves them).
* ``review_page``: the changes waiting for approval. The explanation of a waiting change is
  what its run stored: each rule in order with the values it read when the change was
  decided (the raw enrollment is never kept), and the command that approves it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

from engine.policy.decision import Action, Decision, RuleTrace
from engine.policy.document import Policy
from engine.render.decisions_html import (
    DECISION_COLUMNS,
    WITHHELD,
    HtmlWriter,
    personal_reason_rules,
    read_value,
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
    ListCard,
    Page,
    Row,
    RuleStep,
    StatCard,
    Table,
)

__all__ = ["PlanFacts", "PlanHtmlWriter", "QueuedChange", "review_page"]

_TIME = "%Y-%m-%d %H:%M UTC"


# --- plan -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PlanFacts:
    """What the header of a plan's report says about the plan itself."""

    plan_id: int
    api_url: str
    created_at: datetime


PLAN_COLUMNS: tuple[Column, ...] = (
    *DECISION_COLUMNS,
    Column("approval", "Approval", filter=True, hidden=True),
)


class PlanHtmlWriter(HtmlWriter):
    """A saved plan's report, written as its run decides: every decision, explained, with a
    column and a card for the final decisions (those the policy asks a person to confirm:
    applying the plan approves them). Set ``plan`` (and ``context``, ``notes``) before
    ``close()``: the plan's id and creation time are known once the run is over."""

    columns = PLAN_COLUMNS

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.plan: PlanFacts | None = None
        self.final = 0

    def cells(self, decision: Decision) -> dict[str, str | None]:
        final = decision.action is Action.UPDATE and self.policy.requires_approval(decision)
        self.final += final
        return {**super().cells(decision), "approval": "needs approval" if final else "automatic"}

    def cards(self) -> list[Card]:
        plan = self._plan()
        return [
            StatCard("Plan", plan.plan_id, f"apply it with: autoapprove apply {plan.plan_id}", tone="info"),
            *super().cards(),
            StatCard(
                "Final decisions",
                self.final,
                "the policy asks a person to confirm these: applying the plan approves them",
                tone="warn" if self.final else "muted",
            ),
        ]

    def facts(self) -> list[tuple[str, str]]:
        plan = self._plan()
        return [*super().facts(), ("Created at", plan.created_at.strftime(_TIME)), ("API", plan.api_url)]

    def _plan(self) -> PlanFacts:
        if self.plan is None:
            raise ValueError("set the plan's facts before closing its report")
        return self.plan


# --- the review queue -----------------------------------------------------------------------


class QueuedChange(Protocol):
    """A change waiting in the review queue, as the store gives it."""

    @property
    def decision_id(self) -> int: ...
    @property
    def run_id(self) -> int: ...
    @property
    def program_id(self) -> str: ...
    @property
    def enrollment_id(self) -> str: ...
    @property
    def current_status(self) -> str | None: ...
    @property
    def status(self) -> str | None: ...
    @property
    def reason(self) -> str | None: ...
    @property
    def rule_id(self) -> str | None: ...
    @property
    def current_group_ids(self) -> Sequence[str]: ...
    @property
    def group_ids(self) -> Sequence[str]: ...
    @property
    def policy_version_id(self) -> int | None: ...
    @property
    def since(self) -> datetime: ...
    @property
    def trace(self) -> Sequence[RuleTrace]: ...


REVIEW_COLUMNS: tuple[Column, ...] = (
    Column("id", "ID", sort="number", width="6em", mono=True),
    Column("enrollment_id", "Enrollment", width="24.5em", mono=True),
    Column("current_status", "Current", filter=True, badge=True, width="10em"),
    Column("status", "Proposed", filter=True, badge=True, width="10em"),
    Column("rule_id", "Rule", filter=True, width="minmax(10em, 1.1fr)", mono=True),
    Column("groups", "Groups", width="minmax(7em, 0.8fr)", mono=True),
    Column("reason", "Reason", width="minmax(14em, 3fr)"),
    Column("since", "Waiting since", width="11em"),
    Column("program_id", "Program", filter=True, hidden=True),
    Column("transition", "Transition", filter=True, hidden=True),
)


def review_page(
    changes: Sequence[QueuedChange],
    policies: Mapping[int, Policy],
    *,
    generated_at: datetime,
    program_id: str | None = None,
) -> Page:
    """The review queue as a page; ``policies`` are the stored policy versions the changes
    were decided under (by id), for the header and to withhold reasons that copy personal data."""
    details = DetailTable()
    rows = [Row(_review_cells(c, policies), details.add(_review_detail(c, policies))) for c in changes]
    table = Table(REVIEW_COLUMNS, rows, details, noun="waiting changes", empty="No change is waiting.")
    return Page(
        title="Review queue",
        facts=_review_facts(changes, policies, generated_at, program_id),
        cards=_review_cards(changes, generated_at),
        table=table,
        notes=(
            "Nothing here is sent until a person approves it: autoapprove review approve ID... --by NAME "
            "(or reject ID... --by NAME --note TEXT).",
        ),
    )


def _review_facts(
    changes: Sequence[QueuedChange],
    policies: Mapping[int, Policy],
    generated_at: datetime,
    program_id: str | None,
) -> list[tuple[str, str]]:
    programs = sorted({c.program_id for c in changes})
    used = sorted({c.policy_version_id for c in changes if c.policy_version_id is not None} & set(policies))
    facts = [("Program", program_id or (programs[0] if len(programs) == 1 else f"{len(programs)} programs"))]
    if len(used) == 1:
        policy = policies[used[0]]
        facts += [
            ("Policy", policy.name or policy.program_id),
            ("Version", policy.version or "unversioned"),
            ("Hash", policy.content_hash[:12]),
        ]
    else:
        facts.append(("Policy", f"{len(used)} policy versions" if used else "-"))
    facts += [("Listed at", generated_at.strftime(_TIME)), ("Mode", "review queue: nothing was sent")]
    return facts


def _review_cards(changes: Sequence[QueuedChange], generated_at: datetime) -> list[Card]:
    oldest = min((c.since for c in changes), default=None)
    age = _age(generated_at - oldest) if oldest is not None else "-"
    since = f"since {oldest.strftime(_TIME)}" if oldest is not None else "nothing waits"
    transitions = Counter(_transition(c) for c in changes)
    rules = Counter(c.rule_id for c in changes if c.rule_id)
    programs = Counter(c.program_id for c in changes)
    return [
        StatCard(
            "Waiting", len(changes), "changes a person must approve", tone="warn" if changes else "muted"
        ),
        StatCard("Oldest waits", age, since),
        ListCard("Programs", sorted(programs.items()), filter_key="program_id"),
        BarsCard("By change", _bars(transitions, by_status=True), filter_key="transition"),
        BarsCard("Rule hits", _bars(rules), filter_key="rule_id", empty="no rule decided"),
    ]


def _bars(counts: Counter[str], *, by_status: bool = False) -> list[Bar]:
    order = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    return [
        Bar(label, n, status_tone(label.rsplit("-> ", 1)[-1]) if by_status else "info") for label, n in order
    ]


def _transition(change: QueuedChange) -> str:
    if change.status is None or change.status == change.current_status:
        return f"{change.current_status} (groups only)"
    return f"{change.current_status} -> {change.status}"


def _groups(change: QueuedChange) -> str | None:
    before, after = set(change.current_group_ids), set(change.group_ids)
    parts = [*(f"+{g}" for g in sorted(after - before)), *(f"\u2212{g}" for g in sorted(before - after))]
    return " ".join(parts) or None


def _withheld(change: QueuedChange, policies: Mapping[int, Policy]) -> bool:
    policy = policies.get(change.policy_version_id) if change.policy_version_id is not None else None
    # Without the policy it was decided under, nobody can tell what the reason copies: withhold it.
    return policy is None or change.rule_id in personal_reason_rules(policy)


def _reason(change: QueuedChange, policies: Mapping[int, Policy]) -> str | None:
    return WITHHELD if change.reason and _withheld(change, policies) else change.reason


def _review_cells(change: QueuedChange, policies: Mapping[int, Policy]) -> dict[str, str | int | None]:
    proposed = change.status if change.status != change.current_status else None
    return {
        "id": change.decision_id,
        "enrollment_id": change.enrollment_id,
        "current_status": change.current_status or "-",
        "status": proposed,
        "rule_id": change.rule_id,
        "groups": _groups(change),
        "reason": _reason(change, policies),
        "since": change.since.strftime("%Y-%m-%d %H:%M"),
        "program_id": change.program_id,
        "transition": _transition(change),
    }


def _review_detail(change: QueuedChange, policies: Mapping[int, Policy]) -> Detail:
    rule = "the default" if change.rule_id == "default" else f"rule {change.rule_id}"
    arrow = _transition(change).replace(" -> ", " \u2192 ")
    summary = [f"{arrow}, decided by {rule}."]
    reason = _reason(change, policies)
    if reason:
        summary.append(f"Reason: \u201c{reason}\u201d.")
    groups = _groups(change)
    if groups:
        summary.append(f"Groups: {groups}.")
    summary.append(
        f"Waiting since {change.since.strftime(_TIME)} (run {change.run_id}); nothing is sent yet."
    )
    notes = [
        f"approve: autoapprove review approve {change.decision_id} --by NAME; "
        f"refuse: autoapprove review reject {change.decision_id} --by NAME --note TEXT"
    ]
    title = "Rules in order, with the values they read when the change was decided"
    if not change.trace:
        return Detail(" ".join(summary), notes, [DetailSection(title, [], "No trace was stored for it.")])
    steps = [_step(trace) for trace in change.trace]
    return Detail(" ".join(summary), notes, [DetailSection(title, steps)])


def _step(trace: RuleTrace) -> RuleStep:
    reads = [(path, read_value(path, value), False) for path, value in trace.reads.items()]
    return RuleStep(trace.rule_id, trace.kind, "match" if trace.matched else "no match", reads=reads)


def _age(delta: timedelta) -> str:
    seconds = int(delta.total_seconds())
    if seconds < 3600:
        return f"{max(seconds, 0) // 60} min"
    if seconds < 86400:
        return f"{seconds // 3600} h"
    return f"{seconds // 86400} days"
