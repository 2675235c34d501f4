"""Fixtures of the safety suite: crashes, faults, concurrent runs and hostile policies.

The simulator runs in this process (a thread on a free loopback port), so it outlives the
runs it serves; the product runs as a subprocess (``cli.py run``), and a killed run as
``tests/crashing_cli.py STEP run ...``: the real CLI with a checkpoint injected that hard-exits
(``os._exit(137)``) at a named step, a real process killed there. Stores are
SQLite files in ``tmp_path`` and, when ``AUTOAPPROVE_TEST_POSTGRES_URL`` is set, a fresh
PostgreSQL database per test (dropped afterwards); PostgreSQL tests skip visibly otherwise.

Time passing: the CLI takes its program lock with a 300 s lease (the default of
``--lock-ttl``, which these runs keep), so on SQLite a killed run's lease stands for five
minutes. ``Product.let_lease_expire`` moves that lease's expiry into the past, which is
exactly what the next run observes once the TTL has gone by (it compares ``expires_at``
with its clock). PostgreSQL needs no such step: the server frees a dead session's advisory
lock at once.
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cli_process import REPO_ROOT, CliResult, run_cli
from crashing_cli import CRASH_EXIT, crashing_entry
from postgres_databases import fresh_postgres_database
from sqlalchemy import func, select, update

from engine.bootstrap import run_policy
from engine.config import Settings
from engine.policy.decision import Action, Decision
from engine.policy.document import Policy, load_policy
from engine.policy.evaluator import Evaluator
from engine.runs.patch import patch_is_applied
from engine.runs.report import RunReport
from engine.runs.service import RunSettings
from engine.sandbox.generator import TX_BATTERY_PROGRAM
from engine.sandbox.simulator import FaultConfig, Simulator, SimulatorConfig
from engine.store import Store
from engine.store.schema import DecisionRow, ProgramLockRow, RunRow

TX_RULES = REPO_ROOT / "rules" / "tx_residential_battery.yaml"
PROGRAM = TX_BATTERY_PROGRAM
NOW = datetime(2026, 11, 25, tzinfo=UTC)
NOW_ARG = "2026-11-25T00:00:00Z"
EXIT_LOCKED = 4
NEW_GROUP = "WINTER_PILOT_2026"

BACKENDS = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]
OPEN_STATES = ("planned", "in_flight", "failed_retryable", "deferred")

# Fast retries for in-process runs: the simulator's faults should cost milliseconds.
FAST_API = {"timeout_s": 3.0, "backoff_initial_s": 0.01, "backoff_max_s": 0.05, "max_retry_after_s": 2.0}


# --- policies ---------------------------------------------------------------------------------


def tx_policy_text(*, new_group: bool = True) -> str:
    """The example Texas policy; with ``new_group`` every approval also joins ``NEW_GROUP``,
    a group the simulated program does not have, so a live run must create it first."""
    source = TX_RULES.read_text(encoding="utf-8")
    if not new_group:
        return source
    extra = (
        "  - id: winter-pilot\n"
        "    description: Every approval joins the new winter pilot (created on first use).\n"
        '    when: {"==": [{"var": "decision.status"}, "ACTIVE"]}\n'
        f"    add: [{NEW_GROUP}]\n"
    )
    marker = "\nlimits:"
    assert marker in source, "the example policy changed shape: update tx_policy_text()"
    return source.replace(marker, "\n" + extra + marker, 1)


def write_policy(directory: Path, text_: str, name: str = "policy.yaml") -> Path:
    path = directory / name
    path.write_text(text_, encoding="utf-8")
    load_policy(path)  # a test policy that does not load is a broken test
    return path


# --- the simulator ----------------------------------------------------------------------------


class CountingSimulator(Simulator):
    """The simulator, also counting the PATCHes that took effect, per enrollment.

    ``patch_count`` counts every PATCH received, faulted ones included; under random faults
    (answered instead of the API) the count of PATCHes the API *applied* is the one that
    says whether a change was made twice.
    """

    @property
    def applied_patches(self) -> Counter[str]:
        return Counter(self.applied_patch_counts())


@pytest.fixture
def make_simulator() -> Iterator[Callable[..., CountingSimulator]]:
    """Start simulators of the Texas program on free ports; all are stopped afterwards."""
    started: list[CountingSimulator] = []

    def make(count: int = 120, *, seed: int = 5, faults: FaultConfig | None = None) -> CountingSimulator:
        config = SimulatorConfig(
            programs={PROGRAM: count}, seed=seed, now=NOW, faults=faults or FaultConfig()
        )
        sim = CountingSimulator(config)
        sim.start()
        started.append(sim)
        return sim

    yield make
    for sim in started:
        sim.stop()


# --- databases --------------------------------------------------------------------------------


@pytest.fixture
def make_db_url(tmp_path: Path) -> Iterator[Callable[[str], str]]:
    """``make_db_url("sqlite")`` or ``make_db_url("postgresql")``: a fresh, empty store URL."""
    with ExitStack() as stack:

        def make(backend: str) -> str:
            if backend == "sqlite":
                return f"sqlite:///{tmp_path / f'store_{uuid.uuid4().hex[:8]}.db'}"
            return stack.enter_context(fresh_postgres_database("safety"))

        yield make


# --- the product ------------------------------------------------------------------------------


@dataclass
class Product:
    """One program's world: a simulator, a store and a policy file; runs the real CLI."""

    sim: CountingSimulator
    db_url: str
    policy_path: Path
    runs: int = 0
    kills: int = 0
    log: list[str] = field(default_factory=list)

    @property
    def env(self) -> dict[str, str]:
        return {"FLIP_API_URL": self.sim.base_url, "FLIP_API_KEY": self.sim.config.api_key}

    def settings(self, **values: Any) -> Settings:
        """Settings for an in-process run against this world: fast retries, ``values`` over them."""
        return Settings(
            api_url=self.sim.base_url, api_key=self.sim.config.api_key, db_url=self.db_url,
            **{**FAST_API, **values},
        )  # fmt: skip

    @property
    def policy(self) -> Policy:
        return load_policy(self.policy_path)

    def run_args(self, *, live: bool = True) -> list[str]:
        args = ["run", "--rules", str(self.policy_path), "--now", NOW_ARG, "--db", self.db_url]
        args += ["--format", "json"]
        if live:
            args += ["--live", "--yes"]
        return args

    def run(self, *, crash_at: str | None = None, live: bool = True) -> CliResult:
        """A CLI run, killed at the step ``crash_at`` names (``in_flight:3``: the third time)
        if given. A killed run (exit 137) is counted as a kill; ``let_lease_expire`` follows
        it so that the next run is not refused for the dead run's lease."""
        entry = crashing_entry(crash_at) if crash_at else None
        result = run_cli(self.run_args(live=live), self.env, entry=entry, timeout=240.0)
        self.runs += 1
        self.log.append(f"run crash_at={crash_at} -> exit {result.code} in {result.seconds:.1f}s")
        if result.code == CRASH_EXIT:
            self.kills += 1
            self.let_lease_expire()
        return result

    def let_lease_expire(self) -> None:
        """Let a dead run's SQLite lease run out (see the module docstring)."""
        expire_leases(self.db_url)

    def dry_run(self) -> RunReport:
        """A fresh dry run through the library path (real client and store)."""
        return run_policy(self.policy, self.settings(), RunSettings(live=False, now=NOW))


