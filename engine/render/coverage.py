"""Coverage of policy tests and per-rule hit counts, as text and JSON."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from engine.policy.coverage import ConditionOutcomes, CoverageReport, RuleHits
from engine.policy.testfile import TestFileResult

NO_MATCH_FLAG = "<- matched no enrollment"


def coverage_summary_line(report: CoverageReport) -> str:
    """The last line of ``autoapprove test --coverage``."""
    rules = sum(rule.hits > 0 for rule in report.rules)
    outcomes = sum(int(c.true) + int(c.false) for c in report.conditions)
    return (
        f"coverage: {report.percent:.1f}% ({report.covered} of {report.total}: "
        f"{rules} of {len(report.rules)} rules matched, "
        f"{outcomes} of {2 * len(report.conditions)} condition outcomes)"
    )


def render_coverage(report: CoverageReport) -> str:
    """Hits per rule item, rules no case matched, uncovered condition outcomes, then the
    percentage (last)."""
    lines = ["Rule coverage (cases that matched each rule):"]
    rows = [(f"{_where(rule)}", rule.kind, rule.id, str(rule.hits)) for rule in report.rules]
    lines += ["  " + row for row in aligned(rows)]
    for rule in report.unmatched:
        suffix = "" if rule.kind == "rule" else f" ({rule.kind})"
        lines.append(f"{_where(rule)}: rule {rule.id} never matched by a case{suffix}")
    for condition in report.uncovered:
        lines.append(f"{_at(condition)}: condition {condition.pointer} {_missing_outcome(condition)}")
    lines.append(coverage_summary_line(report))
    return "\n".join(lines)


def render_test_json(results: Sequence[TestFileResult], report: CoverageReport | None, broken: int) -> str:
    """``{"passed", "failed", "coverage": {...}}`` (coverage only when it was measured)."""
    document: dict[str, Any] = {
        "passed": sum(r.passed for r in results),
        "failed": sum(r.failed for r in results) + broken,
        "failures": [
            {
                "file": case.location.path,
                "line": case.location.line,
                "name": case.name,
                "mismatches": [
                    {"field": m.field, "expected": m.expected, "actual": m.actual} for m in case.mismatches
                ],
            }
            for result in results
            for case in result.cases
            if not case.passed
        ],
    }
    if report is not None:
        document["coverage"] = coverage_json(report)
    return json.dumps(document, indent=2, default=str)


def coverage_json(report: CoverageReport) -> dict[str, Any]:
    return {
        "percent": report.percent,
        "rules": [rule.to_dict() for rule in report.rules],
        "conditions": [condition.to_dict() for condition in report.conditions],
    }


def render_hits(hits: Sequence[RuleHits], *, what: str = "enrollments") -> str:
    """Per-rule hit counts on real data, status rules that matched nothing flagged."""
    lines = [f"Rule hits ({what} each rule matched):"]
    rows = [(rule.kind, rule.id, str(rule.hits)) for rule in hits]
    for row, rule in zip(aligned(rows), hits, strict=True):
        flag = f"  {NO_MATCH_FLAG}" if rule.kind == "rule" and rule.hits == 0 else ""
        lines.append(f"  {row}{flag}")
    return "\n".join(lines)


def _where(rule: RuleHits) -> str:
    return f"{rule.file}:{rule.line}" if rule.line is not None else rule.file


def _at(condition: ConditionOutcomes) -> str:
    if condition.line is None:
        return condition.file
    return f"{condition.file}:{condition.line}:{condition.column or 1}"


def _missing_outcome(condition: ConditionOutcomes) -> str:
    if not (condition.true or condition.false):
        return "never evaluated by a case"
    return "never true" if not condition.true else "never false"


def aligned(rows: Sequence[tuple[str, ...]]) -> list[str]:
    if not rows:
        return []
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in rows
    ]
