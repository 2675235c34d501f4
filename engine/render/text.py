"""Text renderings of decisions, explanations and test results (the CLI prints them)."""

from __future__ import annotations

import csv
import io
import json
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

from engine.policy.decision import Action, Decision
from engine.policy.explain import Explanation
from engine.policy.testfile import TestFileResult
from engine.runs.plans import PlanDocument
from engine.runs.records import DecisionRecord, PolicyVersionRecord, ReviewRecord, RunRecord
from engine.runs.report import ApplyReport, RunReport
from engine.runs.states import ChangeState, RunMode

DECISION_KEYS = (
    "enrollment_id", "current_status", "status", "reason", "rule_id", "group_ids",
    "groups_added", "groups_removed", "action", "warnings", "error",
)  # fmt: skip


def decision_record(decision: Decision) -> dict[str, Any]:
    """The public shape of a decision in JSON and CSV output."""
    data = decision.to_dict()
    record = {key: data[key] for key in DECISION_KEYS}
    record["transition"] = decision.transition
    return record


def summarize(decisions: Iterable[Decision]) -> Counter[str]:
    """Counts by transition (``SUBMITTED -> ACTIVE``, ``skip``, ``error`` ...)."""
    return Counter(decision.transition for decision in decisions)


def render_json(decisions: Iterable[Decision]) -> str:
    return json.dumps([decision_record(d) for d in decisions], indent=2)


def csv_row(decision: Decision) -> dict[str, Any]:
    """A decision as one CSV row: list fields joined with ``;``."""
    row = decision_record(decision)
    for key in ("group_ids", "groups_added", "groups_removed", "warnings"):
        row[key] = ";".join(row[key])
    return row


def render_csv(decisions: Iterable[Decision]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=[*DECISION_KEYS, "transition"], lineterminator="\n")
    writer.writeheader()
    for decision in decisions:
        writer.writerow(csv_row(decision))
    return buffer.getvalue()


def render_table(decisions: Sequence[Decision], *, show_unchanged: bool = False) -> str:
    """A readable preview: what would change and why, then a summary by transition."""
    rows: list[tuple[str, ...]] = [("ENROLLMENT", "CHANGE", "RULE", "GROUPS", "REASON / ERROR")]
    for decision in decisions:
        if decision.action is Action.SKIP or (decision.action is Action.NONE and not show_unchanged):
            continue
        groups = " ".join(
            [*(f"+{g}" for g in decision.groups_added), *(f"-{g}" for g in decision.groups_removed)]
        )
        detail = (decision.error if decision.action is Action.ERROR else decision.reason) or ""
        rows.append((
            decision.enrollment_id or "?", decision.transition, decision.rule_id or "-",
            groups or "-", _clip(detail, 70),
        ))  # fmt: skip
    lines = _columns(rows) if len(rows) > 1 else ["(no enrollment needs a change)"]
    lines += ["", render_summary(decisions)]
    return "\n".join(lines)


def render_summary(decisions: Iterable[Decision]) -> str:
    return "\n".join(summary_lines(summarize(decisions)))


def summary_lines(counts: Counter[str]) -> list[str]:
    """``Summary: N enrollments`` and the count of each transition, most frequent first."""
    total = sum(counts.values())
    lines = [f"Summary: {total} enrollments"]
    width = max((len(k) for k in counts), default=0)
    for transition, count in sorted(counts.items(), key=lambda item: (-item[1], item[0])):
        lines.append(f"  {transition.ljust(width)}  {count}")
    return lines


