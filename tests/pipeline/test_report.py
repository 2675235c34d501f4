"""The HTML report of a run against the simulator: every decision explained as the list
streams in, with the same explanation ``explain`` gives for the enrollment."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from cli_process import run_cli

from engine.cli.run_cmds import discard
from engine.policy.decision import Decision
from engine.policy.document import Policy
from engine.policy.explain import explain
from engine.render.decisions_html import ExplainedDecisions, HtmlWriter, ReportContext, explanation_detail
from engine.render.html import DetailTable, render_page
from engine.sandbox.generator import TX_BATTERY_PROGRAM
from engine.sandbox.simulator import Simulator

from .conftest import NOW, NOW_ARG, REPO_ROOT, TX_COUNT, TX_RULES, Pipeline, cli_env, writes


def test_a_dry_run_explains_every_decision_for_the_report(
    simulator: Simulator, pipeline: Pipeline, tx_policy: Policy
) -> None:
    seen: list[tuple[Any, Decision]] = []
    collector = ExplainedDecisions(tx_policy, NOW)

    def observe(raw: dict[str, Any], decision: Decision) -> None:
        seen.append((raw["id"], decision))
        collector(raw, decision)

    report = pipeline.run(tx_policy, on_evaluated=observe)

    assert [decision for _, decision in seen] == report.decisions
    assert len(report.decisions) == TX_COUNT
    # The explanation of each row is the one explain() gives for that enrollment now.
    expected = DetailTable()
    for enrollment in simulator.enrollments(TX_BATTERY_PROGRAM):
        expected.add(explanation_detail(explain(tx_policy, enrollment, NOW)))
    assert collector.details.payload() == expected.payload()
    context = ReportContext.for_policy(
        tx_policy, title="Dry run", mode="dry run", program_id=None, evaluated_at=NOW
    )
    html = render_page(collector.page(context, report.decisions))
    assert all(str(d.enrollment_id) in html for d in report.decisions)


def test_a_dry_run_writes_its_report_as_it_goes_and_keeps_no_decisions(
    simulator: Simulator, pipeline: Pipeline, tx_policy: Policy
) -> None:
    stream = io.StringIO()
    context = ReportContext.for_policy(
        tx_policy, title="Dry run", mode="dry run", program_id=None, evaluated_at=NOW
    )
    page = HtmlWriter(stream, tx_policy, NOW, context)

    report = pipeline.run(tx_policy, on_evaluated=page, on_decision=discard)  # as `run --format html`
    page.close()

    assert report.decisions == []  # the run kept no list: the page took each decision as it came
    assert page.tally.count == TX_COUNT == sum(report.action_counts.values())
    html = stream.getvalue()
    assert all(e["id"] in html for e in simulator.enrollments(TX_BATTERY_PROGRAM))


def test_a_failed_run_leaves_the_report_file_as_it_was(simulator: Simulator, tmp_path: Path) -> None:
    env = cli_env(simulator, f"sqlite:///{tmp_path / 'cli.db'}")
    out = tmp_path / "report.html"
    out.write_text("the last good report", encoding="utf-8")
    simulator.script("GET", "^/v1/enrollments$", "truncate")  # the list breaks off after some enrollments

    result = run_cli(
        ["run", "--rules", str(TX_RULES), "--format", "html", "--out", str(out), "--now", NOW_ARG], env=env
    )

    assert result.code == 6, result.stderr
    assert out.read_text(encoding="utf-8") == "the last good report"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith("report")] == ["report.html"]


def test_cli_dry_run_writes_the_html_report_with_the_run_and_sends_nothing(
    simulator: Simulator, tmp_path: Path
) -> None:
    env = cli_env(simulator, f"sqlite:///{tmp_path / 'cli.db'}")
    out = tmp_path / "report.html"
    rules = str(TX_RULES.relative_to(REPO_ROOT))

    result = run_cli(
        ["run", "--rules", rules, "--format", "html", "--out", str(out), "--now", NOW_ARG], env=env
    )

    assert result.code == 0, result.stderr
    assert result.stdout == ""
    assert f"wrote {out}" in result.stderr
    assert writes(simulator) == 0
    html = out.read_text(encoding="utf-8")
    assert "<title>Dry-run preview (run 1)</title>" in html
    assert "nothing was sent (dry run)" in html  # the run's footer, as notes under the header
    assert all(e["id"] in html for e in simulator.enrollments(TX_BATTERY_PROGRAM))
    assert "2026-11-25 00:00:00 UTC" in html


def test_cli_offline_html_goes_to_stdout_and_a_bad_out_path_is_a_clean_error(tmp_path: Path) -> None:
    rules = str(TX_RULES.relative_to(REPO_ROOT))
    sample = "rules/samples/tx_residential_battery.enrollments.json"
    base = ["run", "--rules", rules, "--input", sample, "--format", "html", "--now", NOW_ARG]

    result = run_cli(base)
    assert result.code == 0, result.stderr
    assert result.stdout.startswith("<!DOCTYPE html>")
    assert "<title>Offline preview</title>" in result.stdout

    bad = run_cli([*base, "--out", str(tmp_path / "missing" / "r.html")])
    assert bad.code == 2
    assert "cannot write the output" in bad.stderr
    assert "Traceback" not in bad.stderr
