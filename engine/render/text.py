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


def render_csv(decisions: Iterable[Decision]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=[*DECISION_KEYS, "transition"], lineterminator="\n")
    writer.writeheader()
    for decision in decisions:
        row = decision_record(decision)
        for key in ("group_ids", "groups_added", "groups_removed", "warnings"):
            row[key] = ";".join(row[key])
        writer.writerow(row)
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
    counts = summarize(decisions)
    total = sum(counts.values())
    lines = [f"Summary: {total} enrollments"]
    width = max((len(k) for k in counts), default=0)
    for transition, count in sorted(counts.items(), key=lambda item: (-item[1], item[0])):
        lines.append(f"  {transition.ljust(width)}  {count}")
    return "\n".join(lines)


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


# --- stored runs and decisions (records come from the store; duck-typed here) -----------


def render_run_footer(report: Any) -> str:
    mode = "live" if report.live else "dry run"
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
    else:
        needed = sum(1 for d in report.decisions if d.action is Action.UPDATE)
        lines.append(f"  {needed} change(s) would be sent; nothing was sent (dry run)")
    return "\n".join(lines)


def render_runs(runs: Sequence[Any]) -> str:
    if not runs:
        return "(no runs yet)"
    rows: list[tuple[str, ...]] = [("RUN", "STARTED", "PROGRAM", "MODE", "OUTCOME", "CHANGES")]
    for run in runs:
        changes = run.counts.get("changes") or {}
        summary = ", ".join(f"{k} {v}" for k, v in sorted(changes.items())) or "-"
        rows.append((
            str(run.id), run.started_at.strftime("%Y-%m-%d %H:%M:%S"), run.program_id,
            str(run.mode), str(run.outcome), summary,
        ))  # fmt: skip
    return "\n".join(_columns(rows))


def render_history(records: Sequence[Any]) -> str:
    lines = [f"Enrollment {records[0].decision.enrollment_id}: {len(records)} decision(s)"]
    for record in records:
        decision = record.decision
        lines.append(
            f"  run {record.run_id} {record.run_started_at:%Y-%m-%d %H:%M:%S} {record.run_mode}: "
            f"{decision.transition} by {decision.rule_id or '-'}; change {record.change_state}"
        )
        if record.planned_patch:
            lines.append(f"      planned PATCH {json.dumps(record.planned_patch, sort_keys=True)}")
        if record.applied_at:
            lines.append(
                f"      applied at {record.applied_at:%Y-%m-%d %H:%M:%S} after {record.attempts} attempt(s)"
            )
        if record.http_status or record.api_error_code or record.error_message:
            lines.append(
                f"      API answer {record.http_status or '-'} {record.api_error_code or ''} "
                f"{record.error_message or ''}".rstrip()
            )
    return "\n".join(lines)


def render_stored_decision(record: Any, version: Any) -> str:
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
    state = "dry run: nothing was sent" if str(record.run_mode) == "dry_run" else str(record.change_state)
    lines.append(f"  change: {state}" + (f": {record.error_message}" if record.error_message else ""))
    return "\n".join(lines)
