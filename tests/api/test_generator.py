"""The enrollment generator: deterministic, streaming, API-shaped, varied, and the source of
the sample files."""

from __future__ import annotations

import json
import re
import uuid
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.flip.models import Enrollment, EnrollmentStatus
from engine.sandbox.generator import (
    CA_EV_PROGRAM,
    SAMPLES,
    TX_BATTERY_PROGRAM,
    generate_enrollments,
    program_groups,
    render_enrollments_json,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
NOW = datetime(2026, 11, 25, tzinfo=UTC)
ISO_Z = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")
TIMESTAMPS = ("created_at", "updated_at", "enrolled_at", "unenrolled_at")


def _many(program_id: str, count: int = 400, seed: int = 3) -> list[dict[str, Any]]:
    return list(generate_enrollments(program_id, count, seed=seed, now=NOW))


def _devices(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [d for r in records for d in (r.get("devices") or [])]


def _attribute_values(records: list[dict[str, Any]], name: str) -> list[Any]:
    return [
        a["value"] for r in records for a in (r.get("program_specific_attributes") or []) if a["name"] == name
    ]


def test_same_seed_same_records_and_prefix_stable() -> None:
    first = _many(TX_BATTERY_PROGRAM, 60)
    assert first == _many(TX_BATTERY_PROGRAM, 60)
    assert _many(TX_BATTERY_PROGRAM, 10) == first[:10]
    assert _many(TX_BATTERY_PROGRAM, 60, seed=4) != first
    assert _many(CA_EV_PROGRAM, 60) != first


def test_generation_is_lazy() -> None:
    stream = generate_enrollments(TX_BATTERY_PROGRAM, 10**12, now=NOW)
    assert next(stream)["id"] == _many(TX_BATTERY_PROGRAM, 1, seed=0)[0]["id"]


@pytest.mark.parametrize("program_id", [TX_BATTERY_PROGRAM, CA_EV_PROGRAM])
def test_records_have_the_api_shape(program_id: str) -> None:
    records = _many(program_id, 300)
    assert len({r["id"] for r in records}) == 300
    for record in records:
        Enrollment.model_validate(record)
        assert uuid.UUID(record["id"]).version == 4
        json.dumps(record)  # plain JSON types only
        for key in TIMESTAMPS:
            value = record.get(key)
            if value is not None:
                assert ISO_Z.match(value), value
                assert value <= "2026-11-25T00:00:00Z"
    assert all(set(r) <= set(Enrollment.model_fields) for r in records)


def test_battery_program_variety() -> None:
    records = _many(TX_BATTERY_PROGRAM)
    statuses = Counter(r["status"] for r in records)
    assert set(statuses) == {s.value for s in EnrollmentStatus}
    assert statuses["SUBMITTED"] + statuses["PENDING"] > len(records) / 2
    states = Counter((r.get("site") or {}).get("state_code") for r in records)
    assert states["TX"] > 0.85 * len(records)
    assert {"OK", "LA", "NM", None} <= set(states)
    devices = _devices(records)
    types = Counter(d["type"] for d in devices)
    assert types.most_common(1)[0][0] == "BATTERY"
    assert {"SOLAR_INVERTER", "THERMOSTAT", "battery", None} <= set(types)
    makers = {d["manufacturer_name"] for d in devices if d["type"] == "BATTERY"}
    assert {"Tesla", "Enphase", "Generac", "LG Energy Solution", "FranklinWH", "SolarEdge"} <= makers
    capacities = [d["attributes"].get("battery_capacity_wh") for d in devices if d["type"] == "BATTERY"]
    assert {13500, 5000, 16000, 13600, 9700} <= set(capacities)
    assert any(isinstance(c, str) for c in capacities)  # "13500" or "unknown"
    zips = {(r.get("site") or {}).get("zip_code", "")[:3] for r in records}
    assert {"770", "752", "787"} <= zips
    has_solar = {str(v).lower() for v in _attribute_values(records, "has_solar")}
    assert {"true", "false", "yes", "no", "1", "0"} <= has_solar
    assert set(_attribute_values(records, "tariff")) == {"RES-TOU", "RES-STD", "RES-EV"}
    assert "" in _attribute_values(records, "utility_account_number")


def test_ev_program_variety() -> None:
    records = _many(CA_EV_PROGRAM)
    states = Counter((r.get("site") or {}).get("state_code") for r in records)
    assert states["CA"] > 0.85 * len(records)
    devices = _devices(records)
    types = Counter(d["type"] for d in devices)
    assert types.most_common(1)[0][0] == "EV_CHARGER"
    assert types["BATTERY"] > 0
    rates = {d["attributes"].get("max_charge_rate_w") for d in devices if d["type"] == "EV_CHARGER"}
    assert {11500, 11520, 9600, 1920} <= rates
    assert "two" in _attribute_values(records, "vehicle_count")
    assert set(_attribute_values(records, "rate_plan")) == {"EV2-A", "E-TOU-C", "E-1"}
    group_ids = {g["id"] for r in records for g in ((r.get("site") or {}).get("groups") or [])}
    assert group_ids <= {g["id"] for g in program_groups(CA_EV_PROGRAM)}
    assert {"LA_BASIN", "BAY_AREA", "SAN_DIEGO"} <= group_ids


def test_some_records_are_messy() -> None:
    records = _many(TX_BATTERY_PROGRAM, 1000)
    assert any(r.get("site", {}) is None for r in records)
    assert any("devices" in r and r["devices"] is None for r in records)
    assert any(r.get("devices") == [] for r in records)
    assert any(len(r) < 10 for r in records)  # keys missing
    assert any(
        isinstance(d.get("attributes", {}).get("battery_power_output_w"), str) for d in _devices(records)
    )
    install_dates = [d["install_date"] for d in _devices(records)]
    assert None in install_dates
    assert any(re.match(r"^\d\d/\d\d/\d{4}$", v) for v in install_dates if v)


def test_every_status_in_any_sample_of_eight() -> None:
    for seed in range(5):
        statuses = {r["status"] for r in generate_enrollments(CA_EV_PROGRAM, 8, seed, NOW)}
        assert statuses == {s.value for s in EnrollmentStatus}


def test_program_groups() -> None:
    assert [g["id"] for g in program_groups(TX_BATTERY_PROGRAM)] == [
        "LZ_HOUSTON", "LZ_NORTH", "LZ_SOUTH", "LZ_WEST", "PILOT_VPP",
    ]  # fmt: skip
    assert {g["id"] for g in program_groups(CA_EV_PROGRAM)} == {
        "LA_BASIN", "BAY_AREA", "SAN_DIEGO", "PILOT_V2G", "PILOT_MANAGED_CHARGING",
    }  # fmt: skip
    assert program_groups("prog-unknown") == program_groups(TX_BATTERY_PROGRAM)
    assert all(g["name"] for g in program_groups(CA_EV_PROGRAM))


def test_default_now_is_the_current_time() -> None:
    before = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    record = next(generate_enrollments(CA_EV_PROGRAM, 1, seed=1))
    assert "2025-01-01T00:00:00Z" < record["updated_at"] <= before


@pytest.mark.parametrize("spec", SAMPLES, ids=lambda s: Path(s.path).name)
def test_sample_files_are_what_the_generator_makes(spec: Any) -> None:
    text = (REPO_ROOT / spec.path).read_text(encoding="utf-8")
    assert text == render_enrollments_json(spec.program_id, spec.count, spec.seed, spec.now)
    enrollments = json.loads(text)["enrollments"]
    assert len(enrollments) == spec.count
    assert len({e["status"] for e in enrollments}) == 8


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(min_value=0, max_value=2**32),
    program=st.sampled_from([TX_BATTERY_PROGRAM, CA_EV_PROGRAM]),
)
def test_any_seed_gives_valid_json_round_tripping_records(seed: int, program: str) -> None:
    records = list(generate_enrollments(program, 12, seed=seed, now=NOW))
    assert json.loads(json.dumps(records)) == records
    for record in records:
        Enrollment.model_validate(record)


def _follows_the_rules(record: dict[str, Any], state: str, device: str, question: str) -> str:
    site = record.get("site") or {}
    types = {d.get("type") for d in record.get("devices") or []}
    answers = {a.get("name"): a.get("value") for a in record.get("program_specific_attributes") or []}
    if site.get("state_code") != state or not {device, device.lower()} & types:
        return "REJECTED"
    return "ACTIVE" if answers.get(question) else "NEEDS_ACTION"


@pytest.mark.parametrize(
    ("program_id", "state", "device", "question"),
    [
        (TX_BATTERY_PROGRAM, "TX", "BATTERY", "utility_account_number"),
        (CA_EV_PROGRAM, "CA", "EV_CHARGER", "rate_plan"),
    ],
)
def test_people_decided_mostly_by_the_programs_rules(
    program_id: str, state: str, device: str, question: str
) -> None:
    """Decided records carry a reviewer's judgement, so a backtest has something to measure."""
    records = _many(program_id, 3000)[8:]  # the first eight take each status once, as drawn
    decided = [r for r in records if r["status"] in ("ACTIVE", "REJECTED", "NEEDS_ACTION")]
    assert len(decided) > 500
    following = sum(_follows_the_rules(r, state, device, question) == r["status"] for r in decided)
    assert 0.8 < following / len(decided) < 0.97  # mostly by the rules, with judgement calls
    for record in decided:
        assert (record.get("enrolled_at") is not None) == (
            record["status"] == "ACTIVE"
        ) or "enrolled_at" not in record
