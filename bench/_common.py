"""Shared pieces of the benchmarks: fixed inputs, machine description, timing, first-match driver.

Everything here is deterministic for a given ``(records, seed)``: the records come from
``engine.sandbox.generator`` with a fixed program and a fixed ``now``.
"""

from __future__ import annotations

import gc
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from engine.policy.document import Policy, load_policy, substitute_decision  # noqa: E402
from engine.policy.facts import FactsBuilder  # noqa: E402
from engine.policy.logic import normalize  # noqa: E402
from engine.sandbox.generator import generate_enrollments  # noqa: E402

PROGRAM_ID = "prog-tx-residential-battery"
NOW = datetime(2026, 11, 25, tzinfo=UTC)
POLICY_PATH = BENCH_DIR / "policies" / "bench30.yaml"
VENDOR_DIR = BENCH_DIR / ".vendor"

# The pure-Python JsonLogic libraries: both install a top-level module named ``json_logic``,
# so each one gets its own ``pip install --target`` folder and runs in a child process.
PURE_LIBS: dict[str, str] = {
    "panzi": "panzi-json-logic==1.0.1",
    "qubit": "json-logic-qubit==0.9.1",
}

Outcome = tuple[str | None, str | None, tuple[str, ...]]  # (status, rule_id, group_ids)


# --- inputs ------------------------------------------------------------------------------


def load_records(count: int, seed: int) -> list[dict[str, Any]]:
    return list(generate_enrollments(PROGRAM_ID, count, seed, NOW))


def bench_policy() -> Policy:
    return load_policy(POLICY_PATH)


