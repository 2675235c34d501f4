"""The report written as a run goes (``HtmlWriter``, ``PageWriter``): the same page as one built
whole, rows out before the end, and memory that does not grow with the number of rows."""

from __future__ import annotations

import io
import math
import tracemalloc
from datetime import datetime

from engine.policy.document import Policy
from engine.render.html import Column, Detail, DetailSection, PageWriter, RuleStep, StatCard, Table
from engine.sandbox.generator import TX_BATTERY_PROGRAM, generate_enrollments

from .conftest import (
    HOSTILE,
    PAGE_SCRIPTS,
    blocks,
    build_report,
    build_whole_report,
    hostile_enrollments,
    page_data,
    sample_enrollments,
    script_blocks,
)

COLUMNS = [
    Column("id", "Id", mono=True),
    Column("status", "Status", filter=True),
    Column("n", "N", sort="number"),
]


def test_the_written_page_is_byte_for_byte_the_page_built_whole(tx_policy: Policy, now: datetime) -> None:
    for enrollments in (sample_enrollments(), hostile_enrollments()):
        written, _ = build_report(tx_policy, enrollments, now)
        assert written == build_whole_report(tx_policy, enrollments, now)
        assert script_blocks(written) == PAGE_SCRIPTS


def test_in_chunks_and_with_old_explanations_forgotten_it_shows_the_same_page(
    tx_policy: Policy, now: datetime
) -> None:
    records = list(generate_enrollments(TX_BATTERY_PROGRAM, 600, seed=5, now=now))
    written, decisions = build_report(
        tx_policy, records, now, rows_per_chunk=64, details_per_chunk=16, recent=8
    )
    whole = build_whole_report(tx_policy, records, now)

    assert len(blocks(written, "report-rows")) == math.ceil(len(records) / 64)
    assert len(blocks(written, "report-details")) > 2
    assert page_data(written) == page_data(whole)
    assert [row["enrollment_id"] for row, _ in page_data(written)["rows"]] == [
        d.enrollment_id for d in decisions
    ]
    # A detail seen again after the window is stored again: a bigger file, the same page.
    assert len(written) > len(whole)


def test_hostile_strings_stay_data_in_every_chunk(tx_policy: Policy, now: datetime) -> None:
    written, _ = build_report(
        tx_policy, hostile_enrollments() * 3, now, rows_per_chunk=2, details_per_chunk=1
    )
    for payload in HOSTILE:
        assert payload not in written
    assert "<img" not in written
    assert set(script_blocks(written)) == set(PAGE_SCRIPTS)
    assert script_blocks(written).count("<script>") == 1
    assert "\\u003c/script\\u003e" in written


def _detail(i: int) -> Detail:
    step = RuleStep("approve", "rule", "match", reads=[("totals.capacity", str(i), False)])
    return Detail(f"row {i}", [f"note {i}"], [DetailSection(None, [step])])


def test_rows_go_out_in_chunks_before_the_end_and_the_header_last() -> None:
    stream = io.StringIO()
    writer = PageWriter(stream, Table(COLUMNS, (), noun="things"), rows_per_chunk=1000)
    assert stream.getvalue() == ""  # nothing before the first row
    for i in range(2500):
        writer.row({"id": f"id-{i}", "status": "ACTIVE" if i % 3 else "REJECTED", "n": i}, _detail(i))
    so_far = stream.getvalue()
    assert len(blocks(so_far, "report-rows")) == 2  # 2,000 rows written, 500 waiting for their chunk
    assert "<header" not in so_far
    assert "report-details" not in so_far  # the explanations wait in a temporary file

    writer.close(title="Things", facts=[("Count", "2,500")], cards=[StatCard("Things", 2500)])
    html = stream.getvalue()
    assert html.startswith(so_far)
    rows = page_data(html)["rows"]
    assert len(rows) == 2500
    assert rows[-1] == ({"id": "id-2499", "status": "REJECTED", "n": 2499}, _expected_detail(2499))
    assert html.index("report-rows") < html.index('<section class="cards"') < html.index("<header")
    assert html.index("<header") < html.index("<script>") < html.index("report-details")
    assert html.endswith("</body>\n</html>\n")


def _expected_detail(i: int) -> list[object]:
    return [
        f"row {i}",
        [f"note {i}"],
        [[None, [["approve", "rule", 1, ["totals.capacity", str(i), 0], [], None]], None]],
    ]


class _Discard(io.StringIO):
    def write(self, text: str) -> int:
        return len(text)


def test_memory_does_not_grow_with_the_rows() -> None:
    """Every row has a new id and a new explanation: a writer that kept any of them per row
    would grow by hundreds of bytes a row; this one keeps chunks and recent strings only."""
    writer = PageWriter(_Discard(), Table(COLUMNS, ()), rows_per_chunk=500, details_per_chunk=200, recent=500)

    def write(rows: range) -> None:
        for i in rows:
            writer.row({"id": f"enrollment-{i:08d}", "status": "ACTIVE", "n": i}, _detail(i))

    tracemalloc.start()
    try:
        write(range(3000))
        before = tracemalloc.get_traced_memory()[0]
        write(range(3000, 15000))
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    writer.close(title="t")
    assert grown < 256 * 1024, f"{grown:,} bytes more after 12,000 more rows"
