"""Fixtures for the HTML report: decisions from the example policy, hostile enrollment data,
and a real headless Chromium (Debian's ``chromium`` on PATH, driven by Playwright; never a
browser download)."""

from __future__ import annotations

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
from engine.render.decisions_html import ExplainedDecisions, ReportContext
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


# The page's own blocks only: two of data, one of code; no element a payload would add.
PAGE_SCRIPTS = [  # the explanations come after the code: the rows show before they are read
    '<script type="application/json" id="report-table">',
    "<script>",
    '<script type="application/json" id="report-details">',
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


def build_report(
    policy: Policy, enrollments: list[dict[str, Any]], now: datetime, title: str = "Offline preview"
) -> tuple[str, list[Decision]]:
    evaluator = Evaluator(policy, now, trace=False)
    collector = ExplainedDecisions(policy, now)
    decisions = []
    for raw in enrollments:
        decision = evaluator.evaluate(raw)
        collector(raw, decision)
        decisions.append(decision)
    context = ReportContext.for_policy(
        policy, title=title, mode="offline preview", program_id=None, evaluated_at=now
    )
    return render_page(collector.page(context, decisions)), decisions


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
