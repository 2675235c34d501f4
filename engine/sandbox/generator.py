"""Seeded, realistic enrollment data in exactly the Flip API's JSON shape.

Used by the simulator, the tests and the sample files under ``rules/samples/``. Two program
kinds are known, chosen by program id (any other id gets the battery kind):

* ``prog-tx-residential-battery``: Texas homes with batteries (and some solar inverters);
* ``prog-ca-ev-charging``: California homes with EV chargers (and some batteries).

Output is deterministic: enrollment ``i`` depends only on ``(program_id, seed, i)`` and
``now``, so the first 40 of 100,000 are the same as a run of 40. The first eight records
take the eight statuses once each (in a seeded order), so any sample shows them all. The
others that a person already decided (ACTIVE, REJECTED, NEEDS_ACTION) got the status a
reviewer following the program's rules would give in 85% of cases, so ``backtest`` has
decisions to measure a policy against.
Records are built one at a time (streaming, constant memory per item). A small share is
deliberately messy (missing keys, null site, empty or null device lists, numbers sent as
strings, values that do not parse), because real payloads are.

The sample files are rebuilt with::

    python -c "from engine.sandbox.generator import write_samples_text as w; w()"

which is not run at import time (see :func:`write_samples_text`).
"""

from __future__ import annotations

import bisect
import itertools
import json
import random
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Generic, TypeVar

__all__ = [
    "CA_EV_PROGRAM",
    "SAMPLES",
    "TX_BATTERY_PROGRAM",
    "SampleSpec",
    "generate_enrollments",
    "program_groups",
    "render_enrollments_json",
    "write_samples_text",
]

TX_BATTERY_PROGRAM = "prog-tx-residential-battery"
CA_EV_PROGRAM = "prog-ca-ev-charging"

_MESSY_SHARE = 0.06

_STATUSES: tuple[tuple[str, int, tuple[str | None, ...]], ...] = (
    ("SUBMITTED", 34, ("Submitted by customer", None)),
    ("PENDING", 24, ("Awaiting utility review", "Pending device verification", None)),
    ("ACTIVE", 10, ("Approved", "Meets program requirements")),
    ("NEEDS_ACTION", 8, ("Missing utility account number", "Device telemetry not received")),
    ("CREATED", 7, (None, "Enrollment started")),
    ("REJECTED", 6, ("Outside service territory", "Device not eligible")),
    ("PAUSED", 6, ("Paused at customer request", "Device offline")),
    ("UNENROLLED", 5, ("Customer unenrolled", "Moved out of service territory")),
)

_FIRST_NAMES = (
    "Maria", "James", "Aisha", "Wei", "Carlos", "Emily", "Darnell", "Priya", "Luis", "Hannah",
    "Tomás", "Grace", "Omar", "Sofia", "Kevin", "Mei", "Jamal", "Laura", "Diego", "Nora",
)  # fmt: skip
_LAST_NAMES = (
    "Garcia", "Smith", "Nguyen", "Johnson", "Patel", "Martinez", "Brown", "Kim", "Lopez",
    "Williams", "Chen", "Davis", "Hernandez", "Okafor", "Miller", "Singh", "Wilson", "Rivera",
)  # fmt: skip
_STREETS = (
    "Main", "Oak", "Pecan", "Elm", "Maple", "Cedar", "Live Oak", "Mesquite", "Bluebonnet",
    "Sunset", "Lakeview", "Mission", "Palm", "Juniper", "Willow",
)  # fmt: skip
_STREET_KINDS = ("St", "Ave", "Dr", "Ln", "Blvd", "Ct", "Way")
_COMPANIES = ("Lone Star Dental LLC", "Bayou Bakery", "Golden Gate Florist", "Mesa Vet Clinic")
_EMAIL_DOMAINS = ("example.com", "example.net", "example.org")

_T = TypeVar("_T")


class _Table(Generic[_T]):
    """A weighted choice, precomputed once (``random.choices`` rebuilds its table per call)."""

    __slots__ = ("_cumulative", "_items", "_total")

    def __init__(self, pairs: Iterable[tuple[_T, float]]) -> None:
        items, weights = zip(*pairs, strict=True)
        self._items: tuple[_T, ...] = items
        self._cumulative = tuple(itertools.accumulate(weights))
        self._total = self._cumulative[-1]

    def pick(self, rng: random.Random) -> _T:
        return self._items[bisect.bisect(self._cumulative, rng.random() * self._total)]


