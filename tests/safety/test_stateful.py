"""A person, a policy author, faulty runs and crashes, interleaved by Hypothesis.

One simulator and one SQLite store per example (made in the machine's ``initialize`` rule).
Steps: a person edits enrollments in the "dashboard" (status, battery), the policy file is
switched between three small policies, runs go dry or live with faults on or off (in this
process, through ``engine.bootstrap.run_policy``), and live runs are killed at a named step
in a ``tests/crashing_cli.py STEP run`` subprocess (the next live run is the restart). The kill step
is picked among those the run will reach (from the changes the policy needs now), so every
killed run really dies; a faulty run may fail only with the API errors faults cause.

After every step:

* the newest live decision of each enrollment, when its change was applied (or recovered)
  and no person edited the enrollment since, matches the simulator;
* no enrollment has more than one open change in the store;
* after a live run that finished, nothing is left ``in_flight``.

At teardown a fault-free live run converges: a dry run right after it plans zero changes.
"""

from __future__ import annotations

import shutil
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any, ClassVar

import pytest
from hypothesis import HealthCheck, seed, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    rule,
    run_state_machine_as_test,
)

from engine.bootstrap import run_policy
from engine.errors import ApiResponseError, ApiRetryableError
from engine.policy.decision import Action, Decision
from engine.policy.evaluator import Evaluator
from engine.runs.patch import patch_is_applied
from engine.runs.service import RunSettings
from engine.sandbox.simulator import FaultConfig, SimulatorConfig
from engine.store import Store

from .conftest import (
    CRASH_EXIT,
    NOW,
    PROGRAM,
    CountingSimulator,
    Product,
    change_states,
    expire_leases,
    max_decision_id,
    newest_live_decisions,
    open_changes_per_enrollment,
    open_store,
    pending_changes,
    write_policy,
)

ENROLLMENTS = 30
STATUSES = ["SUBMITTED", "PENDING", "ACTIVE", "REJECTED", "NEEDS_ACTION"]
CAPACITIES = [0, 4_000, 8_000, 12_000, 16_000]
FAULTS = FaultConfig(
    error_rate=0.06, rate_limit=0.03, retry_after_s=0, drop=0.03, timeout=0.03, hang_s=0.05, seed=99
)

_HEAD = f"program_id: {PROGRAM}\napplies_to: [SUBMITTED, PENDING]\n"
_CAPACITY = '{"var": ["totals.battery_capacity_wh", 0]}'

# Three small policies. None reads the status it sets, so applying a decision and deciding
# again gives the same decision: one live run is enough to converge.
POLICIES = {
    "approve-10k": _HEAD
    + f"""name: approve at 10 kWh
rules:
  - id: approve
    when: {{">=": [{_CAPACITY}, 10000]}}
    status: ACTIVE
    reason: Approved
default: {{status: PENDING, reason: Needs review}}
groups:
  - id: big
    when: {{">=": [{_CAPACITY}, 12000]}}
    add: [SAFETY_BIG]
  - id: not-big
    when: {{"<": [{_CAPACITY}, 12000]}}
    remove: [SAFETY_BIG]
""",
    "approve-5k-reject-tiny": _HEAD
    + f"""name: approve at 5 kWh, reject below 3
rules:
  - id: reject-tiny
    when: {{"<": [{_CAPACITY}, 3000]}}
    status: REJECTED
    reason: Battery too small
  - id: approve
    when: {{">=": [{_CAPACITY}, 5000]}}
    status: ACTIVE
    reason: Approved
default: {{status: PENDING, reason: Needs review}}
groups:
  - id: review-queue
    when: {{"==": [{{"var": "decision.status"}}, "PENDING"]}}
    add: [SAFETY_REVIEW]
  - id: leave-review-queue
    when: {{"!=": [{{"var": "decision.status"}}, "PENDING"]}}
    remove: [SAFETY_REVIEW]
""",
    "hold-everything": _HEAD
    + """name: hold everything for review
rules:
  - id: hold
    when: true
    status: PENDING
    reason: Paused for review
groups:
  - id: clear
    when: true
    remove: [SAFETY_BIG, SAFETY_REVIEW]
""",
}