def render_explanation(explanation: Explanation) -> str:
    decision = explanation.decision
    lines = [f"Enrollment {decision.enrollment_id} (status {decision.current_status})"]
    if decision.action is Action.SKIP:
        lines.append("  skipped: its status is not in the policy's applies_to")
        return "\n".join(lines)
    for warning in explanation.warnings:
        lines.append(f"  data warning: {warning}")
    for rule in explanation.rules:
        verdict = "ERROR" if rule.error else ("MATCH" if rule.matched else "no match")
        lines.append(f"  {rule.kind} {rule.rule_id}: {verdict}")
        for path, value in rule.reads.items():
            note = "  (missing)" if path in rule.missing else ""
            lines.append(f"      read {path} = {_clip(json.dumps(value, default=str), 120)}{note}")
        for depth, step in enumerate(rule.decided_by):
            label = "decided by" if depth == 0 else "  because"
            lines.append(
                f"      {label} {_compact(step.expression)} -> {json.dumps(step.value, default=str)}"
            )
        if rule.error:
            lines.append(f"      error: {rule.error}")
    lines.append(f"  => {describe_decision(decision)}")
    return "\n".join(lines)


def describe_decision(decision: Decision) -> str:
    if decision.action is Action.ERROR:
        return f"error: {decision.error}"
    status = decision.status or f"{decision.current_status} (left as is)"
    parts = [f"{status} by {decision.rule_id or 'no rule'}"]
    if decision.reason:
        parts.append(f"reason {decision.reason!r}")
    parts.append(f"groups {decision.group_ids}")
    parts.append(f"action {decision.action.value}")
    return "; ".join(parts)


def render_test_results(results: Sequence[TestFileResult], verbose: bool = False) -> str:
    lines: list[str] = []
    for result in results:
        for case in result.cases:
            if case.passed:
                if verbose:
                    lines.append(f"PASS {case.location} {case.name}")
                continue
            lines.append(f"FAIL {case.location} {case.name}")
            for mismatch in case.mismatches:
                lines.append(f"    {mismatch.field}: expected {json.dumps(mismatch.expected)}, "
                             f"got {json.dumps(mismatch.actual)}")  # fmt: skip
            if case.decision.error:
                lines.append(f"    error: {case.decision.error}")
            for trace in case.decision.trace:
                mark = "MATCH" if trace.matched else "no match"
                lines.append(f"    trace {trace.kind} {trace.rule_id}: {mark} "
                             f"{json.dumps(trace.reads, default=str)}")  # fmt: skip
    passed = sum(r.passed for r in results)
    failed = sum(r.failed for r in results)
    lines.append(f"{passed} passed, {failed} failed")
    return "\n".join(lines)


def _columns(rows: list[tuple[str, ...]]) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    return [
        "  ".join([*(c.ljust(w) for c, w in zip(row, widths, strict=False)), row[-1]]).rstrip()
        for row in rows
    ]


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def _compact(expression: Any) -> str:
    return _clip(json.dumps(expression, separators=(",", ":")), 100)


# --- runs, plans and stored decisions (the records the store hands back) -----------------


def render_run_footer(report: RunReport) -> str:
    mode = RunMode.LIVE.value if report.live else (RunMode.PLAN.value if report.plan_id else "dry run")
    lines = [f"Run {report.run_id} ({mode}, {report.program_id}): {report.outcome}"]
    if report.message:
        lines.append(f"  {report.message}")
    if report.recovered:
        lines.append(f"  recovered {report.recovered} change(s) left in flight by an earlier run")
    if report.missing_groups:
        verb = "created" if report.live else "would be created"
        lines.append(f"  groups that {verb}: {', '.join(report.missing_groups)}")
    if report.live:
        states = ", ".join(f"{state} {count}" for state, count in sorted(report.change_states.items()))
        lines.append(f"  changes: {states or 'none needed'}")
        if report.held:
            lines.append(
                f"  held {len(report.held)} move(s) out of ACTIVE (not in the policy's "
                "limits.allow_leaving_active; review them in the Flip dashboard):"
            )
            lines.extend(f"    {held.enrollment_id}: ACTIVE -> {held.status}" for held in report.held)
        if report.awaiting_approval:
            lines.append(f"{report.awaiting_approval} changes await approval: autoapprove review")
    else:
        needed = report.needed
        if report.plan_id:
            lines.append(f"  {needed} change(s) saved in the plan; nothing was sent")
        else:
            lines.append(f"  {needed} change(s) would be sent; nothing was sent (dry run)")
        if report.awaiting_approval:
            lines.append(f"  {report.awaiting_approval} of them would wait for approval in a live run")
    return "\n".join(lines)


