"""The HTML reports of ``diff`` and ``backtest``: the numbers are the reports' own (``to_dict``),
rows open into the explanations, personal data is withheld and hostile data stays text, without
a browser and in headless Chromium."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from engine.policy.coverage import RuleHits
from engine.policy.decision import Action, Decision
from engine.policy.document import Policy
from engine.policy.explain import Explainer
from engine.render.comparison_html import FIELD_LABELS, backtest_page, diff_page
from engine.render.decisions_html import WITHHELD, explanation_section
from engine.render.html import BarsCard, Mark, Page, StatCard, TableCard, render_page
from engine.runs.backtest import BacktestReport, Disagreement, RuleAgreement, backtest
from engine.runs.diff import Change, DiffReport, diff_policies

from .conftest import HOSTILE, PAGE_SCRIPTS, hostile_enrollments, sample_enrollments, script_blocks

PolicyFrom = Callable[..., Policy]
SOURCE = "rules/samples/tx_residential_battery.enrollments.json"
PERSONAL = ("Alice", "alice@example.com", "1 Secret Rd")


def edited(policy_from_text: PolicyFrom, policy: Policy, old: str, new: str) -> Policy:
    assert old in policy.source_text
    return policy_from_text(policy.source_text.replace(old, new), name="edited.yaml")


@pytest.fixture
def raised(policy_from_text: PolicyFrom, tx_policy: Policy) -> Policy:
    """The example policy with a higher capacity bar: some approvals become reviews."""
    return edited(policy_from_text, tx_policy, "10000]}", "15000]}")


def stats(page: Page) -> dict[str, Any]:
    return {card.label: card.value for card in page.cards if isinstance(card, StatCard)}


def bars(page: Page, label: str) -> dict[str, tuple[int, int | None]]:
    card = next(c for c in page.cards if isinstance(c, BarsCard) and c.label.startswith(label))
    return {bar.label: (bar.value, bar.of) for bar in card.bars}


def table_card(page: Page, label: str) -> TableCard:
    return next(c for c in page.cards if isinstance(c, TableCard) and c.label.startswith(label))


def plain(cell: int | str | Mark) -> int | str:
    return cell.value if isinstance(cell, Mark) else cell


def opened(page: Page) -> list[tuple[str, list[tuple[str, list[str]]]]]:
    """Each row's explanation as the page carries it: the summary, then each section's title
    and the rule ids of its steps."""
    assert page.table is not None
    assert page.table.details is not None
    payload = page.table.details.payload()
    strings, steps = payload["strings"], payload["steps"]
    found = []
    for row in page.table.rows:
        assert row.detail is not None
        summary, _, sections = payload["details"][row.detail]
        parts = [(strings[title], [strings[steps[step][0]] for step in ids]) for title, ids, _ in sections]
        found.append((strings[summary], parts))
    return found


def decision(enrollment_id: str, status: str | None, rule_id: str | None, reason: str | None) -> Decision:
    return Decision(enrollment_id, "SUBMITTED", status, reason, rule_id, [], [], [], [], Action.UPDATE)


# --- diff -------------------------------------------------------------------------------------


def test_the_diff_page_shows_the_numbers_of_the_report(
    tx_policy: Policy, raised: Policy, now: datetime
) -> None:
    enrollments = sample_enrollments()
    report = diff_policies(tx_policy, raised, enrollments, now)
    summary = report.to_dict()["summary"]
    assert report.changed > 0
    page = diff_page(report, tx_policy, raised, enrollments, now, source=SOURCE)

    numbers = stats(page)
    assert (numbers["Enrollments"], numbers["Changed"], numbers["Unchanged"]) == (
        summary["enrollments"], summary["changed"], summary["unchanged"],
    )  # fmt: skip
    assert numbers["Status changes"] == sum(t["count"] for t in summary["transitions"])
    assert numbers["Rules never matched"] == sum(
        h["kind"] == "rule" and h["hits"] == 0 for h in summary["rule_hits"]["new"]
    )
    transitions = {
        f"{t['from'] or 'none'} -> {t['to'] or 'none'}": (t["count"], None) for t in summary["transitions"]
    }
    assert bars(page, "Transitions") == transitions
    changes = report.to_dict()["changes"]
    fields = Counter(FIELD_LABELS[name] for change in changes for name in change["changed"])
    assert bars(page, "What changed") == {label: (n, None) for label, n in fields.items()}
    hits = table_card(page, "Rule hits")
    base = {h["id"]: h["hits"] for h in summary["rule_hits"]["base"]}
    new = {h["id"]: h["hits"] for h in summary["rule_hits"]["new"]}
    assert {plain(row[0]): (plain(row[2]), plain(row[3])) for row in hits.rows} == {
        rule: (base[rule], new[rule]) for rule in new
    }
    facts = dict(page.facts)
    assert (facts["Base"], facts["New"], facts["Input"]) == (summary["base"], summary["new"], SOURCE)
    assert tx_policy.content_hash[:12] in facts["Base"]
    assert raised.content_hash[:12] in facts["New"]

    assert page.table is not None
    rows = page.table.rows
    assert [row.cells["enrollment_id"] for row in rows] == [c["enrollment_id"] for c in changes]
    for row, change in zip(rows, changes, strict=True):
        assert row.cells["base_status"] == (change["base"]["status"] or "none")
        assert row.cells["new_status"] == (change["new"]["status"] or "none")
        assert row.cells["changed"] == ", ".join(FIELD_LABELS[name] for name in change["changed"])
        base_reason, new_reason = change["base"]["reason"], change["new"]["reason"]
        base_rule, new_rule = change["base"]["rule_id"], change["new"]["rule_id"]
        # A long reason shows the new one first (the start of a cell is what is seen).
        if "reason" in change["changed"]:
            assert row.cells["reason"] == f"\u201c{new_reason}\u201d (was \u201c{base_reason}\u201d)"
        else:
            assert row.cells["reason"] == new_reason
        assert row.cells["rule"] == (f"{base_rule} \u2192 {new_rule}" if base_rule != new_rule else new_rule)
        assert row.detail is not None


def test_a_changed_row_opens_into_both_explanations(tx_policy: Policy, raised: Policy, now: datetime) -> None:
    enrollments = sample_enrollments()
    report = diff_policies(tx_policy, raised, enrollments, now)
    page = diff_page(report, tx_policy, raised, enrollments, now, source=SOURCE)
    by_id = {raw["id"]: raw for raw in enrollments}
    for (summary, sections), change in zip(opened(page), report.changes, strict=True):
        assert summary.startswith("What changed: ")
        assert [title for title, _ in sections] == ["Base policy", "New policy"]
        for (_, rules), policy in zip(sections, (tx_policy, raised), strict=True):
            expected = explanation_section(Explainer(policy, now).explain(by_id[change.enrollment_id]))
            assert rules == [step.rule_id for step in expected.steps]


def test_an_enrollment_whose_id_repeats_gets_no_explanation(
    tx_policy: Policy, raised: Policy, now: datetime
) -> None:
    enrollments = sample_enrollments()
    report = diff_policies(tx_policy, raised, enrollments, now)
    twin = report.changes[0].enrollment_id
    copies = [*enrollments, {"id": twin, "status": "ACTIVE"}]
    page = diff_page(report, tx_policy, raised, copies, now, source=SOURCE)
    assert page.table is not None
    assert [row.detail is None for row in page.table.rows] == [
        c.enrollment_id == twin for c in report.changes
    ]


def hostile_diff(tx_policy: Policy, policy_from_text: PolicyFrom, now: datetime) -> tuple[str, DiffReport]:
    """Every hostile enrollment is rejected out of territory by both, with a reason quoting its
    state code that the edit words differently."""
    new = edited(policy_from_text, tx_policy, "outside the service territory", "not in Texas")
    enrollments = hostile_enrollments()
    report = diff_policies(tx_policy, new, enrollments, now)
    return render_page(diff_page(report, tx_policy, new, enrollments, now, source=SOURCE)), report


def test_hostile_strings_in_a_diff_never_become_markup(
    tx_policy: Policy, policy_from_text: PolicyFrom, now: datetime
) -> None:
    html, report = hostile_diff(tx_policy, policy_from_text, now)
    assert report.changed == len(HOSTILE)
    assert any("</script>" in (c.new.reason or "") for c in report.changes)
    assert script_blocks(html) == PAGE_SCRIPTS
    assert "<img" not in html
    for payload in HOSTILE:
        assert payload not in html
    assert "\\u003c/script\\u003e" in html
    # Rule ids, hit labels and statuses straight into the page (a policy file cannot carry them).
    change = Change(HOSTILE[0], decision("x", HOSTILE[1], HOSTILE[2], HOSTILE[3]),
                    decision("x", None, HOSTILE[4], HOSTILE[0]), ["status", "rule_id", "reason"])  # fmt: skip
    forged = DiffReport(
        HOSTILE[3], HOSTILE[4], 1, [change], Counter({(HOSTILE[1], None): 1}),
        [RuleHits(HOSTILE[2], "rule", "f.yaml", 1, 1)], [RuleHits(HOSTILE[4], "rule", "f.yaml", 1, 0)],
    )  # fmt: skip
    html = render_page(diff_page(forged, tx_policy, tx_policy, [], now, source=HOSTILE[1]))
    assert script_blocks(html) == PAGE_SCRIPTS[:3]  # no explanations: no enrollment given
    for payload in HOSTILE:
        assert payload not in html
    assert "&lt;img src=x onerror=" in html  # the header, the bars and the hits table: escaped text


def test_a_diff_never_shows_personal_data(
    tx_policy: Policy, policy_from_text: PolicyFrom, now: datetime
) -> None:
    new = edited(
        policy_from_text, tx_policy, "Site is in {site.state_code}, outside the service territory",
        "Call {site.first_name} at {site.email}, {site.street_address}",
    )  # fmt: skip
    enrollments = hostile_enrollments()
    report = diff_policies(tx_policy, new, enrollments, now)
    assert "Alice" in (report.changes[0].new.reason or "")  # what a run would send
    html = render_page(diff_page(report, tx_policy, new, enrollments, now, source=SOURCE))
    for secret in PERSONAL:
        assert secret not in html
    assert WITHHELD in html


# --- backtest ---------------------------------------------------------------------------------


def test_the_backtest_page_shows_the_numbers_of_the_report(tx_policy: Policy, now: datetime) -> None:
    enrollments = sample_enrollments()
    report = backtest(tx_policy, enrollments, now)
    summary = report.to_dict()["summary"]
    assert 0 < summary["agree"] < summary["evaluated"]
    page = backtest_page(report, tx_policy, enrollments, now, source=SOURCE, min_agreement=0.8)

    numbers = stats(page)
    assert (numbers["Evaluated"], numbers["Agree"]) == (summary["evaluated"], summary["agree"])
    assert numbers["Agreement"] == f"{100 * summary['agreement']:.1f}%"
    agreement = next(c for c in page.cards if isinstance(c, StatCard) and c.label == "Agreement")
    assert agreement.tone == ("bad" if summary["agreement"] < 0.8 else "good")
    assert bars(page, "Agreement per person") == {
        human: (row["agree"], row["evaluated"]) for human, row in summary["by_status"].items()
    }
    assert bars(page, "Status rules") == {r["rule_id"]: (r["agree"], r["matched"]) for r in summary["rules"]}
    confusion = table_card(page, "Confusion")
    columns = confusion.columns[1:-1]
    assert {
        plain(row[0]): {column: plain(cell) for column, cell in zip(columns, row[1:-1], strict=True)}
        for row in confusion.rows
    } == {human: {c: counts.get(c, 0) for c in columns} for human, counts in summary["confusion"].items()}
    assert [plain(row[-1]) for row in confusion.rows] == [
        row["evaluated"] for row in summary["by_status"].values()
    ]
    facts = dict(page.facts)
    assert facts["Decided statuses"] == ", ".join(summary["decided"])
    assert facts["Evaluated as"] == summary["as_status"]

    assert page.table is not None
    disagreements = report.to_dict()["disagreements"]
    assert [
        {key: row.cells[key] for key in ("enrollment_id", "human_status", "status", "rule_id", "reason")}
        for row in page.table.rows
    ] == disagreements
    assert all(row.detail is not None for row in page.table.rows)


def test_a_disagreement_opens_into_the_explanation_backtest_evaluated(
    tx_policy: Policy, now: datetime
) -> None:
    enrollments = sample_enrollments()
    report = backtest(tx_policy, enrollments, now, as_status="PENDING")
    page = backtest_page(report, tx_policy, enrollments, now, source=SOURCE)
    by_id = {raw["id"]: raw for raw in enrollments}
    for (summary, [(_, rules)]), item in zip(opened(page), report.disagreements, strict=True):
        assert summary.startswith(f"The person decided {item.human_status}; the policy ")
        assert "evaluated as PENDING" in summary
        expected = Explainer(tx_policy, now).explain({**by_id[item.enrollment_id], "status": "PENDING"})
        assert expected.decision.rule_id == item.rule_id
        assert rules == [rule.rule_id for rule in expected.rules]


def decided(records: list[dict[str, Any]], status: str = "ACTIVE") -> list[dict[str, Any]]:
    """The records as if a person had decided them."""
    return [{**record, "status": status} for record in records]


def test_hostile_strings_in_a_backtest_never_become_markup(tx_policy: Policy, now: datetime) -> None:
    enrollments = decided(hostile_enrollments())
    report = backtest(tx_policy, enrollments, now)
    assert len(report.disagreements) == len(HOSTILE)  # a person approved what the policy rejects
    html = render_page(backtest_page(report, tx_policy, enrollments, now, source=SOURCE))
    assert script_blocks(html) == PAGE_SCRIPTS
    assert "<img" not in html
    for payload in HOSTILE:
        assert payload not in html
    assert "\\u003c/script\\u003e" in html
    forged = BacktestReport(
        HOSTILE[0], "SUBMITTED", ("ACTIVE",), 2, 1, 0,
        {"ACTIVE": Counter({"ACTIVE": 1, "REJECTED": 1})},
        [RuleAgreement(HOSTILE[2], 1, 0)],
        [Disagreement(HOSTILE[1], "ACTIVE", "REJECTED", HOSTILE[2], HOSTILE[3])],
    )  # fmt: skip
    html = render_page(backtest_page(forged, tx_policy, [], now, source=HOSTILE[4], explain_hint=HOSTILE[1]))
    assert script_blocks(html) == PAGE_SCRIPTS[:3]
    for payload in HOSTILE:
        assert payload not in html
    assert "&lt;img src=x onerror=" in html


def test_a_backtest_never_shows_personal_data(policy_from_text: PolicyFrom, now: datetime) -> None:
    policy = policy_from_text(
        """