def _battery(capacity: int) -> list[dict[str, Any]]:
    if not capacity:
        return []
    attributes = {"battery_capacity_wh": capacity, "battery_power_output_w": capacity // 2}
    return [{"id": f"dev-safety-{capacity}", "type": "BATTERY", "attributes": attributes}]


# A fixed seed: the same examples whatever this class's source says (derandomize alone seeds
# from the class's source, so any edit here drew other examples, and with them other kill
# counts). Seed 2 kills at every step: after_planning 11, in_flight 4, after_patch 4,
# after_group_create 1 (of 20 kills in 17 examples).
@seed(2)
class RunsCrashesAndEdits(RuleBasedStateMachine):
    """See the module docstring. ``stats`` adds up what every example did, for the report."""

    stats: ClassVar[Counter[str]] = Counter()

    def __init__(self) -> None:
        super().__init__()
        self.product: Product | None = None
        self.scratch: Path | None = None
        self.crashed = False

    @initialize(seed=st.integers(0, 3))
    def start(self, seed: int) -> None:
        self.scratch = Path(tempfile.mkdtemp(prefix="safety-stateful-"))
        sim = CountingSimulator(SimulatorConfig(programs={PROGRAM: ENROLLMENTS}, seed=seed, now=NOW))
        sim.start()
        self.paths = [write_policy(self.scratch, text, f"{name}.yaml") for name, text in POLICIES.items()]
        db_url = f"sqlite:///{self.scratch / 'store.db'}"
        with Store.open(db_url):  # migrated up front, so the invariants can read it at once
            pass
        self.product = Product(sim, db_url, self.paths[0])
        self.ids = sim.enrollment_ids(PROGRAM)
        self.edited_at: dict[str, int] = {}  # enrollment -> newest decision id when last edited
        self.crashed = False
        self.stats["examples"] += 1

    @property
    def world(self) -> Product:
        assert self.product is not None
        return self.product

    # -- the person --------------------------------------------------------------------------

    def _edit(self, index: int, **fields: Any) -> None:
        enrollment_id = self.ids[index % len(self.ids)]
        self.world.sim.edit_enrollment(enrollment_id, **fields)
        self.edited_at[enrollment_id] = max_decision_id(self.world.db_url)
        self.stats["person edits"] += 1

    @rule(index=st.integers(0, ENROLLMENTS - 1), status=st.sampled_from(STATUSES))
    def person_sets_status(self, index: int, status: str) -> None:
        self._edit(index, status=status)

    @rule(index=st.integers(0, ENROLLMENTS - 1), capacity=st.sampled_from(CAPACITIES))
    def person_replaces_battery(self, index: int, capacity: int) -> None:
        self._edit(index, devices=_battery(capacity))

    # -- the policy author -------------------------------------------------------------------

    @rule(which=st.integers(0, len(POLICIES) - 1))
    def switch_policy(self, which: int) -> None:
        self.world.policy_path = self.paths[which]
        self.stats["policy switches"] += 1

    # -- runs --------------------------------------------------------------------------------

    @rule(live=st.booleans(), faulty=st.booleans())
    def run_in_process(self, live: bool, faulty: bool) -> None:
        world = self.world
        expire_leases(world.db_url)  # a killed run's lease has long run out by now
        if faulty:
            world.sim.set_faults(FAULTS)
        config = world.settings(lock_ttl_s=60)
        try:
            run_policy(world.policy, config, RunSettings(live=live, now=NOW, concurrency=4))
        except (ApiRetryableError, ApiResponseError):  # what the simulator's faults can cause
            if not faulty:
                raise
            self.stats["runs failed by faults"] += 1
        else:
            if live and self.crashed:
                self.stats["restarts after a kill"] += 1
            if live:
                self.crashed = False
        finally:
            world.sim.clear_faults()
        self.stats[f"{'live' if live else 'dry'} runs{' with faults' if faulty else ''}"] += 1

    def _needed(self) -> list[Decision]:
        """The changes a live run would send now (no faults: the killed runs have none)."""
        evaluator = Evaluator(self.world.policy, NOW, trace=False)
        decisions = [evaluator.evaluate(e) for e in self.world.sim.enrollments(PROGRAM)]
        return [d for d in decisions if d.action is Action.UPDATE]

    def _reachable(self, kind: str, nth: int) -> str:
        """``kind`` (at its ``nth`` occurrence) if the next live run reaches it, else the
        nearest step it does reach: a killed run must really die."""
        needed = self._needed()
        if kind in ("in_flight", "after_patch") and needed:
            return f"{kind}:{min(nth, len(needed))}"
        existing = {g["id"] for g in self.world.sim.groups(PROGRAM)}
        if kind == "after_group_create" and {g for d in needed for g in d.groups_added} - existing:
            return kind
        return "after_planning"  # every live run gets there

    @rule(kind=st.sampled_from(["after_planning", "in_flight", "after_patch", "after_group_create"]),
          nth=st.integers(1, 2))  # fmt: skip
    def killed_run(self, kind: str, nth: int) -> None:
        """A ``crashing_cli.py STEP run --live`` subprocess killed at a step it reaches."""
        expire_leases(self.world.db_url)
        crash_at = self._reachable(kind, nth)
        result = self.world.run(crash_at=crash_at)
        assert result.code == CRASH_EXIT, (crash_at, result.code, result.stderr[-1500:])
        self.crashed = True
        self.stats["kills"] += 1
        self.stats[f"kills at {crash_at.partition(':')[0]}"] += 1

    # -- invariants --------------------------------------------------------------------------

    @invariant()
    def applied_changes_match_the_simulator(self) -> None:
        if self.product is None:
            return
        for enrollment_id, (decision_id, state, body) in newest_live_decisions(self.world.db_url).items():
            if state not in ("applied", "recovered") or body is None:
                continue
            if self.edited_at.get(enrollment_id, 0) >= decision_id:
                continue  # a person changed it after this decision
            current = self.world.sim.enrollment(enrollment_id)
            assert patch_is_applied(body, current), (enrollment_id, decision_id, state, body, current)
            self.stats["applied changes checked"] += 1

    @invariant()
    def at_most_one_open_change_per_enrollment(self) -> None:
        if self.product is None:
            return
        crowded = {e: n for e, n in open_changes_per_enrollment(self.world.db_url).items() if n > 1}
        assert not crowded, crowded

    @invariant()
    def nothing_in_flight_after_a_finished_live_run(self) -> None:
        if self.product is None or self.crashed:
            return
        assert change_states(self.world.db_url)["in_flight"] == 0

    def teardown(self) -> None:
        try:
            if self.product is not None:
                self._converges()
        finally:
            if self.product is not None:
                self.product.sim.stop()
            if self.scratch is not None:
                shutil.rmtree(self.scratch, ignore_errors=True)

    def _converges(self) -> None:
        world = self.world
        world.sim.clear_faults()
        expire_leases(world.db_url)
        config = world.settings()
        live = run_policy(world.policy, config, RunSettings(live=True, now=NOW))
        assert live.failed == 0, live.change_states
        if self.crashed:
            self.stats["restarts after a kill"] += 1
        assert pending_changes(world.sim, world.policy) == []
        dry = world.dry_run()
        assert [d.enrollment_id for d in dry.decisions if d.action is Action.UPDATE] == []
        with open_store(world.db_url) as store:
            assert store.open_changes(PROGRAM) == []
        assert change_states(world.db_url)["in_flight"] == 0
        assert not open_changes_per_enrollment(world.db_url)
        self.stats["converged"] += 1


SETTINGS = settings(
    max_examples=15,
    derandomize=True,  # with the class's @seed: the same examples every run, the counts below not luck
    stateful_step_count=8,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


@pytest.mark.slow
def test_runs_crashes_and_edits_keep_the_store_and_the_program_consistent() -> None:
    RunsCrashesAndEdits.stats.clear()
    run_state_machine_as_test(RunsCrashesAndEdits, settings=SETTINGS)
    stats = RunsCrashesAndEdits.stats
    print(f"\n[stateful] {dict(stats)}")
    # How many steps kill a run depends on what Hypothesis draws; at least one at each step below.
    assert stats["kills"] >= 2, dict(stats)
    assert stats["restarts after a kill"] >= 1, dict(stats)
    assert stats["converged"] == stats["examples"], dict(stats)
    assert stats["kills at in_flight"] > 0, dict(stats)
    assert stats["kills at after_patch"] > 0, dict(stats)