@pytest.fixture
def make_product(
    tmp_path: Path,
    make_simulator: Callable[..., CountingSimulator],
    make_db_url: Callable[[str], str],
) -> Callable[..., Product]:
    def make(
        backend: str = "sqlite",
        *,
        count: int = 120,
        seed: int = 5,
        faults: FaultConfig | None = None,
        policy_text: str | None = None,
    ) -> Product:
        sim = make_simulator(count, seed=seed, faults=faults)
        path = write_policy(tmp_path, policy_text or tx_policy_text(), f"policy_{uuid.uuid4().hex[:6]}.yaml")
        return Product(sim, make_db_url(backend), path)

    return make


# --- looking into the store -------------------------------------------------------------------


@contextmanager
def open_store(db_url: str) -> Iterator[Store]:
    with Store.open(db_url, migrate=False) as store:
        yield store


def expire_leases(db_url: str) -> None:
    """Move every held SQLite lease's expiry one second into the past."""
    with open_store(db_url) as store:
        if store.engine.dialect.name != "sqlite":
            return
        past = datetime.now(UTC) - timedelta(seconds=1)
        with store.engine.begin() as connection:
            connection.execute(
                update(ProgramLockRow).where(ProgramLockRow.holder.is_not(None)).values(expires_at=past)
            )


def change_states(db_url: str, *, run_id: int | None = None, live_only: bool = True) -> Counter[str]:
    """How many stored decisions are in each change state (of one run, or of all live runs)."""
    query = (
        select(DecisionRow.change_state, func.count())
        .join(RunRow, RunRow.id == DecisionRow.run_id)
        .group_by(DecisionRow.change_state)
    )
    if run_id is not None:
        query = query.where(DecisionRow.run_id == run_id)
    if live_only:
        query = query.where(RunRow.mode == "live")
    with open_store(db_url) as store, store.engine.connect() as connection:
        return Counter(dict(connection.execute(query).all()))


def open_changes_per_enrollment(db_url: str) -> Counter[str]:
    """For each enrollment, how many live changes are still open (may still be sent)."""
    query = (
        select(DecisionRow.enrollment_id, func.count())
        .join(RunRow, RunRow.id == DecisionRow.run_id)
        .where(RunRow.mode == "live", DecisionRow.change_state.in_(OPEN_STATES))
        .group_by(DecisionRow.enrollment_id)
    )
    with open_store(db_url) as store, store.engine.connect() as connection:
        return Counter(dict(connection.execute(query).all()))


