"""Speed-ups must not change decisions: planned (partial) facts vs every fact, on generated data."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from engine.policy.document import load_policy
from engine.policy.evaluator import Evaluator
from engine.sandbox.generator import generate_enrollments

ROOT = Path(__file__).resolve().parent.parent
NOW = datetime(2026, 11, 25, tzinfo=UTC)
POLICIES = [
    ROOT / "rules" / "tx_residential_battery.yaml",
    ROOT / "rules" / "ca_ev_charging.yaml",
    ROOT / "bench" / "policies" / "bench30.yaml",
]


@pytest.mark.parametrize("path", POLICIES, ids=lambda p: p.stem)
@pytest.mark.parametrize("program", ["prog-tx-residential-battery", "prog-ca-ev-charging"])
def test_planned_facts_decide_exactly_like_all_facts(path: Path, program: str) -> None:
    policy = load_policy(path)
    fast = Evaluator(policy, NOW, trace=False)
    reference = Evaluator(policy, NOW, trace=False, full_facts=True)
    compared = 0
    for raw in generate_enrollments(program, 1500, seed=11, now=NOW):
        got, want = fast.evaluate(raw), reference.evaluate(raw)
        assert (got.status, got.rule_id, got.group_ids, got.action, got.reason, got.error) == (
            want.status, want.rule_id, want.group_ids, want.action, want.reason, want.error,
        ), raw.get("id")  # fmt: skip
        compared += got.action.value != "skip"
    assert compared > 300


def test_fingerprint_moves_with_read_facts_only() -> None:
    policy = load_policy(POLICIES[0])
    evaluator = Evaluator(policy, NOW, trace=False)
    raw = next(r for r in generate_enrollments("prog-tx-residential-battery", 50, seed=3, now=NOW)
               if r.get("status") == "SUBMITTED" and r.get("devices"))  # fmt: skip
    base = evaluator.evaluate(raw).facts_fingerprint
    unread = {**raw, "site": {**raw["site"], "email": "changed@example.com"}}
    assert evaluator.evaluate(unread).facts_fingerprint == base
    read = {**raw, "site": {**raw["site"], "state_code": "OK"}}
    assert evaluator.evaluate(read).facts_fingerprint != base
