"""Decisions round-trip through the store unchanged, and odd text never fails a batch."""

from __future__ import annotations

import math
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.policy.decision import Action, Decision, RuleTrace
from engine.store import RunMode, Store

from .conftest import T0, make_decision

# PostgreSQL cannot hold NUL, and no driver encodes a lone surrogate: the store replaces
# both (see test_odd_text_is_stored_replaced), so the exact round trip is over other text.
texts = st.text(st.characters(exclude_categories=("Cs",), exclude_characters="\x00"), max_size=12)
optional_texts = st.none() | texts
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | texts,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(texts, children, max_size=3),
    max_leaves=8,
)
traces = st.builds(
    RuleTrace,
    rule_id=texts,
    kind=st.sampled_from(["rule", "group"]),
    matched=st.booleans(),
    reads=st.dictionaries(texts, json_values, max_size=3),
)
decisions = st.builds(
    Decision,
    enrollment_id=optional_texts,
    current_status=optional_texts,
    status=optional_texts | st.sampled_from(["ACTIVE", "REJECTED", "PAUSED"]),
    reason=optional_texts,
    rule_id=optional_texts,
    group_ids=st.lists(texts, max_size=3),
    current_group_ids=st.lists(texts, max_size=3),
    groups_added=st.lists(texts, max_size=3),
    groups_removed=st.lists(texts, max_size=3),
    action=st.sampled_from(list(Action)),
    warnings=st.lists(texts, max_size=2),
    trace=st.lists(traces, max_size=2),
    error=optional_texts,
    updated_at=optional_texts,
    facts_fingerprint=optional_texts,
)


@settings(
    max_examples=40,
    deadline=None,
    # One migrated database serves every example: each example stores into a new run.
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(batch=st.lists(decisions, min_size=1, max_size=4), mode=st.sampled_from(list(RunMode)))
def test_decisions_round_trip_unchanged(store: Store, batch: list[Decision], mode: RunMode) -> None:
    run_id = store.start_run("prog-rt", mode, None, T0)
    store.add_decisions(run_id, "prog-rt", batch)

    stored = store.run_decisions(run_id)

    assert [record.decision for record in stored] == batch
    for record in stored:
        assert store.decision_by_id(record.id) == record


def test_odd_text_is_stored_replaced(store: Store) -> None:
    """NUL and lone surrogates (from a lenient JSON parse) become U+FFFD on every backend."""
    odd = make_decision(
        "enr-\x00-1",
        reason="ok\ud800",
        group_ids=["zone\x00a"],
        warnings=["w\udfff"],
        trace=[RuleTrace("r\x00", "rule", True, {"k\x00": "v\ud800", "n": math.nan, "t": (1, 2)})],
    )
    run_id = store.start_run("prog-odd", "live", None, T0)
    store.add_decisions(run_id, "prog-odd", [odd])

    (record,) = store.run_decisions(run_id)

    assert record.decision.enrollment_id == "enr-\ufffd-1"
    assert record.decision.reason == "ok\ufffd"
    assert record.decision.group_ids == ["zone\ufffda"]
    assert record.decision.warnings == ["w\ufffd"]
    reads: dict[str, Any] = record.decision.trace[0].reads
    assert reads == {"k\ufffd": "v\ufffd", "n": "nan", "t": [1, 2]}
    assert record.decision.trace[0].rule_id == "r\ufffd"


def test_surrogate_pairs_are_joined_not_replaced(store: Store) -> None:
    run_id = store.start_run("prog-odd", "dry_run", None, T0)
    store.add_decisions(run_id, "prog-odd", [make_decision("enr-1", reason="smile \ud83d\ude00")])

    (record,) = store.run_decisions(run_id)

    assert record.decision.reason == "smile \U0001f600"


def test_odd_text_in_outcomes_and_counts_is_stored_replaced(store: Store) -> None:
    run_id = store.start_run("prog-odd", "live", None, T0, holder="host\x00:1")
    store.add_decisions(run_id, "prog-odd", [make_decision("enr-1")])
    (change,) = store.planned_changes(run_id)

    store.record_outcome(
        change.decision_id,
        "failed_permanent",
        api_error_code="bad\x00code",
        api_error_locations=[["body", "status\ud800"], "site.x\x00"],
        error_message="status changed to \x00",
    )
    store.finish_run(run_id, "completed", {"transitions": {"SUBMITTED\x00 -> ACTIVE": 1}}, "done\ud800")

    record = store.decision_by_id(change.decision_id)
    run = store.run(run_id)
    assert record is not None
    assert run is not None
    assert record.api_error_code == "bad\ufffdcode"
    assert record.api_error_locations == [["body", "status\ufffd"], "site.x\ufffd"]
    assert record.error_message == "status changed to \ufffd"
    assert run.counts == {"transitions": {"SUBMITTED\ufffd -> ACTIVE": 1}}
    assert run.message == "done\ufffd"
    assert run.holder == "host\ufffd:1"
