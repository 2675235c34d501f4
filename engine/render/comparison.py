"""``diff`` and ``backtest`` reports as a table, JSON and CSV (the HTML pages use the same
report objects and their ``to_dict``)."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence

from engine.policy.coverage import RuleHits
from engine.render.coverage import NO_MATCH_FLAG, aligned, render_hits
from engine.runs.backtest import DATA_NOTE, BacktestReport
from engine.runs.diff import Change, DiffReport

REASON_WIDTH = 40


def _status(value: str | None) -> str:
    return value or "none"


def _clip(text: str | None, width: int = REASON_WIDTH) -> str:
    text = text or ""
    return text if len(text) <= width else text[: width - 1] + "…"


def _percent(ratio: float) -> str:
    return f"{100 * ratio:.1f}%"


# --- diff ------------------------------------------------------------------------------------


def render_diff_table(report: DiffReport) -> str:
    lines = [
        f"Base: {report.base_label}",
        f"New:  {report.new_label}",
        "",
        f"Summary: {report.enrollments} enrollments, {report.changed} changed, {report.unchanged} unchanged",
    ]
    transitions = report.sorted_transitions()
    if transitions:
        lines.append("Transitions of the decided status (base -> new; none = left as is):")
        rows = [(f"{_status(old)} -> {_status(new)}", str(count)) for old, new, count in transitions]
        lines += ["  " + row for row in aligned(rows)]
    lines += ["", render_diff_hits(report.base_hits, report.new_hits), ""]
    if not report.changes:
        lines.append("(no enrollment is decided differently)")
        return "\n".join(lines)
    header = ("ENROLLMENT", "CHANGED", "STATUS", "RULE", "GROUPS", "REASON")
    lines += aligned([header, *(_change_row(change) for change in report.changes)])
    return "\n".join(lines)


def _change_row(change: Change) -> tuple[str, ...]:
    base, new = change.base, change.new
    return (
        change.enrollment_id or "?",
        ",".join(change.changed),
        f"{_status(base.status)} -> {_status(new.status)}",
        f"{base.rule_id or '-'} -> {new.rule_id or '-'}",
        f"[{' '.join(base.group_ids)}] -> [{' '.join(new.group_ids)}]",
        f"{_clip(base.reason)!r} -> {_clip(new.reason)!r}"
        if "reason" in change.changed
        else _clip(new.reason),
    )


def render_diff_hits(base: Sequence[RuleHits], new: Sequence[RuleHits]) -> str:
    """Hits of each rule item under both policies; new status rules that matched nothing flagged."""
    before = {(hit.kind, hit.id): hit.hits for hit in base}
    keys = [(hit.kind, hit.id) for hit in new] + [
        key for key in before if key not in {(h.kind, h.id) for h in new}
    ]
    after = {(hit.kind, hit.id): hit.hits for hit in new}
    rows = []
    for kind, item in keys:
        old = str(before[(kind, item)]) if (kind, item) in before else "-"
        current = str(after[(kind, item)]) if (kind, item) in after else "-"
        rows.append((kind, item, old, "->", current))
    lines = ["Rule hits (enrollments each rule matched, base -> new):"]
    for row, (kind, item) in zip(aligned(rows), keys, strict=True):
        flag = f"  {NO_MATCH_FLAG}" if kind == "rule" and after.get((kind, item)) == 0 else ""
        lines.append(f"  {row}{flag}")
    return "\n".join(lines)


def render_diff_json(report: DiffReport) -> str:
    return json.dumps(report.to_dict(), indent=2)


DIFF_CSV_FIELDS = (
    "enrollment_id", "changed",
    "base_status", "new_status", "base_rule_id", "new_rule_id", "base_group_ids", "new_group_ids",
    "base_action", "new_action", "base_reason", "new_reason",
)  # fmt: skip


def render_diff_csv(report: DiffReport) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=DIFF_CSV_FIELDS, lineterminator="\n")
    writer.writeheader()
    for change in report.changes:
        row: dict[str, str | None] = {
            "enrollment_id": change.enrollment_id,
            "changed": ";".join(change.changed),
        }
        for side, decision in (("base", change.base), ("new", change.new)):
            row[f"{side}_status"] = decision.status
            row[f"{side}_rule_id"] = decision.rule_id
            row[f"{side}_group_ids"] = ";".join(decision.group_ids)
            row[f"{side}_action"] = decision.action.value
            row[f"{side}_reason"] = decision.reason
        writer.writerow(row)
    return buffer.getvalue()


# --- backtest --------------------------------------------------------------------------------


def render_backtest_table(report: BacktestReport, *, explain_hint: str | None = None) -> str:
    decided = ", ".join(report.decided)
    lines = [
        f"Policy {report.policy_label}",
        f"Labelled: enrollments a person decided ({decided}), each evaluated as if it were "
        f"{report.as_status} again",
    ]
    if report.left_out_applied:
        lines.append(f"Left out: {report.left_out_applied} whose status this tool applied itself")
    lines += [
        f"Note: {DATA_NOTE}",
        "",
        f"Summary: {report.evaluated} evaluated, {report.agree} agree, agreement {report.agreement:.3f} "
        f"({_percent(report.agreement)})",
        "Agreement per person's status:",
    ]
    rows = [
        (human, f"{row['agree']} of {row['evaluated']}", _percent(row["agreement"]))
        for human, row in report.by_status().items()
    ]
    lines += ["  " + row for row in aligned(rows)]
    lines += ["Confusion (rows: the person's status; columns: the policy's):", *_confusion(report)]
    lines.append("Status rules against people (matched, of which agree: the rule's precision):")
    rule_rows = [
        (
            rule.rule_id,
            str(rule.matched),
            str(rule.agree),
            _percent(rule.agree / rule.matched) if rule.matched else "-",
        )
        for rule in report.rules
    ]
    lines += ["  " + row for row in aligned([("RULE", "MATCHED", "AGREE", "PRECISION"), *rule_rows])]
    lines += ["", render_hits(report.hits, what="labelled enrollments"), ""]
    if not report.disagreements:
        lines.append("(no disagreement)")
        return "\n".join(lines)
    hint = f" (open each with {explain_hint})" if explain_hint else ""
    lines.append(f"Disagreements: {len(report.disagreements)}{hint}")
    header = ("ENROLLMENT", "PERSON", "POLICY", "RULE", "REASON")
    disagreements = [
        (
            item.enrollment_id or "?",
            item.human_status,
            item.status,
            item.rule_id or "-",
            _clip(item.reason, 70),
        )
        for item in report.disagreements
    ]
    lines += aligned([header, *disagreements])
    return "\n".join(lines)


def _confusion(report: BacktestReport) -> list[str]:
    columns = report.policy_columns()
    rows = [("PERSON \\ POLICY", *columns)]
    for human in report.human_statuses():
        counts = report.confusion[human]
        rows.append((human, *(str(counts.get(column, 0)) for column in columns)))
    return ["  " + row for row in aligned(rows)]


def render_backtest_json(report: BacktestReport) -> str:
    return json.dumps(report.to_dict(), indent=2)


BACKTEST_CSV_FIELDS = ("enrollment_id", "human_status", "status", "rule_id", "reason")


def render_backtest_csv(report: BacktestReport) -> str:
    """One row per disagreement (the summary is in the table and JSON)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=BACKTEST_CSV_FIELDS, lineterminator="\n")
    writer.writeheader()
    for item in report.disagreements:
        writer.writerow(item.to_dict())
    return buffer.getvalue()
