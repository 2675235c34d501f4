"""The HTML report in a real headless Chromium: numbers, search, filters, sorting, rows that
expand into their explanation, windowing, and hostile data that stays text."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from engine.policy.decision import Action, Decision
from engine.policy.document import Policy
from engine.render.decisions_html import decision_summary
from engine.sandbox.generator import TX_BATTERY_PROGRAM, generate_enrollments

from .conftest import HOSTILE, hostile_enrollments, sample_enrollments

pytestmark = pytest.mark.browser

Writer = Callable[..., tuple[Path, list[Decision]]]


def shown(page: Any) -> int:
    return int(page.evaluate("window.reportTable.shown()"))


def rendered_ids(page: Any) -> list[str]:
    return list(
        page.eval_on_selector_all("#rows .row", "rows => rows.map(r => r.children[0].textContent.slice(1))")
    )


def card_value(page: Any, label: str) -> str:
    card = page.locator(".card.stat", has=page.locator("h2", has_text=label))
    return str(card.locator(".stat-value").inner_text())


def test_summary_numbers_match_the_decisions(
    tx_policy: Policy, write_report: Writer, open_report: Any
) -> None:
    path, decisions = write_report(tx_policy, sample_enrollments())
    page = open_report(path)
    assert card_value(page, "Enrollments") == str(len(decisions))
    assert card_value(page, "Changes") == str(sum(d.action is Action.UPDATE for d in decisions))
    assert card_value(page, "Errors") == str(sum(d.action is Action.ERROR for d in decisions))
    bars = page.eval_on_selector_all(
        ".card.bars .bar-list li",
        "items => items.map(li => [li.querySelector('.bar-label').textContent,"
        " li.querySelector('.bar-value').textContent])",
    )
    transitions = Counter(d.transition for d in decisions)
    rule_hits = Counter(d.rule_id for d in decisions if d.rule_id)
    assert {label: int(value) for label, value in bars} == {**transitions, **rule_hits}
    assert page.locator("#count").inner_text() == f"{len(decisions)} enrollments"
    assert rendered_ids(page)[:3] == [d.enrollment_id for d in decisions[:3]]


def test_search_and_filters_narrow_the_table(
    tx_policy: Policy, write_report: Writer, open_report: Any
) -> None:
    path, decisions = write_report(tx_policy, sample_enrollments())
    page = open_report(path)
    target = decisions[5].enrollment_id
    assert target is not None
    page.fill("#search", target[:13])
    assert shown(page) == 1
    assert rendered_ids(page) == [target]

    page.fill("#search", "meets program")  # words anywhere in a row, any case
    approved = [d for d in decisions if "Meets program requirements" in (d.reason or "")]
    assert shown(page) == len(approved) > 0

    page.fill("#search", "")
    page.select_option(
        "select[data-col=action]", label=f"update ({sum(d.action is Action.UPDATE for d in decisions)})"
    )
    updates = [d.enrollment_id for d in decisions if d.action is Action.UPDATE]
    assert shown(page) == len(updates)
    assert rendered_ids(page) == updates
    assert page.locator("#count").inner_text() == f"Showing {len(updates)} of {len(decisions)} enrollments"

    rejected = [d for d in decisions if d.action is Action.UPDATE and d.status == "REJECTED"]
    page.select_option("select[data-col=status]", label=f"REJECTED ({len(rejected)})")
    assert rendered_ids(page) == [d.enrollment_id for d in rejected]

    page.click("#reset")
    assert shown(page) == len(decisions)


def test_a_bar_of_the_chart_filters_by_its_transition(
    tx_policy: Policy, write_report: Writer, open_report: Any
) -> None:
    path, decisions = write_report(tx_policy, sample_enrollments())
    page = open_report(path)
    page.click("button.bar-label[data-filter-value='SUBMITTED -> ACTIVE']")
    expected = [d.enrollment_id for d in decisions if d.transition == "SUBMITTED -> ACTIVE"]
    assert rendered_ids(page) == expected
    page.click("button.bar-label[data-filter-value='approve']")  # and a rule: both apply
    assert shown(page) == sum(
        d.transition == "SUBMITTED -> ACTIVE" and d.rule_id == "approve" for d in decisions
    )


def test_a_row_expands_into_its_explanation(
    tx_policy: Policy, write_report: Writer, open_report: Any
) -> None:
    path, decisions = write_report(tx_policy, sample_enrollments())
    page = open_report(path)
    decision = next(d for d in decisions if d.rule_id == "approve" and d.groups_added)
    row = page.locator(f".row[data-row='{decisions.index(decision)}']")
    row.click()
    assert row.get_attribute("aria-expanded") == "true"
    detail = page.locator(".detail")
    steps = detail.locator(".step")
    rules = [line.split("\n")[1] for line in steps.locator(".step-head").all_inner_texts()]
    evaluated = [r.id for r in tx_policy.rules]
    assert rules == evaluated[: evaluated.index("approve") + 1] + [g.id for g in tx_policy.groups]
    approve = steps.nth(rules.index("approve"))
    assert "match" in approve.locator(".badge").inner_text()
    assert "totals.battery_capacity_wh" in approve.locator(".reads").inner_text()
    assert "decided by" in approve.locator(".decided").inner_text()
    assert f"+{decision.groups_added[0]}" in detail.locator(".summary").inner_text()
    # The rows below moved down to make room; clicking again folds it away.
    below = page.locator(f".row[data-row='{decisions.index(decision) + 1}']")
    assert below.bounding_box()["y"] >= detail.bounding_box()["y"] + detail.bounding_box()["height"] - 1
    row.click()
    assert page.locator(".detail").count() == 0


@pytest.mark.parametrize("generated", [0, 2500])  # the sample, or a page of three chunks of rows
def test_columns_sort_both_ways(
    tx_policy: Policy, write_report: Writer, open_report: Any, now: datetime, generated: int
) -> None:
    records = (
        list(generate_enrollments(TX_BATTERY_PROGRAM, generated, seed=4, now=now)) or sample_enrollments()
    )
    path, decisions = write_report(tx_policy, records)
    page = open_report(path)
    ids = sorted(d.enrollment_id or "" for d in decisions)
    page.click(".grid-head button:has-text('Enrollment')")
    assert rendered_ids(page)[:5] == ids[:5]
    page.click(".grid-head button:has-text('Enrollment')")
    assert rendered_ids(page)[:5] == ids[::-1][:5]
    assert page.locator(".grid-head [aria-sort=descending]").count() == 1


def test_only_the_rows_in_view_are_in_the_page(
    tx_policy: Policy, write_report: Writer, open_report: Any, now: datetime
) -> None:
    records = list(generate_enrollments(TX_BATTERY_PROGRAM, 3000, seed=3, now=now))
    path, decisions = write_report(tx_policy, records)
    page = open_report(path)
    assert page.locator("#count").inner_text() == "3,000 enrollments"
    assert page.locator("#rows .row").count() < 80
    page.eval_on_selector("#viewport", "v => { v.scrollTop = v.scrollHeight; }")
    # wait_for_selector, not wait_for_function: the page's CSP refuses the eval its polling needs
    page.wait_for_selector(f"#rows .row[data-row='{len(decisions) - 1}']", state="attached")
    assert rendered_ids(page)[-1] == decisions[-1].enrollment_id
    assert page.locator("#rows .row").count() < 80


def test_a_page_of_many_chunks_filters_and_opens_rows_across_them(
    tx_policy: Policy, write_report: Writer, open_report: Any, now: datetime
) -> None:
    records = list(generate_enrollments(TX_BATTERY_PROGRAM, 2500, seed=4, now=now))
    path, decisions = write_report(tx_policy, records)  # 3 chunks of rows, 3 or more of explanations
    page = open_report(path)
    updates = sum(d.action is Action.UPDATE for d in decisions)
    page.select_option("select[data-col=action]", label=f"update ({updates:,})")
    assert shown(page) == updates
    page.click("#reset")
    last = decisions[-1]
    page.fill("#search", last.enrollment_id or "")
    page.locator(f".row[data-row='{len(decisions) - 1}']").click()  # its explanation is in the last chunk
    assert page.locator(".detail .summary").inner_text() == decision_summary(last)


def test_the_header_and_cards_written_last_are_shown_and_read_first(
    tx_policy: Policy, write_report: Writer, open_report: Any, browser: Any
) -> None:
    path, _ = write_report(tx_policy, sample_enrollments())
    page = open_report(path)
    assert page.title() == "Offline preview"
    order = "Array.from(document.body.children).filter(e => e.matches('header, main')).map(e => e.tagName)"
    assert page.evaluate(order) == ["HEADER", "MAIN"]  # the script moved them first: tab order
    sections = "Array.from(document.querySelectorAll('main > section')).map(e => e.className)"
    assert page.evaluate(sections) == ["cards", "table-section"]
    # Without the script, the stylesheet alone shows them on top.
    context = browser.new_context(
        viewport={"width": 1400, "height": 900}, java_script_enabled=False, offline=True
    )
    try:
        bare = context.new_page()
        bare.goto(path.as_uri())
        tops = [
            bare.locator(selector).bounding_box()["y"]
            for selector in ("header.top", ".cards", "#table-section")
        ]
        assert tops == sorted(tops)
        assert bare.title() == "Offline preview"
    finally:
        context.close()


def test_hostile_data_renders_as_text_and_runs_nothing(
    tx_policy: Policy, write_report: Writer, open_report: Any
) -> None:
    path, decisions = write_report(tx_policy, hostile_enrollments())
    page = open_report(path)  # the fixture fails the test on any dialog, script error or request
    assert page.evaluate("typeof window.__pwned") == "undefined"
    assert page.evaluate("document.scripts.length") == 4
    assert page.evaluate("document.images.length") == 0
    assert rendered_ids(page) == [d.enrollment_id for d in decisions]
    assert decisions[0].enrollment_id == f"{HOSTILE[0]} #0"
    reasons = page.eval_on_selector_all("#rows .row", "rows => rows.map(r => r.children[6].textContent)")
    assert reasons == [d.reason or d.error or "\u2014" for d in decisions]

    page.fill("#search", "</script>")
    assert shown(page) == sum("</script>" in (d.enrollment_id or "") + (d.reason or "") for d in decisions)
    page.fill("#search", "")
    for index in range(len(decisions)):
        page.locator(f".row[data-row='{index}']").click()
        detail = page.locator(".detail").inner_text()
        assert HOSTILE[index] in detail  # the values it read, as text
        assert page.locator(".detail img, .detail script").count() == 0
    assert page.evaluate("typeof window.__pwned") == "undefined"


def test_a_generic_page_sorts_numbers_and_text_empty_last(tmp_path: Path, open_report: Any) -> None:
    from engine.render.html import Column, Page, Row, Table, render_page

    values = [("b", 10), ("A", None), ("c", 2.5), (None, -1), ("a", 7)]
    columns = [Column("name", "Name"), Column("size", "Size", sort="number")]
    rows = [Row({"name": name, "size": size}) for name, size in values]
    path = tmp_path / "generic.html"
    path.write_text(render_page(Page("Generic", table=Table(columns, rows, noun="things"))), encoding="utf-8")
    page = open_report(path)

    def column(index: int) -> list[str]:
        script = f"rows => rows.map(r => r.children[{index}].textContent.replace(/^[\\u25B8\\u25BE]/, ''))"
        return list(page.eval_on_selector_all("#rows .row", script))

    page.click(".grid-head button:has-text('Size')")
    assert column(1) == ["-1", "2.5", "7", "10", "\u2014"]
    page.click(".grid-head button:has-text('Size')")
    assert column(1) == ["10", "7", "2.5", "-1", "\u2014"]
    page.click(".grid-head button:has-text('Name')")
    assert column(0) == ["A", "a", "b", "c", "\u2014"]  # case-insensitive, ties by code point
    page.click(".grid-head button:has-text('Name')")
    assert column(0) == ["c", "b", "a", "A", "\u2014"]
