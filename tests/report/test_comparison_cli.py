"""``diff --format html`` and ``backtest --format html`` through the real entry point: one page on
stdout, the same numbers as ``--format json``, and the gates still deciding the exit code."""

from __future__ import annotations

import json
import re
from pathlib import Path

from cli_process import REPO_ROOT, run_cli

from .conftest import PAGE_SCRIPTS, script_blocks

TX = REPO_ROOT / "rules" / "tx_residential_battery.yaml"
SAMPLE = REPO_ROOT / "rules" / "samples" / "tx_residential_battery.enrollments.json"
NOW = "2026-11-25T00:00:00Z"


def stat(html: str, label: str) -> str:
    found = re.search(rf"<h2>{re.escape(label)}</h2>\s*<div class=\"stat-value\">([^<]*)</div>", html)
    assert found is not None, label
    return found.group(1)


def test_diff_html_is_one_page_with_the_json_numbers_and_fail_on_change_still_decides(tmp_path: Path) -> None:
    edited = tmp_path / "tx.yaml"
    edited.write_text(TX.read_text(encoding="utf-8").replace("10000]}", "15000]}"), encoding="utf-8")
    common = ["diff", "--rules", str(edited), "--base", str(TX), "--input", str(SAMPLE), "--now", NOW]
    summary = json.loads(run_cli([*common, "--format", "json"]).stdout)["summary"]
    assert summary["changed"] > 0

    result = run_cli([*common, "--format", "html", "--fail-on-change"])
    assert result.code == 1, result.stderr
    html = result.stdout
    assert html.startswith("<!DOCTYPE html>")
    assert script_blocks(html) == PAGE_SCRIPTS
    for label in ("Enrollments", "Changed", "Unchanged"):
        assert stat(html, label) == str(summary[label.lower()])
    assert f"<dd>{SAMPLE}</dd>" in html  # where the enrollments came from
    assert run_cli([*common, "--format", "html"]).code == 0

    same = run_cli(["diff", "--rules", str(TX), "--base", str(TX), "--input", str(SAMPLE), "--now", NOW,
                    "--format", "html", "--fail-on-change"])  # fmt: skip
    assert same.code == 0, same.stderr
    assert stat(same.stdout, "Changed") == "0"
    assert "No enrollment is decided differently." in same.stdout


def test_backtest_html_keeps_the_min_agreement_gate(tmp_path: Path) -> None:
    common = ["backtest", "--rules", str(TX), "--input", str(SAMPLE), "--now", NOW]
    summary = json.loads(run_cli([*common, "--format", "json"]).stdout)["summary"]
    below = run_cli([*common, "--format", "html", "--min-agreement", "0.9"])
    assert below.code == 1
    assert "is below --min-agreement 0.9" in below.stderr
    html = below.stdout
    assert html.startswith("<!DOCTYPE html>")
    assert script_blocks(html) == PAGE_SCRIPTS
    assert stat(html, "Evaluated") == str(summary["evaluated"])
    assert stat(html, "Agree") == str(summary["agree"])
    assert stat(html, "Agreement") == f"{100 * summary['agreement']:.1f}%"
    assert "below --min-agreement 0.9" in html
    assert f"--as-status {summary['as_status']} --id ID" in html  # how to open one with explain

    met = run_cli([*common, "--format", "html", "--min-agreement", "0"])
    assert met.code == 0, met.stderr
    assert met.stderr == ""
    # A policy that does not load is still exit 1, with no page.
    broken = tmp_path / "broken.yaml"
    broken.write_text("rules: [", encoding="utf-8")
    failed = run_cli(["backtest", "--rules", str(broken), "--input", str(SAMPLE), "--format", "html"])
    assert failed.code == 1
    assert failed.stdout == ""
