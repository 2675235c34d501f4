"""``apply`` and ``review approve`` killed at any step are finished by running them again.

Each test kills a real CLI process at a named step (``tests/crashing_cli.py``: a hard exit,
no cleanup),
then runs the same command again and checks: every change ends applied, stale or failed
with its reason (none left planned or in flight); no enrollment was changed by two PATCHes;
and a plan never applies twice (a third ``apply`` is refused).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from cli_process import run_cli
from crashing_cli import crashing_entry
from sqlalchemy import select

from engine.store.schema import DecisionRow

from .conftest import CRASH_EXIT, NOW_ARG, Product, open_store, tx_policy_text

pytestmark = pytest.mark.slow  # a plan, a kill and two reruns per step: CI runs them

SETTLED = {"applied", "recovered", "stale", "failed_permanent", "failed_retryable", "deferred", "held"}
APPLY_STEPS = [
    "after_claim",
    "after_group_create",
    "in_flight",
    "after_patch",
    "in_flight:5",
    "after_patch:5",
]
PG_APPLY_STEPS = ["after_claim", "in_flight:5", "after_patch"]
APPROVE_STEPS = ["after_approval", "in_flight", "after_patch", "in_flight:2"]
REVIEW = "review:\n  require_approval: [REJECTED]\nlimits:"


def cli(product: Product, *args: str, crash_at: str | None = None) -> Any:
    entry = crashing_entry(crash_at) if crash_at else None
    result = run_cli([*args, "--db", product.db_url], product.env, entry=entry)
    product.runs += 1
    if result.code == CRASH_EXIT:
        product.kills += 1
        product.let_lease_expire()
    return result


def states_of(product: Product, decision_ids: set[int]) -> dict[int, str]:
    query = select(DecisionRow.id, DecisionRow.change_state).where(DecisionRow.id.in_(decision_ids))
    with open_store(product.db_url) as store, store.engine.connect() as connection:
        return {row[0]: row[1] for row in connection.execute(query)}


def assert_settled_once(product: Product, changes: dict[int, tuple[str, dict[str, Any]]]) -> dict[str, int]:
    states = states_of(product, set(changes))
    unsettled = {i: s for i, s in states.items() if s not in SETTLED}
    assert not unsettled, f"changes left unsettled: {unsettled}"
    for decision_id, (enrollment_id, body) in changes.items():
        assert product.sim.applied_patches[enrollment_id] <= 1, f"{enrollment_id} changed twice"
        assert product.sim.patch_count(enrollment_id) <= 2, f"{enrollment_id} sent more than twice"
        if states[decision_id] in ("applied", "recovered"):
            now = product.sim.enrollment(enrollment_id)
            assert "status" not in body or now["status"] == body["status"], enrollment_id
    counts: dict[str, int] = {}
    for state in states.values():
        counts[state] = counts.get(state, 0) + 1
    return counts


def plan_changes(product: Product) -> dict[int, tuple[str, dict[str, Any]]]:
    with open_store(product.db_url) as store:
        plan = store.plan(1)
        assert plan is not None
        return {r.id: (r.decision.enrollment_id, r.planned_patch) for r in store.run_changes(plan.run_id)}


def _apply_killed_then_finished(product: Product, step: str) -> None:
    planned = cli(product, "plan", "--rules", str(product.policy_path), "--now", NOW_ARG)
    assert planned.code == 0, planned.stderr
    changes = plan_changes(product)
    assert len(changes) > 6
    killed = cli(product, "apply", "1", "--yes", crash_at=step)
    assert killed.code == CRASH_EXIT, f"not killed at {step}: {killed.stderr[-800:]}"
    again = cli(product, "apply", "1", "--yes")
    assert again.code == 0, again.stderr[-1500:]
    counts = assert_settled_once(product, changes)
    assert counts.get("applied", 0) + counts.get("recovered", 0) == len(changes), counts
    third = cli(product, "apply", "1", "--yes")
    assert third.code == 2
    assert "already applied" in third.stderr
    print(f"\n[apply killed at {step}] {counts}")


@pytest.mark.parametrize("step", APPLY_STEPS)
def test_apply_killed_at_a_step_is_finished_by_the_next_apply_on_sqlite(
    step: str, make_product: Callable[..., Product]
) -> None:
    _apply_killed_then_finished(make_product("sqlite", count=60), step)


@pytest.mark.postgres
@pytest.mark.parametrize("step", PG_APPLY_STEPS)
def test_apply_killed_at_a_step_is_finished_by_the_next_apply_on_postgresql(
    step: str, make_product: Callable[..., Product]
) -> None:
    _apply_killed_then_finished(make_product("postgresql", count=60), step)


def _approve_killed_then_finished(product: Product, step: str) -> None:
    live = cli(product, "run", "--rules", str(product.policy_path), "--now", NOW_ARG, "--live", "--yes")
    assert live.code == 0, live.stderr[-1500:]
    with open_store(product.db_url) as store:
        waiting = {r.decision_id: (r.enrollment_id, r.body) for r in store.review_queue()}
    assert len(waiting) >= 2, "the test data needs rejections to approve"
    killed = cli(product, "review", "approve", "--all", "--by", "bob", "--yes", crash_at=step)
    assert killed.code == CRASH_EXIT, f"not killed at {step}: {killed.stderr[-800:]}"
    again = cli(product, "review", "approve", "--all", "--by", "bob", "--yes")
    assert again.code == 0, again.stderr[-1500:]
    counts = assert_settled_once(product, waiting)
    assert counts.get("applied", 0) + counts.get("recovered", 0) == len(waiting), counts
    print(f"\n[approve killed at {step}] {counts}")


@pytest.mark.parametrize("step", APPROVE_STEPS)
def test_approve_killed_at_a_step_is_finished_by_approving_again_on_sqlite(
    step: str, make_product: Callable[..., Product]
) -> None:
    product = make_product("sqlite", count=80, policy_text=tx_policy_text().replace("limits:", REVIEW, 1))
    _approve_killed_then_finished(product, step)


@pytest.mark.postgres
@pytest.mark.parametrize("step", ["after_approval", "in_flight:2"])
def test_approve_killed_at_a_step_is_finished_by_approving_again_on_postgresql(
    step: str, make_product: Callable[..., Product]
) -> None:
    product = make_product("postgresql", count=80, policy_text=tx_policy_text().replace("limits:", REVIEW, 1))
    _approve_killed_then_finished(product, step)


@pytest.mark.parametrize(
    ("backend", "step"),
    [
        ("sqlite", "after_approval"),
        ("sqlite", "in_flight:2"),
        pytest.param("postgresql", "in_flight:2", marks=pytest.mark.postgres),
    ],
)
def test_an_approval_killed_before_the_next_scheduled_run_is_sent_once_by_that_run(
    backend: str, step: str, make_product: Callable[..., Product]
) -> None:
    """Nobody reruns the killed approval; the next scheduled live run comes first. That run
    sends what the person approved (what the kill left unsent) under the same approval,
    once, without asking again; a later ``review approve --all`` finds nothing to send."""
    product = make_product(backend, count=80, policy_text=tx_policy_text().replace("limits:", REVIEW, 1))
    live = ("run", "--rules", str(product.policy_path), "--now", NOW_ARG, "--live", "--yes")
    assert cli(product, *live).code == 0
    with open_store(product.db_url) as store:
        waiting = {r.decision_id: r.enrollment_id for r in store.review_queue()}
    assert len(waiting) >= 2, "the test data needs rejections to approve"
    killed = cli(product, "review", "approve", "--all", "--by", "bob", "--yes", crash_at=step)
    assert killed.code == CRASH_EXIT, f"not killed at {step}: {killed.stderr[-800:]}"
    sent_before = {e for e in waiting.values() if product.sim.applied_patches[e]}

    scheduled = cli(product, *live)

    assert scheduled.code == 0, scheduled.stderr[-1500:]
    assert "await approval" not in scheduled.stderr, "an approved change is not asked for again"
    for enrollment_id in waiting.values():
        assert product.sim.enrollment(enrollment_id)["status"] == "REJECTED", enrollment_id
        assert product.sim.applied_patches[enrollment_id] == 1, f"{enrollment_id} changed once"
    old = states_of(product, set(waiting))
    for decision_id, enrollment_id in waiting.items():
        # Sent before the kill: recorded then, or found applied by the run; else re-planned.
        expected = {"applied", "recovered"} if enrollment_id in sent_before else {"superseded"}
        assert old[decision_id] in expected, (enrollment_id, old[decision_id])
    resent = set(waiting.values()) - sent_before
    query = select(DecisionRow.enrollment_id, DecisionRow.change_state, DecisionRow.reviewed_by).where(
        DecisionRow.run_id == 3, DecisionRow.enrollment_id.in_(resent)
    )
    with open_store(product.db_url) as store, store.engine.connect() as connection:
        carried = {row[0]: (row[1], row[2]) for row in connection.execute(query)}
        assert list(store.review_queue()) == []
    assert carried == dict.fromkeys(resent, ("applied", "bob")), "sent under bob's approval"
    patches = product.sim.request_counts().get("PATCH", 0)
    later = cli(product, "review", "approve", "--all", "--by", "bob", "--yes")
    assert "Traceback" not in later.stderr
    assert product.sim.request_counts().get("PATCH", 0) == patches
