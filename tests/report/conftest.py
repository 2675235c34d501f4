"""Fixtures for the HTML report: decisions from the example policy, hostile enrollment data,
and a real headless Chromium (Debian's ``chromium`` on PATH, driven by Playwright; never a
browser download)."""

from __future__ import annotations

import io
import json
import os
import re
import shutil
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from engine.flip.files import read_enrollments_file
from engine.policy.decision import Decision
from engine.policy.document import Policy
from engine.policy.evaluator import Evaluator
from engine.render.decisions_html import ExplainedDecisions, HtmlWriter, ReportContext
from engine.render.html import render_page

REPO_ROOT = Path(__file__).resolve().parents[2]
SAMPLE = REPO_ROOT / "rules" / "samples" / "tx_residential_battery.enrollments.json"

# What a hostile payload would do if it ever ran: set this flag or open a dialog.
HOSTILE = [
    "<script>window.__pwned = 1</script>",
    '<img src=x onerror="window.__pwned = 2; alert(2)">',
    "</script><script>window.__pwned = 3; alert(3)</script>",
    "<!-- {{ 7 * 7 }} {% raw %} ${7*7} -->",
    "&lt;b&gt;entity&lt;/b&gt; \u2028 \u2029",
]


# The page's own blocks only (a page of fewer than 1,000 rows): the table's columns, one chunk
# of rows, the code, one chunk of explanations; no element a payload would add.
PAGE_SCRIPTS = [  # the explanations come after the code: the rows show before they are read
    '<script type="application/json" id="report-table">',
    '<script type="application/json" class="report-rows">',
    "<script>",
    '<script type="application/json" class="report-details">',
]


def script_blocks(html: str) -> list[str]:
    return re.findall(r"<script\b[^>]*>", html)


def sample_enrollments() -> list[dict[str, Any]]:
    return list(read_enrollments_file(SAMPLE))


def hostile_enrollments() -> list[dict[str, Any]]:
    """Enrollments whose every API string is a payload: id, status reason, site, program
    attributes, device types; the policy's reason copies one of them into the decision."""
    records = []
    for index, payload in enumerate(HOSTILE):
        records.append({
            "id": f"{payload} #{index}",
            "status": "SUBMITTED",
            "status_reason": payload,
            "updated_at": "2026-11-01T00:00:00Z",
            "site": {"state_code": payload, "zip_code": payload, "city": payload,
                     "first_name": "Alice", "email": "alice@example.com", "street_address": "1 Secret Rd",
                     "groups": [{"id": "LZ_NORTH", "name": payload}]},
            "devices": [{"type": payload, "attributes": {"battery_capacity_wh": payload}}],
            "program_specific_attributes": [
                {"name": "utility_account_number", "type": "string", "value": payload},
            ],
        })  # fmt: skip
    return records


def report_context(policy: Policy, now: datetime, title: str = "Offline preview") -> ReportContext:
    return ReportContext.for_policy(
        policy, title=title, mode="offline preview", program_id=None, evaluated_at=now
    )


def build_report(
    policy: Policy, enrollments: list[dict[str, Any]], now: datetime, title: str = "Offline preview",
    **page_options: int,
) -> tuple[str, list[Decision]]:  # fmt: skip
    """The report as ``run --format html`` writes it: each decision explained and written out
    as it is made."""
    evaluator = Evaluator(policy, now, trace=False)
    stream = io.StringIO()
    writer = HtmlWriter(stream, policy, now, report_context(policy, now, title), **page_options)
    decisions = []
    for raw in enrollments:
        decision = evaluator.evaluate(raw)
        writer(raw, decision)
        decisions.append(decision)
    writer.close()
    return stream.getvalue(), decisions


def build_whole_report(
    policy: Policy, enrollments: list[dict[str, Any]], now: datetime, title: str = "Offline preview"
) -> str:
    """The same page built whole in memory, then rendered (``ExplainedDecisions``)."""
    evaluator = Evaluator(policy, now, trace=False)
    collector = ExplainedDecisions(policy, now)
    decisions = []
    for raw in enrollments:
        decision = evaluator.evaluate(raw)
        collector(raw, decision)
        decisions.append(decision)
    return render_page(collector.page(report_context(policy, now, title), decisions))


