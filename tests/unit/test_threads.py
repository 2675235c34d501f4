"""Native JsonLogic sessions belong to their thread: evaluators may be shared and freed anywhere."""

from __future__ import annotations

import gc
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

from engine.policy.document import load_policy
from engine.policy.evaluator import Evaluator
from engine.sandbox.generator import generate_enrollments

POLICY = Path(__file__).resolve().parents[2] / "rules" / "tx_residential_battery.yaml"
NOW = datetime(2026, 11, 25, tzinfo=UTC)


def test_one_evaluator_shared_by_threads_decides_like_one_thread() -> None:
    policy = load_policy(POLICY)
    raws = list(generate_enrollments("prog-tx-residential-battery", 400, seed=5, now=NOW))
    expected = [Evaluator(policy, NOW).evaluate(raw) for raw in raws]
    shared = Evaluator(policy, NOW)
    with ThreadPoolExecutor(max_workers=8) as pool:
        got = list(pool.map(shared.evaluate, raws))
    assert got == expected


def test_an_evaluator_made_in_a_thread_can_be_freed_in_another() -> None:
    # filterwarnings=error turns an "unsendable session dropped on another thread" into a failure.
    policy = load_policy(POLICY)
    made: list[Evaluator] = []

    def make() -> None:
        evaluator = Evaluator(policy, NOW)
        evaluator.evaluate({"id": "x", "status": "SUBMITTED"})
        made.append(evaluator)

    worker = threading.Thread(target=make)
    worker.start()
    worker.join()
    made.clear()
    gc.collect()