def run_outcomes(db_url: str) -> list[tuple[int, str, str]]:
    """(run id, mode, outcome) of every run, oldest first."""
    with open_store(db_url) as store:
        return [(r.id, r.mode.value, r.outcome.value) for r in reversed(store.list_runs(PROGRAM, 10_000))]


def newest_live_decisions(db_url: str) -> dict[str, tuple[int, str, dict[str, Any] | None]]:
    """Each enrollment's newest live decision: (decision id, change state, PATCH body)."""
    query = (
        select(DecisionRow.enrollment_id, DecisionRow.id, DecisionRow.change_state, DecisionRow.planned_patch)
        .join(RunRow, RunRow.id == DecisionRow.run_id)
        .where(RunRow.mode == "live")
        .order_by(DecisionRow.id)
    )
    newest: dict[str, tuple[int, str, dict[str, Any] | None]] = {}
    with open_store(db_url) as store, store.engine.connect() as connection:
        for enrollment_id, decision_id, state, body in connection.execute(query):
            newest[enrollment_id] = (decision_id, state, body)
    return newest


def max_decision_id(db_url: str) -> int:
    with open_store(db_url) as store, store.engine.connect() as connection:
        return int(connection.execute(select(func.coalesce(func.max(DecisionRow.id), 0))).scalar_one())


# --- the invariants ---------------------------------------------------------------------------


def group_ids(enrollment: dict[str, Any]) -> set[str]:
    site = enrollment.get("site") if isinstance(enrollment.get("site"), dict) else {}
    return {g.get("id") for g in (site or {}).get("groups") or [] if isinstance(g, dict)}


def pending_changes(sim: Simulator, policy: Policy) -> list[str]:
    """Where an enrollment's status or groups differ from what the policy decides on the
    simulator's current data (an empty list: the program has converged)."""
    evaluator = Evaluator(policy, NOW, trace=False)
    differences = []
    for enrollment in sim.enrollments(policy.program_id):
        decision: Decision = evaluator.evaluate(enrollment)
        if decision.action is not Action.UPDATE:
            continue
        differences.append(
            f"{enrollment['id']}: is {enrollment.get('status')} {sorted(group_ids(enrollment))}, "
            f"policy says {decision.status} {sorted(decision.group_ids)}"
        )
    return differences


def assert_converged(
    product: Product, *, max_applied_patches: int = 1, max_received_patches: int = 2
) -> dict[str, Any]:
    """The invariants after a crash (or many) and a clean run; returns numbers to report.

    * every enrollment has the state the policy decides on the current data, and a fresh
      dry run plans zero changes;
    * the newest live decision of every enrollment whose change was applied (or recovered)
      matches the simulator;
    * no change is left ``in_flight`` and no live change is still open (``open_changes``
      and older rows alike);
    * no enrollment was changed by more than ``max_applied_patches`` PATCHes (one: the data
      does not move under the runs, so a second PATCH with effect would be a duplicate),
      nor sent more than ``max_received_patches`` PATCH requests (a request cut off by the
      kill counts; so do retries under faults).
    """
    sim, policy = product.sim, product.policy
    differences = pending_changes(sim, policy)
    assert not differences, f"{len(differences)} enrollments differ from the policy: {differences[:5]}"
    report = product.dry_run()
    planned = [d.enrollment_id for d in report.decisions if d.action is Action.UPDATE]
    assert planned == [], f"a fresh dry run still plans {len(planned)} changes"

    mismatched = []
    for enrollment_id, (_id, state, body) in newest_live_decisions(product.db_url).items():
        applied = state in ("applied", "recovered") and body is not None
        if applied and not patch_is_applied(body, sim.enrollment(enrollment_id)):
            mismatched.append(enrollment_id)
    assert not mismatched, f"applied changes that the simulator does not show: {mismatched[:5]}"

    states = change_states(product.db_url)
    assert states["in_flight"] == 0, f"changes left in flight: {dict(states)}"
    with open_store(product.db_url) as store:
        leftovers = store.open_changes(PROGRAM)
    assert leftovers == [], f"{len(leftovers)} open changes left: {leftovers[:3]}"
    # Older open rows too: the next run must settle what a killed run planned.
    still_open = open_changes_per_enrollment(product.db_url)
    assert not still_open, f"{sum(still_open.values())} live changes still open: {dict(states)}"

    ids = sim.enrollment_ids(PROGRAM)
    applied = {e: sim.applied_patches[e] for e in ids}
    received = {e: sim.patch_count(e) for e in ids}
    worst = max(applied.values(), default=0)
    assert worst <= max_applied_patches, (
        f"an enrollment was changed {worst} times: "
        f"{[e for e, n in applied.items() if n > max_applied_patches][:5]}"
    )
    most_sent = max(received.values(), default=0)
    assert most_sent <= max_received_patches, (
        f"an enrollment got {most_sent} PATCH requests: "
        f"{[e for e, n in received.items() if n > max_received_patches][:5]}"
    )
    return {
        "max_applied_patches": worst,
        "max_received_patches": most_sent,
        "applied_patches": sum(applied.values()),
        "states": dict(states),
    }