def _table(items: Iterable[_T], weights: Iterable[float]) -> _Table[_T]:
    return _Table(zip(items, weights, strict=True))


@dataclass(frozen=True, slots=True)
class _Region:
    city: str
    state: str | None  # None: the record arrives without a state code
    zip_low: int
    zip_high: int
    zone: str | None  # the load-zone group a site here may already be in
    weight: int


@dataclass(frozen=True, slots=True)
class _Model:
    """One device model: its type, maker, product and attributes (a choice per key)."""

    type: str | None
    manufacturer: str
    product: str
    serial_prefix: str
    attributes: tuple[tuple[str, tuple[Any, ...]], ...]
    weight: int


def _battery(maker: str, product: str, prefix: str, size: tuple[int, int], weight: int) -> _Model:
    """A battery model; ``size`` is (capacity in Wh, power in W, the same in and out)."""
    wh, w = size
    attributes = (
        ("battery_capacity_wh", (wh,)),
        ("battery_power_input_w", (w,)),
        ("battery_power_output_w", (w,)),
    )
    return _Model("BATTERY", maker, product, prefix, attributes, weight)


_BATTERIES = (
    _battery("Tesla", "Powerwall 2", "TG1", (13500, 5000), 20),
    _battery("Tesla", "Powerwall 3", "TG3", (13500, 11500), 15),
    _battery("Enphase", "IQ Battery 5P", "EN5", (5000, 3840), 15),
    _battery("LG Energy Solution", "RESU 16H Prime", "LGR", (16000, 7000), 10),
    _battery("FranklinWH", "aPower", "FWH", (13600, 5000), 10),
    _battery("SolarEdge", "Home Battery", "SEB", (9700, 5000), 10),
)
# Generac PWRcell: capacity and power grow together with the number of modules.
_PWRCELL_SIZES = ((9000, 4500), (12000, 6000), (15000, 7600), (18000, 9000))
_PWRCELL_WEIGHT = 12

_SOLAR_INVERTERS = (
    _Model("SOLAR_INVERTER", "Enphase", "IQ8PLUS Microinverters", "ENI",
           (("inverter_rated_power_w", (7000, 8400)), ("pv_capacity_w", (8000, 9600))), 30),
    _Model("SOLAR_INVERTER", "SolarEdge", "Home Hub Inverter SE7600H", "SEI",
           (("inverter_rated_power_w", (7600,)), ("pv_capacity_w", (8500, 10000))), 30),
    _Model("SOLAR_INVERTER", "SMA", "Sunny Boy 7.7-US", "SMA",
           (("inverter_rated_power_w", (7700,)), ("pv_capacity_w", (9000,))), 20),
    _Model("SOLAR_INVERTER", "Fronius", "Primo 8.2-1", "FRO",
           (("inverter_rated_power_w", (8200,)), ("pv_capacity_w", (9800,))), 20),
)  # fmt: skip

_EV_CHARGERS = (
    _Model("EV_CHARGER", "ChargePoint", "Home Flex", "CPH",
           (("max_charge_rate_w", (11500,)), ("charger_level", (2,)), ("networked", (True,))), 25),
    _Model("EV_CHARGER", "Enphase", "IQ EV Charger 2", "EVC",
           (("max_charge_rate_w", (11520,)), ("charger_level", (2,)), ("networked", (True,))), 15),
    _Model("EV_CHARGER", "Wallbox", "Pulsar Plus", "WBX",
           (("max_charge_rate_w", (9600,)), ("charger_level", (2,)), ("networked", (True,))), 15),
    _Model("EV_CHARGER", "Emporia", "Emporia EV Charger", "EMP",
           (("max_charge_rate_w", (11500,)), ("charger_level", (2,)), ("networked", (True,))), 12),
    _Model("EV_CHARGER", "Tesla", "Wall Connector", "TWC",
           (("max_charge_rate_w", (11500,)), ("charger_level", (2,)),
            ("networked", (True, False))), 23),
    _Model("EV_CHARGER", "Lectron", "Level 1 Portable Charger", "LEC",
           (("max_charge_rate_w", (1920,)), ("charger_level", (1,)), ("networked", (False,))), 10),
)  # fmt: skip

