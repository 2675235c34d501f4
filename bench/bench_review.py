"""diff and backtest of a large file against one ``run --input`` of the same file.

    .venv/bin/python bench/bench_review.py                 # 100,000 enrollments, 3 rounds
    .venv/bin/python bench/bench_review.py --records 10000 --repeat 5
    .venv/bin/python bench/bench_review.py --format html   # the HTML pages, against run --format html

The target (issue 10): ``diff`` and ``backtest`` of 100,000 enrollments from a file finish in
under 2x the time of one ``run --input`` of the same file. The file is the generator's
``prog-tx-residential-battery`` list (seed 5, the API's ``{"enrollments": [...]}`` shape),
written once before timing. Each measured command is a fresh ``python cli.py ...`` process
(start-up, reading and parsing the file, evaluating, rendering the table to /dev/null), timed
by wall clock; rounds are interleaved (run, diff, backtest, run, ...) so a busy moment on the
shared machine hits every command alike. The line per command gives the median with the
spread, and its ratio to the median ``run``.

``diff`` compares ``rules/tx_residential_battery.yaml`` (base) with a copy whose capacity
threshold is 12 kWh instead of 10 kWh (new); ``backtest`` measures the example policy against
the people's decisions in the same file (ACTIVE, REJECTED, NEEDS_ACTION).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
sys.path.insert(0, str(BENCH_DIR))

from _common import load_line, machine_line  # noqa: E402

POLICY = REPO / "rules" / "tx_residential_battery.yaml"
NOW = "2026-11-25T00:00:00Z"
TARGET = 2.0


def write_inputs(folder: Path, records: int) -> tuple[Path, Path]:
    from engine.sandbox.generator import TX_BATTERY_PROGRAM, render_enrollments_json

    data = folder / "enrollments.json"
    data.write_text(
        render_enrollments_json(TX_BATTERY_PROGRAM, records, 5, datetime(2026, 11, 25, tzinfo=UTC)),
        encoding="utf-8",
    )
    text = POLICY.read_text(encoding="utf-8")
    edited = folder / "tx_edited.yaml"
    edited.write_text(text.replace("10000]}", "12000]}"), encoding="utf-8")
    return data, edited


def timed(args: list[str]) -> float:
    start = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "cli.py", *args],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        check=False,
    )
    elapsed = time.perf_counter() - start
    if result.returncode not in (0, 1):
        raise SystemExit(f"{args[0]} exited {result.returncode}: {result.stderr.decode()[-500:]}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--format", choices=("table", "html"), default="table", help="every command's output")
    parser.add_argument(
        "--results", default=None, help="output file (default bench/results/review-DATE.txt; - for none)"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        data, edited = write_inputs(Path(scratch), args.records)
        commands = {
            "run --input": ["run", "--rules", str(POLICY), "--input", str(data), "--now", NOW],
            "diff": [
                "diff",
                "--rules",
                str(edited),
                "--base",
                str(POLICY),
                "--input",
                str(data),
                "--now",
                NOW,
            ],
            "backtest": ["backtest", "--rules", str(POLICY), "--input", str(data), "--now", NOW],
        }
        for command in commands.values():
            command += ["--format", args.format]
        size_mb = data.stat().st_size / 1e6
        lines = [
            f"bench_review: {args.records:,} enrollments ({size_mb:.0f} MB), {args.repeat} rounds, "
            f"--format {args.format}",
            machine_line(),
            f"start: {load_line()}",
        ]
        times: dict[str, list[float]] = {name: [] for name in commands}
        for _ in range(args.repeat):
            for name, command in commands.items():
                times[name].append(timed(command))
        lines.append(f"end: {load_line()}")
    floor = statistics.median(times["run --input"])
    for name, values in times.items():
        median = statistics.median(values)
        ratio = median / floor
        verdict = (
            ""
            if name == "run --input"
            else f"  target < {TARGET:.1f}x: {'met' if ratio < TARGET else 'NOT met'}"
        )
        lines.append(
            f"{name:<12} {median:7.2f} s  [{min(values):.2f} .. {max(values):.2f}]  {ratio:.2f}x run{verdict}"
        )
    output = "\n".join(lines)
    print(output)
    if args.results != "-":
        target = (
            Path(args.results)
            if args.results
            else BENCH_DIR / "results" / f"review-{args.format}-{datetime.now(UTC):%Y-%m-%d}.txt"
        )
        target.write_text(output + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