def render_plan_summary(document: PlanDocument) -> str:
    """What ``apply`` asks about: the plan, its policy, its changes by transition."""
    counts: Counter[str] = Counter()
    for change in document.changes:
        current, planned = change.current.status, change.planned.status
        counts[f"{current} -> {planned}" if planned != current else f"{current} (groups only)"] += 1
    policy = document.policy
    lines = [
        f"Plan {document.plan_id} for {document.program_id}, made {document.created_at} "
        f"against {document.api_url}",
        f"  policy {policy.name} {policy.version or ''} ({policy.content_hash[:12]}), "
        f"evaluated at {document.evaluation_time}".replace("  (", " ("),
        f"  {len(document.changes)} change(s):",
    ]
    width = max((len(k) for k in counts), default=0)
    lines += [f"    {k.ljust(width)}  {n}" for k, n in sorted(counts.items(), key=lambda i: (-i[1], i[0]))]
    return "\n".join(lines)


def render_apply_report(report: ApplyReport) -> str:
    what = f"apply plan {report.plan_id}" if report.plan_id else RunMode.APPROVE.value
    lines = [f"Run {report.run_id} ({what}, {report.program_id}, by {report.by}): {report.outcome}"]
    if report.message:
        lines.append(f"  {report.message}")
    if report.created_groups:
        lines.append(f"  groups created: {', '.join(report.created_groups)}")
    states = ", ".join(f"{state} {count}" for state, count in sorted(report.change_states.items()))
    lines.append(f"  changes: {states or 'none left to send'}")
    if report.stale:
        lines.append(f"  {len(report.stale)} stale (changed since planning; not sent: look at them):")
        lines += [f"    {enrollment_id}: {what_changed}" for enrollment_id, what_changed in report.stale]
    return "\n".join(lines)


REVIEW_KEYS = (
    "id", "program_id", "enrollment_id", "current_status", "status", "rule_id", "reason",
    "current_group_ids", "group_ids", "since",
)  # fmt: skip


def review_item(record: ReviewRecord) -> dict[str, Any]:
    """The public shape of a waiting change in JSON and CSV output."""
    return {
        "id": record.decision_id,
        "program_id": record.program_id,
        "enrollment_id": record.enrollment_id,
        "current_status": record.current_status,
        "status": record.status,
        "rule_id": record.rule_id,
        "reason": record.reason,
        "current_group_ids": list(record.current_group_ids),
        "group_ids": list(record.group_ids),
        "since": record.since.strftime("%Y-%m-%dT%H:%M:%SZ"),
    }


def render_review_queue(records: Sequence[ReviewRecord], fmt: str = "table") -> str:
    items = [review_item(record) for record in records]
    if fmt == "json":
        return json.dumps(items, indent=2)
    if fmt == "csv":
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=list(REVIEW_KEYS), lineterminator="\n")
        writer.writeheader()
        for item in items:
            writer.writerow({**item, "current_group_ids": ";".join(item["current_group_ids"]),
                             "group_ids": ";".join(item["group_ids"])})  # fmt: skip
        return buffer.getvalue()
    if not items:
        return "(no change is waiting for approval)"
    rows: list[tuple[str, ...]] = [("ID", "ENROLLMENT", "CHANGE", "RULE", "SINCE", "REASON")]
    for item in items:
        change = f"{item['current_status']} -> {item['status']}"
        if item["status"] == item["current_status"]:
            change = f"{item['current_status']} (groups only)"
        rows.append((
            str(item["id"]), item["enrollment_id"], change, item["rule_id"] or "-",
            item["since"].replace("T", " ").rstrip("Z"), _clip(item["reason"] or "", 60),
        ))  # fmt: skip
    lines = _columns(rows)
    lines.append(f"\n{len(items)} change(s) waiting: autoapprove review approve ID... --by NAME, or reject")
    return "\n".join(lines)


