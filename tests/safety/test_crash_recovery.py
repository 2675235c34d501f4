"""A live run killed at any step is finished by the next run: nothing twice, nothing lost.

Each test kills a real ``cli.py run --live`` process at a named step (``tests/crashing_cli.py``:
the real CLI with a checkpoint that calls ``os._exit(137)``: no ``finally``, no rollback, no
goodbye) while the simulator lives on in
this process, then runs again and checks the invariants of ``conftest.assert_converged``.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable

import pytest

from engine.flip.client import ApiSettings
from engine.sandbox.simulator import FaultConfig

from .conftest import (
    BACKENDS,
    CRASH_EXIT,
    NEW_GROUP,
    PROGRAM,
    Product,
    assert_converged,
    change_states,
    pending_changes,
    run_outcomes,
)

STEPS = ["after_planning", "in_flight", "after_patch", "after_group_create", "in_flight:5", "after_patch:5"]
# On PostgreSQL: a kill before the PATCH, one after it, and one after creating a group.
PG_STEPS = ["in_flight:5", "after_patch", "after_group_create"]


def _crash_then_recover(product: Product, step: str) -> dict[str, object]:
    assert pending_changes(product.sim, product.policy), "the test data needs changes to make"
    killed = product.run(crash_at=step)
    assert killed.code == CRASH_EXIT, f"the run was not killed at {step}: {killed.stderr[-800:]}"
    left = change_states(product.db_url)
    if step.startswith("after_planning"):
        assert left["planned"] > 0, left
    if step.startswith(("in_flight", "after_patch")):
        assert left["in_flight"] >= 1, f"the killed run left nothing in flight: {left}"
    if step == "after_group_create":
        assert NEW_GROUP in {g["id"] for g in product.sim.groups(PROGRAM)}

    again = product.run()
    assert again.code == 0, f"the run after the crash failed: {again.stderr[-1500:]}"

    summary = assert_converged(product)
    if step.startswith("after_patch"):
        # The PATCH reached the API before the kill: the next run finds it applied
        # instead of sending it again.
        assert summary["states"].get("recovered", 0) >= 1, summary
    groups = [g["id"] for g in product.sim.groups(PROGRAM)]
    assert groups.count(NEW_GROUP) == 1
    summary.update(runs=product.runs, kills=product.kills, log=product.log)
    print(f"\n[crash {step}] {summary}")
    return summary


@pytest.mark.parametrize("step", STEPS)
def test_run_killed_at_a_step_is_completed_by_the_next_run_on_sqlite(
    step: str, make_product: Callable[..., Product]
) -> None:
    _crash_then_recover(make_product("sqlite"), step)


@pytest.mark.postgres
@pytest.mark.parametrize("step", PG_STEPS)
def test_run_killed_at_a_step_is_completed_by_the_next_run_on_postgresql(
    step: str, make_product: Callable[..., Product]
) -> None:
    _crash_then_recover(make_product("postgresql"), step)


@pytest.mark.parametrize("backend", BACKENDS)
def test_the_next_run_records_a_killed_run_as_interrupted(
    backend: str, make_product: Callable[..., Product]
) -> None:
    """A killed run cannot record its own end; the run that finds it must, or ``runs``
    shows it ``running`` forever."""
    product = make_product(backend, count=40)
    assert product.run(crash_at="in_flight").code == CRASH_EXIT
    assert product.run().code == 0
    outcomes = run_outcomes(product.db_url)
    assert [o for _id, _mode, o in outcomes] == ["interrupted", "completed"], outcomes


# --- many kills under faults ------------------------------------------------------------------

KILL_ROUNDS = 5
MAX_ATTEMPTS = ApiSettings.__dataclass_fields__["max_attempts"].default  # what the CLI's client uses
FAULTS = FaultConfig(
    error_rate=0.04,
    rate_limit=0.02,
    retry_after_s=0,
    drop=0.02,
    timeout=0.02,
    hang_s=0.05,
    seed=2026,
)


def _random_crash(rng: random.Random, changes: int, group_exists: bool) -> str:
    """A step the run will reach: a group is created once only, and N stays well below the
    number of changes left so that every kill leaves work for the next run."""
    steps = ["after_planning", "in_flight", "after_patch"] + ([] if group_exists else ["after_group_create"])
    step = rng.choice(steps)
    if step in ("in_flight", "after_patch"):
        return f"{step}:{rng.randint(1, max(1, changes // 8))}"
    return step


@pytest.mark.slow
@pytest.mark.parametrize("backend", BACKENDS)
def test_a_thousand_enrollments_under_faults_survive_repeated_kills(
    backend: str, make_product: Callable[..., Product]
) -> None:
    product = make_product(backend, count=1000, seed=17, faults=FAULTS)
    rng = random.Random(4242)
    started = time.monotonic()
    attempted: list[str] = []
    for _round in range(KILL_ROUNDS):
        changes = len(pending_changes(product.sim, product.policy))
        assert changes, f"nothing left to change after {attempted}"
        group_exists = NEW_GROUP in {g["id"] for g in product.sim.groups(PROGRAM)}
        crash_at = _random_crash(rng, changes, group_exists)
        attempted.append(crash_at)
        result = product.run(crash_at=crash_at)
        assert result.code == CRASH_EXIT, f"{crash_at}: exit {result.code}: {result.stderr[-1500:]}"
    product.sim.clear_faults()
    final = product.run()
    assert final.code == 0, final.stderr[-1500:]
    # Retries under faults are extra requests, never extra changes.
    summary = assert_converged(product, max_received_patches=2 * MAX_ATTEMPTS)
    elapsed = time.monotonic() - started
    print(
        f"\n[1000 under faults, {backend}] {product.runs} runs, {product.kills} kills "
        f"({attempted}), {elapsed:.0f}s: {summary}\n" + "\n".join(product.log)
    )
    assert product.kills == KILL_ROUNDS