_ODD_DEVICES = (
    _Model("THERMOSTAT", "ecobee", "SmartThermostat Premium", "ECB",
           (("hvac_type", ("heat_pump", "gas_furnace")),), 4),
    _Model("THERMOSTAT", "Google", "Nest Learning Thermostat", "NST",
           (("hvac_type", ("heat_pump", "central_ac")),), 3),
    _Model("battery", "Tesla", "Powerwall 2", "TG1",
           (("battery_capacity_wh", (13500,)), ("battery_power_input_w", (5000,)),
            ("battery_power_output_w", (5000,))), 3),
    _Model(None, "Unknown", "Unknown device", "UNK", (), 2),
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class _Kind:
    """What a program kind looks like: where its sites are, what they own, what they answer."""

    groups: tuple[tuple[str, str], ...]
    pilots: tuple[tuple[str, float], ...]  # (group id, share of sites already in it)
    regions: _Table[_Region]
    device_counts: _Table[int]  # how many devices a site has
    device_picker: Callable[[random.Random], _Model]
    attributes: Callable[[random.Random, datetime, list[dict[str, Any]]], list[dict[str, Any]]]
    reviewer: Callable[[dict[str, Any]], str]  # what a careful person would decide


def _models(*groups: tuple[_Model, ...]) -> _Table[_Model]:
    models = tuple(itertools.chain.from_iterable(groups))
    return _table(models, (m.weight for m in models))


_BATTERY_TABLE = _models(_BATTERIES)
_SOLAR_TABLE = _models(_SOLAR_INVERTERS)
_ODD_TABLE = _models(_ODD_DEVICES)
_EV_TABLE = _models(_EV_CHARGERS)
_CA_ODD_TABLE = _models(_ODD_DEVICES, _SOLAR_INVERTERS[:1])
_TARIFFS = _table(("RES-TOU", "RES-STD", "RES-EV"), (45, 40, 15))
_VEHICLE_COUNTS = _table(("1", "2", "3", "0", "two"), (60, 28, 7, 2, 3))
_RATE_PLANS = _table(("EV2-A", "E-TOU-C", "E-1"), (50, 35, 15))
_STATUS_TABLE = _table(_STATUSES, (weight for _, weight, _ in _STATUSES))


def _any_battery(rng: random.Random) -> _Model:
    total = sum(m.weight for m in _BATTERIES) + _PWRCELL_WEIGHT
    if rng.random() < _PWRCELL_WEIGHT / total:
        wh, w = rng.choice(_PWRCELL_SIZES)
        return _battery("Generac", f"PWRcell M{wh // 3000}", "GPC", (wh, w), _PWRCELL_WEIGHT)
    return _BATTERY_TABLE.pick(rng)


def _tx_device(rng: random.Random) -> _Model:
    roll = rng.random()
    if roll < 0.78:
        return _any_battery(rng)
    if roll < 0.93:
        return _SOLAR_TABLE.pick(rng)
    return _ODD_TABLE.pick(rng)


def _ca_device(rng: random.Random) -> _Model:
    roll = rng.random()
    if roll < 0.80:
        return _EV_TABLE.pick(rng)
    if roll < 0.92:
        return _any_battery(rng)
    return _CA_ODD_TABLE.pick(rng)


# --- program-specific attributes ------------------------------------------------------------

_TRUE_SPELLINGS = ("true", "True", "TRUE", "yes", "Yes", "YES", "1")
_FALSE_SPELLINGS = ("false", "False", "FALSE", "no", "No", "NO", "0")


def _boolean_value(rng: random.Random, truth: bool) -> Any:
    roll = rng.random()
    if roll < 0.02:
        return "maybe"
    if roll < 0.03:
        return truth  # a real JSON boolean instead of the documented string
    return rng.choice(_TRUE_SPELLINGS if truth else _FALSE_SPELLINGS)


def _date_value(rng: random.Random, day: datetime) -> str:
    if rng.random() < 0.03:
        return day.strftime("%d/%m/%Y")
    return day.strftime("%Y-%m-%d")


def _attribute(name: str, type_: str, value: Any) -> dict[str, Any]:
    return {"name": name, "type": type_, "value": value}


def _tx_attributes(
    rng: random.Random, created: datetime, devices: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    attributes = []
    roll = rng.random()
    if roll >= 0.04:  # 4% never answered the question
        account = "" if roll < 0.09 else str(rng.randrange(10**9, 10**10))
        attributes.append(_attribute("utility_account_number", "string", account))
    has_inverter = any(d.get("type") == "SOLAR_INVERTER" for d in devices)
    solar = rng.random() < (0.85 if has_inverter else 0.3)
    attributes.append(_attribute("has_solar", "boolean", _boolean_value(rng, solar)))
    attributes.append(_attribute("tariff", "string", _TARIFFS.pick(rng)))
    attributes.append(_attribute("consent_date", "date", _date_value(rng, created)))
    return attributes


def _ca_attributes(
    rng: random.Random, created: datetime, devices: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    vehicles = _VEHICLE_COUNTS.pick(rng)
    rate_plan = _RATE_PLANS.pick(rng)
    service_start = created - timedelta(days=rng.randrange(30, 15 * 365))
    chargers = sum(1 for d in devices if d.get("type") == "EV_CHARGER")
    dedicated = rng.random() < (0.8 if chargers else 0.4)
    return [
        _attribute("vehicle_count", "integer", vehicles),
        _attribute("has_dedicated_circuit", "boolean", _boolean_value(rng, dedicated)),
        _attribute("rate_plan", "string", rate_plan),
        _attribute("service_start_date", "date", _date_value(rng, service_start)),
    ]


# --- people's decisions ----------------------------------------------------------------------

# Statuses a person sets in the Flip dashboard. An enrollment generated with one of them was
# decided by a reviewer who mostly follows the program's rules (so backtests have something
# to measure); the rest were judgement calls, or the data changed after the decision.
_DECIDED_BY_PEOPLE = ("ACTIVE", "REJECTED", "NEEDS_ACTION")
_REVIEWER_FOLLOWS_RULES = 0.85


def _answers(record: dict[str, Any]) -> dict[str, Any]:
    found = {}
    for attribute in record.get("program_specific_attributes") or []:
        if isinstance(attribute, dict) and isinstance(attribute.get("name"), str):
            found[attribute["name"]] = attribute.get("value")
    return found


def _device_types(record: dict[str, Any]) -> list[Any]:
    return [d.get("type") for d in record.get("devices") or [] if isinstance(d, dict)]


def _state(record: dict[str, Any]) -> Any:
    site = record.get("site")
    return site.get("state_code") if isinstance(site, dict) else None


def _tx_reviewer(record: dict[str, Any]) -> str:
    if _state(record) != "TX":
        return "REJECTED"
    if not {"BATTERY", "battery"} & set(_device_types(record)):
        return "REJECTED"
    if not _answers(record).get("utility_account_number"):
        return "NEEDS_ACTION"
    return "ACTIVE"


def _ca_reviewer(record: dict[str, Any]) -> str:
    if _state(record) != "CA":
        return "REJECTED"
    if "EV_CHARGER" not in _device_types(record):
        return "REJECTED"
    answers = _answers(record)
    if not answers.get("rate_plan") or answers.get("vehicle_count") in (None, ""):
        return "NEEDS_ACTION"
    return "ACTIVE"


def _decide_like_a_person(record: dict[str, Any], kind: _Kind, rng: random.Random) -> None:
    """Give a record a person already decided the status that person would have chosen."""
    if rng.random() < _REVIEWER_FOLLOWS_RULES:
        status = kind.reviewer(record)
    else:
        status = rng.choice(_DECIDED_BY_PEOPLE)
    if status == record["status"]:
        return
    record["status"] = status
    if "status_reason" in record:
        record["status_reason"] = rng.choice(next(r for s, _, r in _STATUSES if s == status))
    if "enrolled_at" in record:
        record["enrolled_at"] = record.get("updated_at") if status == "ACTIVE" else None


def _regions(*regions: _Region) -> _Table[_Region]:
    return _table(regions, (r.weight for r in regions))


_TX = _Kind(
    groups=(
        ("LZ_HOUSTON", "Houston load zone"),
        ("LZ_NORTH", "North load zone"),
        ("LZ_SOUTH", "South load zone"),
        ("LZ_WEST", "West load zone"),
        ("PILOT_VPP", "Virtual power plant pilot"),
    ),
    pilots=(("PILOT_VPP", 0.08),),
    regions=_regions(
        _Region("Houston", "TX", 77002, 77099, "LZ_HOUSTON", 35),
        _Region("Dallas", "TX", 75201, 75254, "LZ_NORTH", 22),
        _Region("Austin", "TX", 78701, 78759, "LZ_SOUTH", 18),
        _Region("San Antonio", "TX", 78201, 78260, "LZ_SOUTH", 8),
        _Region("Fort Worth", "TX", 76102, 76140, "LZ_NORTH", 5),
        _Region("Midland", "TX", 79701, 79712, "LZ_WEST", 2),
        _Region("Lubbock", "TX", 79401, 79424, "LZ_WEST", 2),
        _Region("Oklahoma City", "OK", 73102, 73170, None, 2),
        _Region("Shreveport", "LA", 71101, 71137, None, 2),
        _Region("Albuquerque", "NM", 87101, 87125, None, 2),
        _Region("Houston", None, 77002, 77099, None, 2),
    ),
    device_counts=_table((0, 1, 2, 3), (5, 65, 22, 8)),
    device_picker=_tx_device,
    attributes=_tx_attributes,
    reviewer=_tx_reviewer,
)

_CA = _Kind(
    groups=(
        ("LA_BASIN", "Los Angeles basin"),
        ("BAY_AREA", "Bay Area"),
        ("SAN_DIEGO", "San Diego"),
        ("PILOT_V2G", "Vehicle-to-grid pilot"),
        ("PILOT_MANAGED_CHARGING", "Managed charging pilot"),
    ),
    pilots=(("PILOT_V2G", 0.04), ("PILOT_MANAGED_CHARGING", 0.1)),
    regions=_regions(
        _Region("Los Angeles", "CA", 90001, 90089, "LA_BASIN", 40),
        _Region("San Francisco", "CA", 94102, 94134, "BAY_AREA", 25),
        _Region("San Diego", "CA", 92101, 92130, "SAN_DIEGO", 20),
        _Region("Oakland", "CA", 94601, 94621, "BAY_AREA", 5),
        _Region("Sacramento", "CA", 95811, 95838, None, 4),
        _Region("Reno", "NV", 89501, 89523, None, 2),
        _Region("Portland", "OR", 97201, 97239, None, 2),
        _Region("Los Angeles", None, 90001, 90089, None, 2),
    ),
    device_counts=_table((0, 1, 2, 3), (5, 70, 20, 5)),
    device_picker=_ca_device,
    attributes=_ca_attributes,
    reviewer=_ca_reviewer,
)

_KINDS = {TX_BATTERY_PROGRAM: _TX, CA_EV_PROGRAM: _CA}


def _kind(program_id: str) -> _Kind:
    return _KINDS.get(program_id, _TX)


def program_groups(program_id: str) -> list[dict[str, str]]:
    """The groups a program starts with: ``[{"id", "name"}, ...]`` (a fresh list each call)."""
    return [{"id": gid, "name": name} for gid, name in _kind(program_id).groups]


# --- one enrollment -------------------------------------------------------------------------


def _iso(moment: datetime) -> str:
    # Moments are naive UTC in whole seconds here; isoformat() is much faster than strftime().
    return moment.isoformat() + "Z"


def _between(rng: random.Random, start: datetime, end: datetime) -> datetime:
    span = max(0, int((end - start).total_seconds()))
    return start + timedelta(seconds=rng.randint(0, span))


def _hex_id(rng: random.Random, prefix: str) -> str:
    return f"{prefix}-{rng.getrandbits(48):012x}"


def _install_date(rng: random.Random, now: datetime) -> str | None:
    roll = rng.random()
    if roll < 0.05:
        return None
    day = now - timedelta(days=rng.randrange(30, 3650))
    if roll < 0.08:
        return day.strftime("%m/%d/%Y")
    return day.strftime("%Y-%m-%dT00:00:00Z")


def _device_attributes(rng: random.Random, model: _Model) -> dict[str, Any]:
    attributes = {key: rng.choice(choices) for key, choices in model.attributes}
    if attributes and rng.random() < 0.12:  # one attribute arrives odd
        key = rng.choice(sorted(attributes))
        oddity = rng.randrange(4)
        if oddity == 0:
            del attributes[key]
        elif oddity == 1:
            attributes[key] = None
        elif oddity == 2:
            attributes[key] = str(attributes[key])
        else:
            attributes[key] = "unknown"
    return attributes


def _configuration(rng: random.Random, model: _Model) -> dict[str, Any] | None:
    if model.type in ("BATTERY", "battery"):
        reserve: Any = rng.choice((10, 15, 20, 20, 25, 30, 50))
        if rng.random() < 0.05:
            reserve = str(reserve)
        return {"reserve_percentage": reserve}
    if model.type == "EV_CHARGER":
        return {"schedule": rng.choice(("off_peak", "solar_surplus", "none"))}
    return None if rng.random() < 0.5 else {}


def _device(
    rng: random.Random, kind: _Kind, site_id: str, created: datetime, now: datetime
) -> dict[str, Any]:
    model = kind.device_picker(rng)
    added = created - timedelta(days=rng.randrange(0, 30), seconds=rng.randrange(86400))
    return {
        "id": _hex_id(rng, "dev"),
        "site_id": site_id,
        "type": model.type,
        "manufacturer_name": model.manufacturer,
        "product_name": model.product,
        "serial_number": f"{model.serial_prefix}{rng.randrange(10**9, 10**10)}",
        "install_date": _install_date(rng, now),
        "attributes": _device_attributes(rng, model),
        "configuration": _configuration(rng, model),
        "created_at": _iso(added),
        "updated_at": _iso(_between(rng, added, now)),
    }


def _site_groups(rng: random.Random, kind: _Kind, region: _Region) -> list[dict[str, str]]:
    names = dict(kind.groups)
    ids = []
    if region.zone is not None and rng.random() < 0.3:
        ids.append(region.zone)
    ids.extend(gid for gid, share in kind.pilots if rng.random() < share)
    return [{"id": gid, "name": names[gid]} for gid in ids]


def _zip_code(rng: random.Random, region: _Region) -> str:
    code = f"{rng.randint(region.zip_low, region.zip_high):05d}"
    if rng.random() < 0.03:
        code += f"-{rng.randrange(10000):04d}"  # ZIP+4
    return code


def _site(rng: random.Random, kind: _Kind, site_id: str, created: datetime, now: datetime) -> dict[str, Any]:
    region = kind.regions.pick(rng)
    first, last = rng.choice(_FIRST_NAMES), rng.choice(_LAST_NAMES)
    email = f"{first}.{last}{rng.randrange(100)}@{rng.choice(_EMAIL_DOMAINS)}".lower()
    site_created = created - timedelta(days=rng.randrange(0, 60))
    return {
        "id": site_id,
        "first_name": first,
        "last_name": last,
        "company_name": rng.choice(_COMPANIES) if rng.random() < 0.06 else None,
        "email": email,
        "street_address": f"{rng.randrange(100, 9999)} {rng.choice(_STREETS)} {rng.choice(_STREET_KINDS)}",
        "street_address2": f"Apt {rng.randrange(1, 40)}" if rng.random() < 0.15 else None,
        "city": region.city,
        "state_code": region.state,
        "zip_code": _zip_code(rng, region),
        "service_account_id": f"SA-{rng.randrange(10**7, 10**8)}" if rng.random() < 0.9 else None,
        "groups": _site_groups(rng, kind, region),
        "created_at": _iso(site_created),
        "updated_at": _iso(_between(rng, site_created, now)),
    }


def _status(rng: random.Random, forced: int | None) -> tuple[str, str | None]:
    """A weighted random status, or status number ``forced`` (so that every one appears)."""
    status, _, reasons = _STATUS_TABLE.pick(rng) if forced is None else _STATUSES[forced]
    return status, rng.choice(reasons)


_ENROLLED_STATUSES = frozenset({"ACTIVE", "PAUSED", "UNENROLLED"})


def _enrollment(
    rng: random.Random, kind: _Kind, now: datetime, forced_status: int | None = None
) -> dict[str, Any]:
    enrollment_id = str(uuid.UUID(int=rng.getrandbits(128), version=4))
    status, reason = _status(rng, forced_status)
    created = now - timedelta(seconds=rng.randrange(3600, 540 * 86400))
    updated = _between(rng, created, now)
    enrolled = _between(rng, created, updated) if status in _ENROLLED_STATUSES else None
    site_id = _hex_id(rng, "site")
    count = kind.device_counts.pick(rng)
    devices = [_device(rng, kind, site_id, created, now) for _ in range(count)]
    return {
        "id": enrollment_id,
        "status": status,
        "status_reason": reason,
        "created_at": _iso(created),
        "updated_at": _iso(updated),
        "enrolled_at": None if enrolled is None else _iso(enrolled),
        "unenrolled_at": _iso(updated) if status == "UNENROLLED" else None,
        "devices": devices,
        "program_specific_attributes": kind.attributes(rng, created, devices),
        "site": _site(rng, kind, site_id, created, now),
    }


# --- messiness ------------------------------------------------------------------------------

_DROPPABLE_KEYS = (
    "status_reason", "created_at", "updated_at", "enrolled_at", "unenrolled_at", "devices",
    "program_specific_attributes", "site",
)  # fmt: skip


def _stringify_numbers(value: Any) -> Any:
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, dict):
        return {k: _stringify_numbers(v) for k, v in value.items()}
    return value


def _make_messy(rng: random.Random, record: dict[str, Any]) -> None:
    """Damage one record in one of the ways real payloads are damaged."""
    mess = rng.randrange(7)
    if mess == 0:
        for key in rng.sample(_DROPPABLE_KEYS, 2):
            record.pop(key, None)
    elif mess == 1:
        record["site"] = None
    elif mess == 2:
        record["devices"] = []
    elif mess == 3:
        record["devices"] = None
    elif mess == 4:
        for device in record["devices"]:
            device["attributes"] = _stringify_numbers(device["attributes"])
            device["configuration"] = _stringify_numbers(device["configuration"])
    elif mess == 5:
        record["program_specific_attributes"] = None
    else:
        for key in ("state_code", "zip_code", "groups"):
            record["site"].pop(key, None)


def _naive_utc(moment: datetime) -> datetime:
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC).replace(tzinfo=None)
    return moment.replace(microsecond=0)


def generate_enrollments(
    program_id: str, count: int, seed: int = 0, now: datetime | None = None
) -> Iterator[dict[str, Any]]:
    """Yield ``count`` raw enrollment dicts of ``program_id``, as the API would send them.

    Deterministic for a given ``(program_id, seed, now)``; record ``i`` does not depend on
    ``count``. ``now`` is the moment the data is "taken" (every timestamp is before it); it
    defaults to the current UTC time, so pass it whenever output must be reproducible.
    """
    moment = _naive_utc(now or datetime.now(UTC))
    kind = _kind(program_id)
    # The first records take every status once, in a seeded order: any sample of at least
    # that many shows them all; the rest follow the weights.
    first = list(range(len(_STATUSES)))
    random.Random(f"{program_id}/{seed}/statuses").shuffle(first)
    for index in range(count):
        rng = random.Random(f"{program_id}/{seed}/{index}")
        forced = first[index] if index < len(first) else None
        record = _enrollment(rng, kind, moment, forced)
        if rng.random() < _MESSY_SHARE:
            _make_messy(rng, record)
        if forced is None and record["status"] in _DECIDED_BY_PEOPLE:
            # Its own stream, so every other field is what it was before people decided.
            _decide_like_a_person(record, kind, random.Random(f"{program_id}/{seed}/{index}/review"))
        yield record


# --- sample files ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SampleSpec:
    """How one sample file under ``rules/samples/`` is produced."""

    path: str
    program_id: str
    count: int
    seed: int
    now: datetime


_SAMPLE_NOW = datetime(2026, 11, 25, tzinfo=UTC)
SAMPLES = (
    SampleSpec(
        "rules/samples/tx_residential_battery.enrollments.json",
        TX_BATTERY_PROGRAM,
        40,
        1,
        _SAMPLE_NOW,
    ),
    SampleSpec("rules/samples/ca_ev_charging.enrollments.json", CA_EV_PROGRAM, 30, 2, _SAMPLE_NOW),
)


def render_enrollments_json(program_id: str, count: int, seed: int = 0, now: datetime | None = None) -> str:
    """The API's list answer ``{"enrollments": [...]}`` as pretty-printed JSON text."""
    document = {"enrollments": list(generate_enrollments(program_id, count, seed, now))}
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"


def write_samples_text(root: Path | None = None) -> list[Path]:
    """Rewrite every file in :data:`SAMPLES` under ``root`` (default: the current directory)."""
    base = root or Path.cwd()
    written = []
    for spec in SAMPLES:
        target = base / spec.path
        text = render_enrollments_json(spec.program_id, spec.count, spec.seed, spec.now)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text, encoding="utf-8")
        written.append(target)
    return written
