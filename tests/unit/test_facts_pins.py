"""Details of the facts that mutation testing found no test pinning (TESTING.md)."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

from engine.policy.facts import (
    Conversions,
    FactsBuilder,
    FactsPlan,
    device_totals,
    fingerprint,
    program_attributes,
)

NOW = datetime(2026, 11, 25, tzinfo=UTC)
HEX_128_BITS = re.compile("[0-9a-f]{32}")


def test_program_attributes_convert_text_once_and_other_values_every_time() -> None:
    raw = [
        {"name": "solar", "type": "Boolean", "value": "yes"},
        {"name": "count", "type": "integer", "value": "3"},
        {"name": "day", "type": "date", "value": "2026-03-14T10:00:00Z"},
        {"name": "size", "type": "number", "value": 7},  # not text: converted, not kept
        {"name": "tags", "value": ["a", 1]},  # no type is text; a list is never a memo key
    ]
    memo: Conversions = {}

    assert program_attributes(raw, [], memo=memo) == {
        "solar": True,
        "count": 3,
        "day": "2026-03-14",
        "size": 7,
        "tags": '["a", 1]',
    }
    assert memo == {
        ("Boolean", "yes"): True,
        ("integer", "3"): 3,
        ("date", "2026-03-14T10:00:00Z"): "2026-03-14",
    }


def test_a_conversion_in_the_memo_is_not_done_again() -> None:
    memo: Conversions = {("boolean", "yes"): "kept"}
    raw = [{"name": "a", "type": "boolean", "value": "yes"}]
    assert program_attributes(raw, [], memo=memo) == {"a": "kept"}


def test_junk_and_unread_attributes_before_a_read_one_are_skipped() -> None:
    raw = [{"value": "no name"}, {"name": "other", "value": "x"}, {"name": "tariff", "value": "TOU"}]
    assert program_attributes(raw, [], frozenset({"tariff"})) == {"tariff": "TOU"}


def test_totals_keep_integers_up_to_2_to_the_53() -> None:
    devices = [{"attributes": {"big": 2**53, "low": -(2**53)}}]
    assert device_totals(devices) == {"big": 2**53, "low": -(2**53), "device_count": 1}


def test_a_plan_builds_only_the_facts_it_reads() -> None:
    plan = FactsPlan(
        full=False, device_age=False, totals_keys=frozenset({"cap"}), program_names=frozenset({"tariff"})
    )
    devices = [{"install_date": "2026-01-01", "attributes": {"cap": 5, "label": "n/a"}}]
    raw = {
        "devices": devices,
        "program_specific_attributes": [
            {"name": "tariff", "value": "TOU"},
            {"name": "solar", "type": "boolean", "value": "maybe"},
        ],
    }

    facts, warnings = FactsBuilder(NOW, plan).build(raw)

    assert facts["devices"] == devices  # no age_days
    assert facts["totals"] == {"cap": 5, "device_count": 1}
    assert facts["program"] == {"tariff": "TOU"}
    assert warnings == []  # nothing about values the policy does not read


RAW: dict[str, Any] = {
    "id": "e1",
    "status_reason": "new",
    "site": {"zip_code": "77002", "city": "Houston"},
    "devices": [{"type": "BATTERY"}],
    "program_specific_attributes": [{"name": "tariff", "value": "TOU"}],
}


def test_a_full_plan_fingerprints_the_site_the_devices_and_the_program_attributes() -> None:
    base = fingerprint(RAW, FactsPlan())

    assert HEX_128_BITS.fullmatch(base)
    for key in ("site", "devices", "program_specific_attributes"):
        assert fingerprint({**RAW, key: []}, FactsPlan()) != base, key
    assert fingerprint({**RAW, "id": "e2", "status_reason": "old"}, FactsPlan()) == base


def test_a_narrow_plan_fingerprints_only_what_it_reads() -> None:
    plan = FactsPlan(full=False, site_keys=("zip_code",), top_keys=("status_reason",))
    base = fingerprint(RAW, plan)

    assert HEX_128_BITS.fullmatch(base)
    assert fingerprint({**RAW, "status_reason": "old"}, plan) != base
    assert fingerprint({**RAW, "site": {"zip_code": "77003", "city": "Houston"}}, plan) != base
    for key, value in [("devices", []), ("program_specific_attributes", []), ("site", {"zip_code": "77002"})]:
        assert fingerprint({**RAW, key: value}, plan) == base, key


class _OddText:
    """A caller's own object whose text holds a lone surrogate (no UTF-8 for it)."""

    def __repr__(self) -> str:
        return "odd \ud800"


def test_values_marshal_cannot_take_are_fingerprinted_by_their_text() -> None:
    first = fingerprint({"site": {"when": datetime(2026, 1, 1)}}, FactsPlan())
    second = fingerprint({"site": {"when": datetime(2026, 1, 2)}}, FactsPlan())
    odd = fingerprint({"site": {"x": _OddText()}}, FactsPlan())

    assert HEX_128_BITS.fullmatch(first)
    assert first != second
    assert odd == fingerprint({"site": {"x": _OddText()}}, FactsPlan())
    assert odd not in (first, second)