def render_runs(runs: Sequence[RunRecord]) -> str:
    if not runs:
        return "(no runs yet)"
    rows: list[tuple[str, ...]] = [("RUN", "STARTED", "PROGRAM", "MODE", "OUTCOME", "CHANGES")]
    for run in runs:
        changes = run.counts.get("changes") or {}
        summary = ", ".join(f"{k} {v}" for k, v in sorted(changes.items())) or "-"
        rows.append((
            str(run.id), run.started_at.strftime("%Y-%m-%d %H:%M:%S"), run.program_id,
            _run_mode(run), str(run.outcome), summary,
        ))  # fmt: skip
    return "\n".join(_columns(rows))


def _run_mode(run: RunRecord) -> str:
    """``live``; ``plan 12``; ``apply plan 12 by alice``; ``approve by bob``."""
    mode, plan_id = run.mode, run.plan_id
    if mode == RunMode.PLAN and plan_id:
        return f"{mode} {plan_id}"
    if mode in (RunMode.APPLY, RunMode.APPROVE):
        target = f" plan {plan_id}" if plan_id else ""
        return f"{mode}{target} by {run.applied_by or '?'}"
    return str(mode)


def render_history(records: Sequence[DecisionRecord]) -> str:
    lines = [f"Enrollment {records[0].decision.enrollment_id}: {len(records)} decision(s)"]
    for record in records:
        decision = record.decision
        mode = f"plan {record.run_plan_id}" if record.run_plan_id else str(record.run_mode)
        lines.append(
            f"  run {record.run_id} {record.run_started_at:%Y-%m-%d %H:%M:%S} {mode}: "
            f"{decision.transition} by {decision.rule_id or '-'}; change {record.change_state}"
        )
        if record.planned_patch:
            lines.append(f"      planned PATCH {json.dumps(record.planned_patch, sort_keys=True)}")
        if record.reviewed_by:
            refused = record.change_state == ChangeState.REFUSED
            verdict = ChangeState.REFUSED.value if refused else "approved"
            when = f"{record.reviewed_at:%Y-%m-%d %H:%M:%S}" if record.reviewed_at else "?"
            note = f": {record.review_note}" if record.review_note else ""
            lines.append(f"      {verdict} by {record.reviewed_by} at {when} (change {record.id}){note}")
        if record.applied_at:
            lines.append(
                f"      applied at {record.applied_at:%Y-%m-%d %H:%M:%S} after {record.attempts} attempt(s)"
            )
        if record.http_status or record.api_error_code:
            lines.append(
                f"      API answer {record.http_status or '-'} {record.api_error_code or ''} "
                f"{record.error_message or ''}".rstrip()
            )
        elif record.error_message:
            lines.append(f"      note: {record.error_message}")
    return "\n".join(lines)


def render_stored_decision(record: DecisionRecord, version: PolicyVersionRecord | None) -> str:
    decision = record.decision
    policy = "unknown policy"
    if version is not None:
        policy = f"{version.name} {version.version or ''} ({version.content_hash[:12]})".replace("  ", " ")
    lines = [
        f"Enrollment {decision.enrollment_id}: latest decision, run {record.run_id} ({record.run_mode})",
        f"  policy {policy}, evaluated at {record.run_now:%Y-%m-%dT%H:%M:%SZ}",
        f"  => {describe_decision(decision)}",
    ]
    for warning in decision.warnings:
        lines.append(f"  data warning: {warning}")
    for trace in decision.trace:
        mark = "MATCH" if trace.matched else "no match"
        lines.append(f"  {trace.kind} {trace.rule_id}: {mark} {json.dumps(trace.reads, default=str)}")
    dry = record.run_mode == RunMode.DRY_RUN
    state = "dry run: nothing was sent" if dry else str(record.change_state)
    lines.append(f"  change: {state}" + (f": {record.error_message}" if record.error_message else ""))
    return "\n".join(lines)