def blocks(html: str, kind: str) -> list[Any]:
    """The JSON of the page's ``<script type="application/json" class=KIND>`` blocks, in order."""
    found = re.findall(rf'<script type="application/json" class="{kind}">(.*?)</script>', html, re.S)
    return [json.loads(text) for text in found]


def page_data(html: str) -> dict[str, Any]:
    """What the page shows, decoded as its script does: the columns, each row's cells as text
    (numbers as numbers) and its explanation spelled out, and the header and cards markup."""
    frame = json.loads(re.search(r'id="report-table">(.*?)</script>', html, re.S).group(1))  # type: ignore[union-attr]
    chunks = blocks(html, "report-rows")
    columns = frame["columns"]
    strings = [[s for chunk in chunks for s in chunk["strings"][i]] for i in range(len(columns))]
    cells = [cell for chunk in chunks for cell in chunk["cells"]]
    parts = blocks(html, "report-details")
    texts = [s for part in parts for s in part["strings"]]
    steps = [step for part in parts for step in part["steps"]]
    details = [detail for part in parts for detail in part["details"]]

    def text(index: int) -> str | None:
        return None if index < 0 else texts[index]

    def step(index: int) -> list[Any]:
        rule, kind, verdict, reads, decided, error = steps[index]
        return [text(rule), text(kind), verdict, [r if i % 3 == 2 else text(r) for i, r in enumerate(reads)],
                [text(d) for d in decided], text(error)]  # fmt: skip

    def detail(index: int) -> list[Any] | None:
        if index < 0:
            return None
        summary, notes, sections = details[index]
        opened = [[text(title), [step(s) for s in ids], text(note)] for title, ids, note in sections]
        return [text(summary), [text(n) for n in notes], opened]

    stride = len(columns) + 1
    rows = []
    for start in range(0, len(cells), stride):
        row = cells[start : start + stride]
        shown = {
            c["key"]: (row[i] if c["sort"] == "number" else (None if row[i] < 0 else strings[i][row[i]]))
            for i, c in enumerate(columns)
        }
        rows.append((shown, detail(row[-1])))
    # Everything but the data and the code: the head, the table's frame, notes, cards, header.
    markup = re.sub(
        r'<script type="application/json".*?</script>\n', "", html.split("<script>", 1)[0], flags=re.S
    )
    return {"frame": frame, "rows": rows, "markup": markup}


@pytest.fixture
def write_report(tmp_path: Path, now: datetime) -> Callable[..., tuple[Path, list[Decision]]]:
    def write(
        policy: Policy, enrollments: list[dict[str, Any]], name: str = "report.html"
    ) -> tuple[Path, list[Decision]]:
        text, decisions = build_report(policy, enrollments, now)
        path = tmp_path / name
        path.write_text(text, encoding="utf-8")
        return path, decisions

    return write


def chromium_path() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    executable = chromium_path()
    if executable is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is not on PATH: .ci/run installs Debian's chromium package")
        pytest.skip("chromium is not on PATH (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        instance = playwright.chromium.launch(executable_path=executable, headless=True)
        try:
            yield instance
        finally:
            instance.close()


@pytest.fixture
def open_report(browser: Any) -> Iterator[Callable[[Path], Any]]:
    """Open a report from a file:// URL with the network cut off; fails on any script error,
    any request that is not the file itself, and any dialog (a payload that ran)."""
    context = browser.new_context(viewport={"width": 1400, "height": 900}, offline=True)
    problems: list[str] = []

    def open_page(path: Path) -> Any:
        page = context.new_page()
        page.on("pageerror", lambda error: problems.append(f"script error: {error}"))
        page.on("dialog", lambda dialog: (problems.append(f"dialog: {dialog.message}"), dialog.dismiss()))
        page.on("request", lambda request: None if request.url.startswith("file://") else
                problems.append(f"request: {request.url}"))  # fmt: skip
        page.on("console", lambda message: problems.append(f"console {message.type}: {message.text}")
                if message.type == "error" else None)  # fmt: skip
        page.goto(path.as_uri())
        page.wait_for_selector("html[data-ready]", timeout=10_000)
        return page

    yield open_page
    context.close()
    assert problems == []