program_id: prog-tx-residential-battery
applies_to: [SUBMITTED]
rules:
  - id: named
    when: {"!!": [{"var": "site.email"}]}
    status: PENDING
    reason: "Call {site.first_name} at {site.email}, {site.street_address}"
"""
    )
    enrollments = decided(hostile_enrollments())
    report = backtest(policy, enrollments, now)
    assert "Alice" in (report.disagreements[0].reason or "")
    html = render_page(backtest_page(report, policy, enrollments, now, source=SOURCE))
    for secret in PERSONAL:
        assert secret not in html
    assert WITHHELD in html


# --- in a browser -----------------------------------------------------------------------------


def card_value(page: Any, label: str) -> str:
    card = page.locator(".card.stat", has=page.locator(f"h2:text-is('{label}')"))
    return str(card.locator(".stat-value").inner_text())


def shown(page: Any) -> int:
    return int(page.evaluate("window.reportTable.shown()"))


def rendered_ids(page: Any) -> list[str]:
    script = "rows => rows.map(r => r.children[0].textContent.slice(1))"
    return list(page.eval_on_selector_all("#rows .row", script))


def write(tmp_path: Path, page: Page, name: str) -> Path:
    path = tmp_path / name
    path.write_text(render_page(page), encoding="utf-8")
    return path


@pytest.mark.browser
def test_the_diff_page_in_a_browser_searches_filters_expands(
    tx_policy: Policy, raised: Policy, now: datetime, tmp_path: Path, open_report: Any
) -> None:
    enrollments = sample_enrollments()
    report = diff_policies(tx_policy, raised, enrollments, now)
    page = open_report(
        write(tmp_path, diff_page(report, tx_policy, raised, enrollments, now, source=SOURCE), "d.html")
    )
    summary = report.to_dict()["summary"]
    assert card_value(page, "Enrollments") == str(summary["enrollments"])
    assert card_value(page, "Changed") == str(summary["changed"])
    assert card_value(page, "Unchanged") == str(summary["unchanged"])
    assert page.locator("#count").inner_text() == f"{report.changed} changed enrollments"
    ids = [c.enrollment_id for c in report.changes]
    assert rendered_ids(page) == ids

    target = ids[1]
    assert target is not None
    page.fill("#search", target[:13])
    assert rendered_ids(page) == [target]
    page.fill("#search", "")

    # "What changed" lists several fields per row: the filter keeps the rows that list one.
    grouped = [c.enrollment_id for c in report.changes if "group_ids" in c.changed]
    assert 0 < len(grouped) < len(ids)
    page.select_option("select[data-col=changed]", label=f"groups ({len(grouped)})")
    assert rendered_ids(page) == grouped
    page.click("#reset")
    page.click("button.bar-label[data-filter-value='groups']")  # the bar sets the same filter
    assert rendered_ids(page) == grouped
    page.click("#reset")
    transition = summary["transitions"][0]
    page.click(f"button.bar-label[data-filter-value='{transition['from']} -> {transition['to']}']")
    assert shown(page) == transition["count"]
    page.click("#reset")

    row = page.locator(".row[data-row='0']")
    row.click()
    assert row.get_attribute("aria-expanded") == "true"
    sections = page.locator(".detail .sections.side-by-side .section")
    assert sections.count() == 2
    assert [sections.nth(i).locator("h3").inner_text().lower() for i in range(2)] == [
        "base policy",
        "new policy",
    ]
    base_approve = sections.nth(0).locator(".step", has=page.locator(".step-id", has_text="approve")).first
    new_approve = sections.nth(1).locator(".step", has=page.locator(".step-id", has_text="approve")).first
    assert base_approve.locator(".badge").inner_text() == "match"
    assert new_approve.locator(".badge").inner_text() == "no match"
    assert "15000" in new_approve.inner_text()
    assert "decided by the default" in sections.nth(1).locator(".detail-note").inner_text()

    page.click(".grid-head button:has-text('Enrollment')")
    assert rendered_ids(page) == sorted(i or "" for i in ids)


@pytest.mark.browser
def test_the_diff_page_runs_no_hostile_string(
    tx_policy: Policy, policy_from_text: PolicyFrom, now: datetime, tmp_path: Path, open_report: Any
) -> None:
    html, report = hostile_diff(tx_policy, policy_from_text, now)
    path = tmp_path / "hostile-diff.html"
    path.write_text(html, encoding="utf-8")
    page = open_report(path)  # fails the test on any dialog, script error or request
    assert page.evaluate("typeof window.__pwned") == "undefined"
    assert page.evaluate("document.scripts.length") == 4
    assert page.evaluate("document.images.length") == 0
    assert rendered_ids(page) == [c.enrollment_id for c in report.changes]
    page.fill("#search", "</script>")
    assert shown(page) == sum(
        "</script>" in (c.enrollment_id or "") + (c.new.reason or "") for c in report.changes
    )
    page.fill("#search", "")
    for index, payload in enumerate(HOSTILE):
        page.locator(f".row[data-row='{index}']").click()
        assert payload in page.locator(".detail").inner_text()  # the state code both rules read, as text
        assert page.locator(".detail img, .detail script").count() == 0
    assert page.evaluate("typeof window.__pwned") == "undefined"


@pytest.mark.browser
def test_the_backtest_page_in_a_browser_filters_expands_and_runs_nothing(
    tx_policy: Policy, now: datetime, tmp_path: Path, open_report: Any
) -> None:
    enrollments = sample_enrollments() + decided(hostile_enrollments())
    report = backtest(tx_policy, enrollments, now)
    page = open_report(
        write(tmp_path, backtest_page(report, tx_policy, enrollments, now, source=SOURCE), "b.html")
    )
    summary = report.to_dict()["summary"]
    assert card_value(page, "Evaluated") == str(summary["evaluated"])
    assert card_value(page, "Agree") == str(summary["agree"])
    assert card_value(page, "Agreement") == f"{100 * summary['agreement']:.1f}%"
    cells = page.eval_on_selector_all(
        ".card.table tbody tr", "rows => rows.map(r => Array.from(r.children, c => c.textContent.trim()))"
    )
    assert {row[0]: int(row[-1]) for row in cells} == {
        h: r["evaluated"] for h, r in summary["by_status"].items()
    }
    assert page.locator("#count").inner_text() == f"{len(report.disagreements)} disagreements"
    agreement_bars = page.eval_on_selector_all(
        '.card.bars:has(h2:text-is("Agreement per person\'s status")) li',
        "items => items.map(li => [li.querySelector('.bar-label').textContent,"
        " li.querySelector('.bar-value').textContent, li.querySelector('.bar-fill').style.width])",
    )
    assert agreement_bars == [
        [human, f"{row['agree']} of {row['evaluated']} \u00b7 {100 * row['agreement']:.1f}%",
         f"{round(100 * row['agreement'], 1):g}%"]
        for human, row in summary["by_status"].items()
    ]  # fmt: skip
    assert page.evaluate("typeof window.__pwned") == "undefined"
    assert page.evaluate("document.scripts.length") == 4

    page.fill("#search", "</script>")
    assert (
        shown(page)
        == sum("</script>" in (d.enrollment_id or "") + (d.reason or "") for d in report.disagreements)
        > 0
    )
    page.fill("#search", "")
    wanted = [
        d.enrollment_id for d in report.disagreements if d.human_status == "ACTIVE" and d.status == "PENDING"
    ]
    page.click("button.cell-filter[data-filter-value='ACTIVE -> PENDING']")  # a cell of the confusion matrix
    assert rendered_ids(page) == wanted
    page.click("#reset")
    rejected = [d.enrollment_id for d in report.disagreements if d.status == "REJECTED"]
    page.select_option("select[data-col=status]", label=f"REJECTED ({len(rejected)})")
    assert rendered_ids(page) == rejected

    hostile = next(d for d in report.disagreements if (d.enrollment_id or "").startswith(HOSTILE[2]))
    page.click("#reset")
    page.locator(f".row[data-row='{report.disagreements.index(hostile)}']").click()
    detail = page.locator(".detail")
    assert "The person decided ACTIVE; the policy decides REJECTED by rule reject-out-of-territory" in (
        detail.locator(".summary").inner_text()
    )
    assert HOSTILE[2] in detail.inner_text()
    assert page.locator(".detail img, .detail script").count() == 0
    assert page.evaluate("typeof window.__pwned") == "undefined"
