"""The HTML report at scale: size, time to first rows and filter time in headless Chromium.

Writes the report of N generated enrollments into a file exactly as ``autoapprove run
--format html`` does (evaluate, explain and write each decision as it comes) and opens it from a
file:// URL in Debian's ``chromium`` through Playwright, offline. Targets (issue 11): a report
of 100,000 decisions is at most 40 MB, shows its first rows in under 2 s, filters in under
300 ms. Measured here, never asserted in tests.

    .venv/bin/python bench/bench_html.py [--records 100000] [--policy PATH] [--repeat 5]
"""

from __future__ import annotations

import argparse
import re
import shutil
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from _common import BENCH_DIR, NOW, PROGRAM_ID, load_line, load_records, machine_line

from engine.policy.document import load_policy
from engine.policy.evaluator import Evaluator
from engine.render.decisions_html import HtmlWriter, ReportContext

# What a reviewer does, each timed from the event to the re-rendered rows (layout included).
ACTIONS: list[tuple[str, str]] = [
    ("filter action=update", "select('action', 'update')"),
    ("filter rule=approve", "select('rule_id', 'approve')"),
    ("clear filters", "clear()"),
    ("search 'meets program'", "search('meets program')"),
    ("search an id prefix", "search(window.firstId.slice(0, 8))"),
    ("search, no match", "search('zzzz-no-such-thing')"),
    ("clear search", "search('')"),
    ("sort by enrollment", "sort('Enrollment')"),
    ("sort by reason", "sort('Reason / error')"),
    ("expand first row", "expand()"),
]

HELPERS = """
window.firstId = document.querySelector('#rows .row').children[0].textContent.slice(1);
window.benchAct = function (code) {
  function select(key, label) {
    var s = document.querySelector('select[data-col=' + key + ']');
    for (var i = 0; i < s.options.length; i++) {
      if (s.options[i].text.startsWith(label + ' (')) s.value = s.options[i].value;
    }
    s.dispatchEvent(new Event('change'));
  }
  function clear() { document.getElementById('reset').click(); }
  function search(text) {
    var q = document.getElementById('search');
    q.value = text;
    q.dispatchEvent(new Event('input'));
  }
  function sort(label) {
    var buttons = Array.from(document.querySelectorAll('.grid-head button'));
    buttons.find(b => b.textContent.startsWith(label)).click();
  }
  function expand() { document.querySelector('#rows .row').click(); }
  var start = performance.now();
  eval(code);
  document.body.getBoundingClientRect();  // force style and layout
  var rows = document.querySelectorAll('#rows .row').length;
  return [performance.now() - start, window.reportTable.shown(), rows];
};
"""


def build(records: int, policy_path: Path, path: Path) -> dict[str, float]:
    policy = load_policy(policy_path)
    raws = load_records(records, seed=7)
    timings: dict[str, float] = {}
    context = ReportContext.for_policy(
        policy, title="Offline preview", mode="offline preview", program_id=PROGRAM_ID, evaluated_at=NOW
    )
    start = time.perf_counter()
    evaluator = Evaluator(policy, NOW, trace=False)
    with path.open("w", encoding="utf-8") as stream:
        writer = HtmlWriter(stream, policy, NOW, context)
        for raw in raws:
            writer(raw, evaluator.evaluate(raw))
        writer.close()
    timings["evaluate + explain + write (s)"] = time.perf_counter() - start
    return timings


def block_sizes(path: Path) -> str:
    """How much of the file is rows and how much explanations."""
    text = path.read_text(encoding="utf-8")
    sizes = {}
    for kind in ("report-rows", "report-details"):
        found = re.findall(rf'<script type="application/json" class="{kind}">(.*?)</script>', text, re.S)
        sizes[kind] = (len(found), sum(len(block.encode()) for block in found))
    (rows, row_bytes), (details, detail_bytes) = sizes["report-rows"], sizes["report-details"]
    return (
        f"rows {row_bytes / 1e6:.1f} MB in {rows} blocks, explanations {detail_bytes / 1e6:.1f} MB "
        f"in {details} blocks"
    )


def measure_browser(path: Path, repeat: int) -> dict[str, Any]:
    from playwright.sync_api import sync_playwright

    executable = shutil.which("chromium")
    if executable is None:
        sys.exit("chromium is not on PATH (apt-get install chromium)")
    opens: list[float] = []
    ready: list[float] = []
    frame: list[float] = []
    actions: dict[str, list[float]] = {name: [] for name, _ in ACTIONS}
    notes: dict[str, Any] = {}
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, headless=True)
        try:
            for _ in range(repeat):
                context = browser.new_context(viewport={"width": 1400, "height": 900}, offline=True)
                page = context.new_page()
                start = time.perf_counter()
                page.goto(path.as_uri(), wait_until="commit")
                page.wait_for_selector("#rows .row", timeout=60_000)
                page.evaluate("new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))")
                opens.append(time.perf_counter() - start)
                ready.append(page.evaluate("window.reportReadyAt") / 1000)
                frame.append(page.evaluate("window.reportFrameAt") / 1000)
                page.evaluate(HELPERS)
                for name, code in ACTIONS:
                    elapsed, shown, rows = page.evaluate("code => window.benchAct(code)", code)
                    actions[name].append(elapsed / 1000)
                    notes[name] = f"{shown:,} rows match, {rows} in the DOM"
                heap = "performance.memory ? performance.memory.usedJSHeapSize / 1e6 : -1"
                notes["JS heap (MB)"] = page.evaluate(heap)
                context.close()
        finally:
            browser.close()
    return {"open": opens, "ready": ready, "frame": frame, "actions": actions, "notes": notes}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--policy", type=Path, default=Path("rules/tx_residential_battery.yaml"))
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument(
        "--results", default=None, help="output file (default bench/results/html-DATE.txt; - for none)"
    )
    args = parser.parse_args()

    lines = [
        f"bench_html: {args.records:,} decisions, policy {args.policy}, {args.repeat} opens",
        machine_line(),
        f"chromium: {shutil.which('chromium')}",
        f"start: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {load_line()}",
    ]
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "report.html"
        timings = build(args.records, args.policy, path)
        size = path.stat().st_size
        lines.append(f"report size: {size / 1e6:.1f} MB ({size:,} bytes; target <= 40 MB)")
        lines.append(f"  {block_sizes(path)}")
        lines += [f"{name}: {value:.2f}" if isinstance(value, float) else f"{name}: {value:,}"
                  for name, value in timings.items()]  # fmt: skip
        result = measure_browser(path, args.repeat)
    lines.append(_line("open to first rows painted (wall, s; target < 2)", result["open"]))
    lines.append(_line("  table script done (s since navigation start)", result["ready"]))
    lines.append(_line("  first frame with the rows (s since navigation start)", result["frame"]))
    for name, values in result["actions"].items():
        lines.append(_line(f"{name} (s; filter target < 0.3)", values) + f"  [{result['notes'][name]}]")
    lines.append(f"JS heap after the actions: {result['notes']['JS heap (MB)']:.0f} MB")
    lines.append(f"end: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {load_line()}")
    output = "\n".join(lines)
    print(output)
    if args.results != "-":
        default = BENCH_DIR / "results" / f"html-{datetime.now(UTC):%Y-%m-%d}.txt"
        target = Path(args.results) if args.results else default
        target.write_text(output + "\n", encoding="utf-8")


def _line(label: str, values: list[float]) -> str:
    return f"{label}: median {statistics.median(values):.3f} [min {min(values):.3f} .. max {max(values):.3f}]"


if __name__ == "__main__":
    main()
