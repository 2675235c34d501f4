"""The HTML report of a run against the simulator: every decision explained as the list
streams in, with the same explanation ``explain`` gives for the enrollment."""

from __future__ import annotations

from typing import Any

from engine.policy.decision import Decision
from engine.policy.document import Policy
from engine.policy.explain import explain
from engine.render.decisions_html import ExplainedDecisions, ReportContext, explanation_detail
from engine.render.html import DetailTable, render_page
from engine.sandbox.generator import TX_BATTERY_PROGRAM
from engine.sandbox.simulator import Simulator

from .conftest import NOW, TX_COUNT, Pipeline


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
