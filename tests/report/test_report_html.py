"""The HTML report without a browser: escaping, personal data, the numbers, the explanations."""

from __future__ import annotations

import json
import re
from collections import Counter
from datetime import datetime
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from engine.policy.decision import Action
from engine.policy.document import Policy
from engine.policy.evaluator import Evaluator
from engine.policy.explain import Explainer, explain
from engine.render.decisions_html import WITHHELD, summary_cards
from engine.render.html import (
    BarsCard,
    Column,
    Detail,
    DetailSection,
    DetailTable,
    Page,
    Row,
    RuleStep,
    StatCard,
    Table,
    render_page,
    script_json,
)

from .conftest import (
    HOSTILE,
    PAGE_SCRIPTS,
    blocks,
    build_report,
    hostile_enrollments,
    sample_enrollments,
    script_blocks,
)

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)


@given(JSON_VALUES)
def test_script_json_round_trips_and_cannot_close_its_block(value: Any) -> None:
    text = str(script_json(value))
    assert json.loads(text) == value
    assert not set(text) & {"<", ">", "&", "\u2028", "\u2029"}


def test_hostile_strings_never_become_markup(tx_policy: Policy, now: datetime) -> None:
    html, decisions = build_report(tx_policy, hostile_enrollments(), now)
    # The page's own blocks only: two of data, one of code; no element a payload would add.
    assert script_blocks(html) == PAGE_SCRIPTS
    assert "<img" not in html
    for payload in HOSTILE:
        assert payload not in html
    assert any("</script>" in (d.reason or "") for d in decisions)  # the policy copied one in
    assert "\\u003c/script\\u003e" in html  # ... and it is in the data, escaped


def test_the_header_and_cards_are_escaped_by_the_template() -> None:
    payload = HOSTILE[1]
    page = Page(title=payload, facts=[(payload, payload)], cards=[StatCard(payload, payload, payload)])
    html = render_page(page)
    assert payload not in html
    assert (
        html.count("&lt;img src=x onerror=&#34;window.__pwned = 2; alert(2)&#34;&gt;") == 7
    )  # title, h1, 2 facts, 3 card texts


def test_only_the_pages_own_script_may_run(tx_policy: Policy, now: datetime) -> None:
    import base64
    import hashlib

    html, _ = build_report(tx_policy, sample_enrollments(), now)
    policy = re.search(r'http-equiv="Content-Security-Policy" content="([^"]+)"', html)
    assert policy is not None
    assert "default-src 'none'" in policy.group(1)
    script = html.rsplit("<script>", 1)[1].split("</script>", 1)[0]
    digest = base64.b64encode(hashlib.sha256(script.encode()).digest()).decode()
    assert f"script-src 'sha256-{digest}'" in policy.group(1)


def test_no_personal_data_even_when_a_policy_reads_or_quotes_it(policy_from_text: Any, now: datetime) -> None:
    policy = policy_from_text(
        """
program_id: p
applies_to: [SUBMITTED]
rules:
  - id: named
    when: {"and": [{"!!": [{"var": "site.first_name"}]}, {"var": "site.email"}]}
    status: PENDING
    reason: "Call {site.first_name} at {site.email}, {site.street_address}"
"""
    )
    html, decisions = build_report(policy, hostile_enrollments(), now)
    assert "Alice" in (decisions[0].reason or "")  # what would be sent
    for secret in ("Alice", "alice@example.com", "1 Secret Rd"):
        assert secret not in html
    assert WITHHELD in html


def test_summary_cards_count_the_decisions(tx_policy: Policy, now: datetime) -> None:
    decisions = list(Evaluator(tx_policy, now).evaluate_many(sample_enrollments()))
    cards = summary_cards(decisions)
    stats = {card.label: card.value for card in cards if isinstance(card, StatCard)}
    assert stats["Enrollments"] == len(decisions)
    assert stats["Changes"] == sum(d.action is Action.UPDATE for d in decisions)
    assert stats["Errors"] == sum(d.action is Action.ERROR for d in decisions)
    bars = {card.label: {b.label: b.value for b in card.bars} for card in cards if isinstance(card, BarsCard)}
    assert bars["By transition"] == dict(Counter(d.transition for d in decisions))
    assert bars["Rule hits"] == dict(Counter(d.rule_id for d in decisions if d.rule_id))


def test_the_explainer_gives_the_same_explanations_as_explain(tx_policy: Policy, now: datetime) -> None:
    explainer = Explainer(tx_policy, now)
    evaluator = Evaluator(tx_policy, now, trace=False)
    for raw in sample_enrollments() + hostile_enrollments():
        expected = explain(tx_policy, raw, now)
        assert explainer.explain(raw, evaluator.evaluate(raw)).rules == expected.rules
        assert explainer.explain(raw).decision == expected.decision


def test_details_are_interned_and_decode_to_what_was_added() -> None:
    details = DetailTable()
    step = RuleStep(
        "approve", "rule", "match", reads=[("totals.cap", "12", False)], decided_by=[("{}", "true")]
    )
    one = Detail("ok", ["warn"], [DetailSection("Now", [step])])
    first, again = details.add(one), details.add(Detail("ok", ["warn"], [DetailSection("Now", [step])]))
    other = details.add(Detail("other", [], [DetailSection(None, [], "skipped")]))
    assert first == again != other
    payload = details.payload()
    strings = payload["strings"]
    summary, notes, sections = payload["details"][first]
    assert (strings[summary], [strings[n] for n in notes]) == ("ok", ["warn"])
    title, steps, _note = sections[0]
    rule, kind, verdict, reads, decided, error = payload["steps"][steps[0]]
    assert (strings[title], strings[rule], strings[kind], verdict, error) == ("Now", "approve", "rule", 1, -1)
    assert [strings[reads[0]], strings[reads[1]], reads[2]] == ["totals.cap", "12", 0]
    assert [strings[i] for i in decided] == ["{}", "true"]


def test_table_cells_are_interned_and_numbers_stay_numbers() -> None:
    columns = [Column("id", "Id"), Column("n", "N", sort="number")]
    rows = [Row({"id": "a", "n": 3}), Row({"id": "a", "n": None}, detail=0), Row({"n": 1.5})]
    html = render_page(Page("t", table=Table(columns, rows)))
    (chunk,) = blocks(html, "report-rows")
    assert chunk["strings"] == [["a"], []]
    assert chunk["cells"] == [0, 3, -1, 0, None, 0, -1, 1.5, -1]