def build_facts(records: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    builder = FactsBuilder(NOW)
    return [builder.build(raw)[0] for raw in records]


# --- machine -----------------------------------------------------------------------------


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def machine_line() -> str:
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count() or 0
    return (
        f"machine: cpu={cpu_model()!r} cores={os.cpu_count()} (usable {usable}) "
        f"python={platform.python_version()} ({platform.python_implementation()}) "
        f"platform={platform.platform()} date={datetime.now(UTC):%Y-%m-%d %H:%M UTC} {load_line()}"
    )


def load_line() -> str:
    """The 1/5/15-minute load averages: other work on a shared machine shows up here."""
    try:
        one, five, fifteen = os.getloadavg()
    except OSError:
        return "load=?"
    return f"load={one:.2f}/{five:.2f}/{fifteen:.2f}"


# --- timing ------------------------------------------------------------------------------


@dataclass
class Timing:
    """Seconds per run of ``items`` enrollments (``evaluations`` rule evaluations per run)."""

    name: str
    items: int
    evaluations: int
    seconds: list[float]  # on the chosen clock (CPU time of this process by default)
    wall: list[float] = field(default_factory=list)

    @property
    def median_rate(self) -> float:
        return self.items / statistics.median(self.seconds)

    @property
    def median_us(self) -> float:
        return statistics.median(self.seconds) / self.items * 1e6

    def line(self) -> str:
        rates = [self.items / s for s in self.seconds]
        evals = self.evaluations / statistics.median(self.seconds)
        return (
            f"{self.name:<46} {self.median_rate:>10,.0f} enr/s  "
            f"[{min(rates):>9,.0f} .. {max(rates):>9,.0f}]  "
            f"{evals:>12,.0f} rule-evals/s  {self.median_us:>8.1f} us/enr  "
            f"(n={self.items:,}, runs={len(self.seconds)}{self._wall_note()})"
        )

    def _wall_note(self) -> str:
        if not self.wall or self.wall == self.seconds:
            return ""
        return f", wall/cpu {statistics.median(self.wall) / statistics.median(self.seconds):.2f}"


@dataclass
class Run:
    """One timed point: ``func`` is a full pass over ``items`` records."""

    key: str
    name: str
    func: Callable[[], Any]
    items: int
    evaluations: int
    repeat: int
    seconds: list[float] = field(default_factory=list)
    wall: list[float] = field(default_factory=list)


CLOCKS = ("cpu", "wall")


def time_interleaved(runs: Sequence[Run], repeat: int, clock: str = "cpu") -> None:
    """Round-robin: every run once per round, so load spikes on a shared machine hit all alike.

    ``clock="cpu"`` times with this process's CPU time (``time.process_time``): the work is
    single-threaded and does no I/O, so on an idle machine it equals wall time, and on a
    busy shared one it leaves out the time other processes had the core. Wall time is kept
    too (``Run.wall``). No separate warm-up: callers run each point once untimed to check
    its answers, and the median over rounds absorbs what is left.
    """
    for round_ in range(repeat):
        for run in runs:
            if round_ < run.repeat:
                gc.collect()
                wall, cpu = time.perf_counter(), time.process_time()
                run.func()
                cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
                run.seconds.append(cpu if clock == "cpu" else wall)
                run.wall.append(wall)


# --- a generic first-match driver for the libraries -------------------------------------


class GroupConditions:
    """Group conditions with ``decision.*`` substituted, per decided outcome (as the engine)."""

    def __init__(self, policy: Policy, prepare: Callable[[Any], Any]) -> None:
        self._policy = policy
        self._prepare = prepare
        self._cache: dict[
            tuple[str | None, str | None], list[tuple[Any, tuple[str, ...], tuple[str, ...]]]
        ] = {}

    def for_outcome(self, status: str | None, rule_id: str | None) -> list[Any]:
        key = (status, rule_id)
        found = self._cache.get(key)
        if found is None:
            decided = {"status": status, "rule_id": rule_id}
            found = [
                (self._prepare(substitute_decision(group.source, decided)), group.add, group.remove)
                for group in self._policy.groups
            ]
            self._cache[key] = found
        return found


def apply_group(group_ids: list[str], add: Sequence[str], remove: Sequence[str]) -> list[str]:
    result = list(group_ids)
    for group_id in add:
        if group_id not in result:
            result.append(group_id)
    return [g for g in result if g not in remove]


def make_decider(
    policy: Policy,
    prepare: Callable[[Any], Any],
    check: Callable[[Any, Any], bool],
    source: str = "normalized",
) -> Callable[[dict[str, Any], Any], tuple[Outcome, int]]:
    """``decide(facts, data) -> (outcome, rules evaluated)``, first match then every group.

    ``prepare`` turns a condition (JSON-shaped) into what ``check(prepared, data)`` takes;
    ``source`` picks the engine's normalized conditions (json-logic-js missing/equality
    semantics) or the conditions as written with refs expanded.
    """
    applies = policy.applies_to
    rules = [(rule.id, rule.status, prepare(getattr(rule.condition, source))) for rule in policy.rules]
    default = policy.document.default
    default_status = default.status.value if default else None
    default_id = "default" if default else None
    groups = GroupConditions(policy, prepare if source == "source" else _normalized_then(prepare))

    def decide(facts: dict[str, Any], data: Any) -> tuple[Outcome, int]:
        current = facts["site"]["group_ids"]
        if facts.get("status") not in applies:
            return (None, None, tuple(current)), 0
        evaluated = 0
        try:
            status, rule_id = default_status, default_id
            for rid, rstatus, condition in rules:
                evaluated += 1
                if check(condition, data):
                    status, rule_id = rstatus, rid
                    break
            group_ids = list(current)
            for condition, add, remove in groups.for_outcome(status, rule_id):
                evaluated += 1
                if check(condition, data):
                    group_ids = apply_group(group_ids, add, remove)
        except Exception:  # the engine turns any evaluation failure into an error decision
            return (None, None, tuple(current)), evaluated
        return (status, rule_id, tuple(group_ids)), evaluated

    return decide


def _normalized_then(prepare: Callable[[Any], Any]) -> Callable[[Any], Any]:
    return lambda condition: prepare(normalize(condition))


# --- vendored pure-Python libraries ------------------------------------------------------


def vendor_path(lib: str) -> Path:
    return VENDOR_DIR / PURE_LIBS[lib].replace("==", "-")


def ensure_vendored(lib: str) -> Path:
    """``pip install --target bench/.vendor/<name>-<version>`` once (gitignored)."""
    target = vendor_path(lib)
    stamp = target / ".installed"
    if stamp.exists():
        return target
    target.mkdir(parents=True, exist_ok=True)
    command = [
        sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
        "--no-warn-script-location", "--upgrade", "--target", str(target), PURE_LIBS[lib],
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"pip install --target {target} {PURE_LIBS[lib]} failed:\n{done.stderr[-2000:]}")
    stamp.write_text(PURE_LIBS[lib] + "\n")
    return target


# --- output ------------------------------------------------------------------------------


class Tee:
    """Print to stdout and keep the text (for bench/results/)."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def __call__(self, text: str = "") -> None:
        print(text, flush=True)
        self.lines.append(text)

    def text(self) -> str:
        return "\n".join(self.lines) + "\n"
