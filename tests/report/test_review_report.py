"""The review queue's HTML report (``autoapprove review --format html``): numbers, filters, rows
that expand into what the rules read when the change was decided, personal data withheld and
hostile data kept as text, without a browser and in headless Chromium."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from engine.policy.decision import Action, Decision
from engine.policy.document import Policy
from engine.policy.evaluator import Evaluator
from engine.render.decisions_html import WITHHELD
from engine.render.html import BarsCard, StatCard, render_page
from engine.render.review_html import review_page
from engine.runs.records import ReviewRecord
from engine.runs.states import ChangeState

from .conftest import HOSTILE, PAGE_SCRIPTS, hostile_enrollments, sample_enrollments, script_blocks

REVIEWED = "review:\n  require_approval: [REJECTED]\nlimits:"
VERSION_ID = 7


def queued(policy: Policy, enrollments: list[dict[str, Any]], now: datetime) -> list[ReviewRecord]:
    """What a live run would leave waiting: its changes the policy wants a person to confirm."""
    evaluator = Evaluator(policy, now, trace=True)
    decisions = [evaluator.evaluate(raw) for raw in enrollments]
    needed = [d for d in decisions if d.action is Action.UPDATE and policy.requires_approval(d)]
    return [waiting(d, 100 + i, now - timedelta(days=i)) for i, d in enumerate(needed)]


def waiting(decision: Decision, decision_id: int, since: datetime) -> ReviewRecord:
    return ReviewRecord(
        decision_id=decision_id, run_id=3, program_id="prog-tx-residential-battery",
        enrollment_id=decision.enrollment_id or "", current_status=decision.current_status,
        status=decision.status, reason=decision.reason, rule_id=decision.rule_id,
        current_group_ids=decision.current_group_ids, group_ids=decision.group_ids,
        policy_version_id=VERSION_ID, since=since, trace=decision.trace,
        change_state=ChangeState.AWAITING_APPROVAL, body={}, enrollment_updated_at=decision.updated_at,
        facts_fingerprint=decision.facts_fingerprint, policy_hash=None, reviewed_by=None,
        reviewed_at=None, review_note=None, attempts=0,
    )  # fmt: skip


@pytest.fixture
def review_policy(policy_from_text: Callable[[str], Policy], tx_policy: Policy) -> Policy:
    return policy_from_text(tx_policy.source_text.replace("limits:", REVIEWED, 1))


def page_html(changes: Sequence[ReviewRecord], policy: Policy, now: datetime) -> str:
    return render_page(review_page(changes, {VERSION_ID: policy}, generated_at=now))


def test_the_cards_count_the_waiting_changes(review_policy: Policy, now: datetime) -> None:
    changes = queued(review_policy, sample_enrollments(), now)
    assert len(changes) >= 3, "the sample has rejections"
    page = review_page(changes, {VERSION_ID: review_policy}, generated_at=now)
    stats = {card.label: card for card in page.cards if isinstance(card, StatCard)}
    assert stats["Waiting"].value == len(changes)
    oldest = min(c.since for c in changes)
    assert stats["Oldest waits"].value == f"{len(changes) - 1} days"
    assert stats["Oldest waits"].note == f"since {oldest:%Y-%m-%d %H:%M} UTC"
    bars = {
        card.label: {b.label: b.value for b in card.bars} for card in page.cards if isinstance(card, BarsCard)
    }
    assert bars["By change"] == dict(Counter(f"{c.current_status} -> {c.status}" for c in changes))
    assert bars["Rule hits"] == dict(Counter(c.rule_id for c in changes))
    assert dict(page.facts)["Hash"] == review_policy.content_hash[:12]
    assert page.table is not None
    assert [row.cells["id"] for row in page.table.rows] == [c.decision_id for c in changes]


def test_hostile_strings_in_a_waiting_change_never_become_markup(
    review_policy: Policy, now: datetime
) -> None:
    changes = queued(review_policy, hostile_enrollments(), now)
    assert len(changes) == len(HOSTILE), "every hostile enrollment is rejected out of territory"
    assert any("</script>" in (c.reason or "") for c in changes)  # the reason copies the state code
    html = page_html(changes, review_policy, now)
    assert script_blocks(html) == PAGE_SCRIPTS
    assert "<img" not in html
    for payload in HOSTILE:
        assert payload not in html
    assert "\\u003c/script\\u003e" in html


def test_personal_data_is_withheld_and_an_unknown_policy_withholds_the_reason(
    policy_from_text: Callable[[str], Policy], now: datetime
) -> None:
    policy = policy_from_text(
        """
program_id: prog-tx-residential-battery
applies_to: [SUBMITTED]
review: {require_approval: [REJECTED]}
rules:
  - id: named
    when: {"!!": [{"var": "site.email"}]}
    status: REJECTED
    reason: "Call {site.first_name} at {site.email}"
"""
    )
    changes = queued(policy, hostile_enrollments(), now)
    assert "Alice" in (changes[0].reason or "")  # what would be sent
    html = page_html(changes, policy, now)
    for secret in ("Alice", "alice@example.com"):
        assert secret not in html
    assert WITHHELD in html
    # A change whose policy version is not at hand: nobody can say what its reason copies.
    harmless = policy_from_text(policy.source_text.replace("Call {site.first_name} at {site.email}", "no"))
    orphan = [replace(queued(harmless, hostile_enrollments(), now)[0], policy_version_id=99)]
    assert "\u201cno\u201d" not in render_page(review_page(orphan, {}, generated_at=now))


@pytest.mark.browser
def test_the_review_page_in_a_browser_filters_expands_and_runs_nothing(
    review_policy: Policy, now: datetime, tmp_path: Path, open_report: Any
) -> None:
    changes = queued(review_policy, sample_enrollments() + hostile_enrollments(), now)
    path = tmp_path / "review.html"
    path.write_text(page_html(changes, review_policy, now), encoding="utf-8")
    page = open_report(path)  # fails the test on any dialog, script error or request
    count = page.locator(".card.stat", has=page.locator("h2", has_text="Waiting")).locator(".stat-value")
    assert count.inner_text() == str(len(changes))
    assert page.locator("#count").inner_text() == f"{len(changes)} waiting changes"

    hostile = [c for c in changes if "#" in c.enrollment_id]
    page.fill("#search", "</script>")
    assert int(page.evaluate("window.reportTable.shown()")) == sum(
        "</script>" in c.enrollment_id + (c.reason or "") for c in changes
    )
    page.fill("#search", "")
    rule = Counter(c.rule_id for c in changes).most_common(1)[0]
    page.click(f"button.bar-label[data-filter-value='{rule[0]}']")
    assert int(page.evaluate("window.reportTable.shown()")) == rule[1]
    page.click("#reset")

    target = hostile[2]
    row = page.locator(f".row[data-row='{changes.index(target)}']")
    row.click()
    detail = page.locator(".detail")
    text = detail.inner_text()
    assert f"review approve {target.decision_id} --by NAME" in text
    assert HOSTILE[2] in text  # the value the first rule read, as text
    steps = detail.locator(".step-head").all_inner_texts()
    assert [line.split("\n")[1] for line in steps] == [t.rule_id for t in target.trace]
    assert page.locator(".detail img, .detail script").count() == 0
    assert page.evaluate("typeof window.__pwned") == "undefined"

    page.click(".grid-head button:has-text('ID')")
    page.click(".grid-head button:has-text('ID')")
    first = page.eval_on_selector("#rows .row", "row => row.children[0].textContent.slice(1)")
    assert first.strip() == str(max(c.decision_id for c in changes))
