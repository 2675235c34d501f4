"""Facts: what a policy can read about one enrollment, built from whatever the API sent."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from engine.policy.facts import (
    FactsBuilder,
    convert_attribute,
    device_totals,
    group_ids_of,
    program_attributes,
)
from engine.policy.logic import lookup


@pytest.fixture
def builder(now: datetime) -> FactsBuilder:
    return FactsBuilder(now)


# --- program attributes ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "value", "expected"),
    [
        *[("boolean", word, True) for word in ("true", "TRUE", "True", "yes", "YES", "Yes", "1", " yes ")],
        *[("boolean", word, True) for word in ("y", "Y", "on", "On", "ON", " on ")],
        *[("boolean", word, False) for word in ("false", "FALSE", "no", "No", "NO", "0")],
        *[("boolean", word, False) for word in ("n", "N", "off", "Off", "OFF", " off ")],
        *[("boolean", word, None) for word in ("ye", "of", "nn", "o", "t", "f", "none")],
        ("boolean", True, True),
        ("boolean", False, False),
        ("boolean", 1, True),
        ("boolean", 0, False),
        ("Boolean", "yes", True),
        ("boolean", "maybe", None),
        ("boolean", "", None),
        ("boolean", 2, None),
        ("number", "13500", 13500),
        ("number", "13.5", 13.5),
        ("number", " 42 ", 42),
        ("number", "1,000.5", 1000.5),
        ("number", 7, 7),
        ("number", 2.5, 2.5),
        ("number", "-3", -3),
        ("number", "abc", None),
        ("number", "", None),
        ("number", "nan", None),
        ("number", "inf", None),
        ("number", float("inf"), None),
        ("number", True, None),
        ("number", [1], None),
        ("float", "1.25", 1.25),
        ("decimal", "3", 3),
        ("integer", "2", 2),
        ("integer", "2.0", 2),
        ("integer", 3, 3),
        ("integer", 3.0, 3),
        ("int", "5", 5),
        ("integer", "1.5", None),
        ("integer", 1.5, None),
        ("integer", "two", None),
        ("date", "2026-03-14", "2026-03-14"),
        ("date", "2026-03-14T10:00:00Z", "2026-03-14"),
        ("date", "2026-03-14T23:30:00-05:00", "2026-03-15"),
        ("date", "14/03/2026", None),
        ("date", "2026-02-30", None),
        ("date", 20260314, None),
        ("date", "", None),
        ("string", "RES-TOU", "RES-TOU"),
        ("string", 5, "5"),
        ("string", {"a": 1}, '{"a": 1}'),
        ("unknown-kind", "as is", "as is"),
        ("string", None, None),
        ("integer", None, None),
    ],
)
def test_convert_attribute(kind: str, value: Any, expected: Any) -> None:
    converted = convert_attribute(kind.lower(), value)
    assert converted == expected
    assert type(converted) is type(expected)


def test_program_attributes_by_name_with_warnings() -> None:
    warnings: list[str] = []
    raw = [
        {"name": "has_solar", "type": "boolean", "value": "Yes"},
        {"name": "vehicles", "type": "integer", "value": "1.5"},
        {"name": "start", "type": "date", "value": "10/11/2026"},
        {"name": "empty", "type": "number", "value": ""},
        {"name": "untyped", "value": "x"},
        {"name": "null_type", "type": None, "value": "y"},
        {"name": "BIG", "type": "NUMBER", "value": "12"},
    ]
    assert program_attributes(raw, warnings) == {
        "has_solar": True,
        "vehicles": None,
        "start": None,
        "empty": None,
        "untyped": "x",
        "null_type": "y",
        "BIG": 12,
    }
    assert warnings == [
        "program.vehicles: '1.5' is not a valid integer; treated as null",
        "program.start: '10/11/2026' is not a valid date; treated as null",
    ]


@pytest.mark.parametrize("raw", [None, "text", 5, {"name": "x"}, [None, 1, "x", {"value": 1}, {"name": 5}]])
def test_program_attributes_ignore_junk(raw: Any) -> None:
    warnings: list[str] = []
    assert program_attributes(raw, warnings) == {}
    assert warnings == []


def test_later_attribute_with_the_same_name_wins() -> None:
    raw = [{"name": "a", "value": "first"}, {"name": "a", "value": "second"}]
    assert program_attributes(raw, []) == {"a": "second"}


# --- device totals ---------------------------------------------------------------------------


def test_totals_sum_numeric_attributes() -> None:
    devices = [
        {"attributes": {"battery_capacity_wh": 5000, "power": 3840.5, "label": "a"}},
        {"attributes": {"battery_capacity_wh": 8000, "power": 1000}},
        {"attributes": None},
        {},
    ]
    totals = device_totals(devices)
    assert totals == {"battery_capacity_wh": 13000, "power": 4840.5, "device_count": 4}


def test_totals_leave_out_text_bool_null_and_non_finite_values() -> None:
    warnings: list[str] = []
    devices = [
        {"attributes": {"cap": 100, "flag": True, "other": None, "bad": float("nan"), "list": [1]}},
        {"attributes": {"cap": "13500", "flag": False}},
        {"attributes": {"cap": "unknown"}},
    ]
    totals = device_totals(devices, warnings)
    assert totals == {"cap": 100, "device_count": 3}
    assert warnings == [
        "devices.1.attributes.cap: '13500' is not a number; left out of totals",
        "devices.2.attributes.cap: 'unknown' is not a number; left out of totals",
    ]


def test_totals_without_devices() -> None:
    assert device_totals([]) == {"device_count": 0}


# --- the facts of one enrollment ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("install_date", "age"),
    [
        ("2026-11-24", 1),
        ("2026-11-25T23:59:59Z", 0),
        ("2026-11-26", -1),
        ("2025-11-25", 365),
        ("2023-05-01T00:00:00Z", 1304),
        ("2026-11-24T23:00:00-05:00", 0),
        ("02/22/2022", None),
        ("", None),
        (None, None),
        (20230501, None),
    ],
)
def test_device_age_in_whole_days(builder: FactsBuilder, install_date: Any, age: int | None) -> None:
    facts, _ = builder.build({"devices": [{"install_date": install_date}]})
    assert facts["devices"][0]["age_days"] == age


def test_now_is_iso_utc() -> None:
    moment = datetime(2026, 11, 25, 1, 2, 3, 456, tzinfo=UTC)
    facts, _ = FactsBuilder(moment).build({})
    assert facts["now"] == "2026-11-25T01:02:03Z"


def test_enrollment_fields_pass_through(builder: FactsBuilder) -> None:
    raw = {"id": "e1", "status": "SUBMITTED", "custom": {"nested": [1, 2]}, "site": {"state_code": "TX"}}
    facts, warnings = builder.build(raw)
    assert facts["id"] == "e1"
    assert facts["status"] == "SUBMITTED"
    assert facts["custom"] == {"nested": [1, 2]}
    assert facts["site"]["state_code"] == "TX"
    assert warnings == []


def test_build_does_not_change_the_raw_enrollment(builder: FactsBuilder) -> None:
    raw = {"site": {"groups": [{"id": "A"}]}, "devices": [{"install_date": "2026-01-01"}]}
    builder.build(raw)
    assert raw == {"site": {"groups": [{"id": "A"}]}, "devices": [{"install_date": "2026-01-01"}]}


def test_group_ids_keep_the_api_order_and_skip_junk() -> None:
    site = {"groups": [{"id": "B"}, {"id": 5}, "C", None, {"name": "no id"}, {"id": "A", "name": "x"}]}
    assert group_ids_of(site) == ["B", "A"]
    assert group_ids_of({}) == []
    assert group_ids_of({"groups": "A"}) == []


def test_site_group_ids_are_derived_not_trusted(builder: FactsBuilder) -> None:
    facts, _ = builder.build({"site": {"group_ids": ["FORGED"], "groups": [{"id": "REAL"}]}})
    assert facts["site"]["group_ids"] == ["REAL"]


def test_derived_roots_replace_what_was_sent(builder: FactsBuilder) -> None:
    sent = {"now": "yesterday", "totals": {"x": 1}, "program": {"y": 2}, "decision": {"status": "ACTIVE"}}
    facts, _ = builder.build(sent)
    assert "decision" not in facts  # reserved for group rules
    assert facts["now"] == "2026-11-25T00:00:00Z"
    assert facts["totals"] == {"device_count": 0}
    assert facts["program"] == {}


@pytest.mark.parametrize(
    "raw",
    [
        {},
        {"site": None, "devices": None, "program_specific_attributes": None},
        {"site": "TX", "devices": "battery", "program_specific_attributes": "x"},
        {"site": [], "devices": {"type": "BATTERY"}, "program_specific_attributes": {}},
        {"site": {"groups": None}, "devices": [None, 1, "x", [], {"type": "BATTERY"}]},
    ],
)
def test_messy_inputs_become_empty_values(builder: FactsBuilder, raw: dict[str, Any]) -> None:
    facts, warnings = builder.build(raw)
    assert isinstance(facts["site"], dict)
    assert facts["site"]["group_ids"] == []
    assert all(isinstance(device, dict) for device in facts["devices"])
    assert facts["totals"]["device_count"] == len(facts["devices"])
    assert facts["program"] == {}
    assert warnings == []


def test_non_dict_devices_are_dropped(builder: FactsBuilder) -> None:
    facts, _ = builder.build({"devices": [None, 1, {"type": "BATTERY", "attributes": {"cap": 1}}]})
    assert [d["type"] for d in facts["devices"]] == ["BATTERY"]
    assert facts["totals"] == {"cap": 1, "device_count": 1}


def test_warnings_from_attributes_and_totals(builder: FactsBuilder) -> None:
    raw = {
        "program_specific_attributes": [{"name": "has_solar", "type": "boolean", "value": "maybe"}],
        "devices": [{"attributes": {"cap": "big"}}],
    }
    _, warnings = builder.build(raw)
    assert warnings == [
        "program.has_solar: 'maybe' is not a valid boolean; treated as null",
        "devices.0.attributes.cap: 'big' is not a number; left out of totals",
    ]


# --- lookup -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("site.zip_code", "77002"),
        ("devices.0.type", "BATTERY"),
        ("devices.1.type", None),
        ("devices.x", None),
        ("site.zip_code.more", None),
        ("nothing", None),
        ("site", {"zip_code": "77002"}),
    ],
)
def test_lookup(path: str, expected: Any) -> None:
    facts = {"site": {"zip_code": "77002"}, "devices": [{"type": "BATTERY"}]}
    assert lookup(facts, path) == expected


@pytest.mark.parametrize(
    ("kind", "value", "expected"),
    [
        ("int", "2.0", 2),
        ("integer", "7", 7),
        ("int", "1.5", None),
        ("number", "2.0", 2.0),
        ("number", "1e3", 1000),
        ("number", 2**53, 2**53),
        ("number", -(2**53), -(2**53)),
        ("number", 2**53 + 1, None),
        ("number", "9007199254740992", 2**53),
        ("number", "-9007199254740992", -(2**53)),
        ("number", "1e16", None),
    ],
)
def test_number_conversions_keep_their_kind(kind: str, value: object, expected: object) -> None:
    from engine.policy.facts import convert_attribute

    converted = convert_attribute(kind, value)
    assert converted == expected
    assert type(converted) is type(expected)
