"""Facts: what a policy's ``var`` can read about one enrollment.

Built from the raw enrollment dict exactly as the API sends it, never trusting its shape:
anything missing, null or of the wrong type becomes an empty value, not an exception.

* everything in the enrollment as sent (``id``, ``status``, ``site.*``, ``devices``, ...)
* ``site.group_ids``: the ids of the site's groups
* ``devices[].age_days``: whole days from ``install_date`` to ``now`` (null when unknown)
* ``program.<name>``: each program-specific attribute, converted by its ``type``
* ``totals.<key>``: the sum over all devices of each numeric ``attributes`` key; ``device_count``
* ``now``: the evaluation time, ISO 8601 UTC
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable
from datetime import date, datetime
from typing import Any

from engine.logic import parse_date

TRUE_WORDS = frozenset({"true", "yes", "y", "1", "on"})
FALSE_WORDS = frozenset({"false", "no", "n", "0", "off"})
_MAX_INT = 2**53  # beyond this a number is not exact in JSON (and our JsonLogic library)
NUMBER_TYPES = frozenset({"number", "integer", "int", "float", "decimal"})

# Fact names at the top level that are ours, not the API's.
DERIVED_ROOTS = ("program", "totals", "now")
ENROLLMENT_KEYS = (
    "id", "status", "status_reason", "created_at", "updated_at", "enrolled_at",
    "unenrolled_at", "devices", "program_specific_attributes", "site",
)  # fmt: skip
SITE_KEYS = (
    "id", "first_name", "last_name", "company_name", "email", "street_address",
    "street_address2", "city", "state_code", "zip_code", "service_account_id", "groups",
    "group_ids", "created_at", "updated_at",
)  # fmt: skip
DEVICE_KEYS = (
    "id", "site_id", "type", "manufacturer_name", "product_name", "serial_number",
    "install_date", "attributes", "configuration", "created_at", "updated_at", "age_days",
)  # fmt: skip


class FactsBuilder:
    """Turns raw enrollment dicts into facts for one run's fixed ``now``."""

    def __init__(self, now: datetime) -> None:
        self.now = now
        self.now_iso = now.strftime("%Y-%m-%dT%H:%M:%SZ")
        self.today = now.date()

    def build(self, raw: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
        """Return ``(facts, warnings)`` for one enrollment. Never raises on odd data."""
        warnings: list[str] = []
        facts = dict(raw)
        site = raw.get("site")
        site = dict(site) if isinstance(site, dict) else {}
        site["group_ids"] = group_ids_of(site)
        facts["site"] = site
        devices = [self._device(d) for d in _as_list(raw.get("devices")) if isinstance(d, dict)]
        facts["devices"] = devices
        facts["program"] = program_attributes(raw.get("program_specific_attributes"), warnings)
        facts["totals"] = device_totals(devices, warnings)
        facts["now"] = self.now_iso
        facts.pop("decision", None)  # reserved for group rules (decision.status reads null)
        return facts, warnings

    def _device(self, device: dict[str, Any]) -> dict[str, Any]:
        result = dict(device)
        installed = parse_date(device.get("install_date"))
        result["age_days"] = None if installed is None else (self.today - installed).days
        return result


def group_ids_of(site: dict[str, Any]) -> list[str]:
    """The site's current group ids, in the order the API sent them."""
    ids = []
    for group in _as_list(site.get("groups")):
        if isinstance(group, dict) and isinstance(group.get("id"), str):
            ids.append(group["id"])
    return ids


def program_attributes(raw: Any, warnings: list[str]) -> dict[str, Any]:
    """Program-specific attributes by name, converted by their declared ``type``."""
    result: dict[str, Any] = {}
    for attribute in _as_list(raw):
        if not isinstance(attribute, dict) or not isinstance(attribute.get("name"), str):
            continue
        name = attribute["name"]
        kind = str(attribute.get("type") or "string").lower()
        value = attribute.get("value")
        converted = convert_attribute(kind, value)
        if converted is None and value not in (None, ""):
            warnings.append(f"program.{name}: {value!r} is not a valid {kind}; treated as null")
        result[name] = converted
    return result


def convert_attribute(kind: str, value: Any) -> Any:
    """Convert one attribute value by type; ``None`` when it does not convert."""
    if value is None:
        return None
    if kind == "boolean":
        return _to_bool(value)
    if kind in NUMBER_TYPES:
        number = _to_number(value)
        if number is not None and kind in ("integer", "int") and not float(number).is_integer():
            return None
        return int(number) if number is not None and kind in ("integer", "int") else number
    if kind == "date":
        parsed = parse_date(value) if isinstance(value, str) else None
        return parsed.isoformat() if isinstance(parsed, date) else None
    return value if isinstance(value, str) else json.dumps(value)


def _to_bool(value: Any) -> bool | None:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in TRUE_WORDS:
        return True
    if text in FALSE_WORDS:
        return False
    return None


def _to_number(value: Any) -> int | float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if -_MAX_INT <= value <= _MAX_INT else None
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    try:
        number = float(str(value).strip().replace(",", ""))
    except (ValueError, OverflowError):
        return None
    if not math.isfinite(number) or abs(number) > _MAX_INT:
        return None
    return int(number) if number.is_integer() and "." not in str(value) else number


def device_totals(devices: Iterable[dict[str, Any]], warnings: list[str] | None = None) -> dict[str, Any]:
    """Sum of every numeric attribute key over all devices, plus ``device_count``.

    A value that is not a number (``"13500"``, ``"unknown"``) is left out of the sum and
    reported, rather than guessed at.
    """
    totals: dict[str, Any] = {}
    count = 0
    for index, device in enumerate(devices):
        count += 1
        attributes = device.get("attributes")
        if not isinstance(attributes, dict):
            continue
        for key, value in attributes.items():
            if _is_number(value):
                totals[key] = totals.get(key, 0) + value
            elif value is not None and warnings is not None and isinstance(value, str):
                warnings.append(
                    f"devices.{index}.attributes.{key}: {value!r} is not a number; left out of totals"
                )
    totals["device_count"] = count
    return totals


def _is_number(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return -_MAX_INT <= value <= _MAX_INT
    return isinstance(value, float) and math.isfinite(value)


_UNIT_SUFFIXES = ("_wh", "_kwh", "_w", "_kw", "_v", "_a", "_percentage", "_pct", "_count", "_level")


def _meant_as_number(key: str, value: str) -> bool:
    """A text value where a number belongs: numeric text, or a key named with a unit."""
    return _to_number(value) is not None or key.lower().endswith(_UNIT_SUFFIXES)


def lookup(facts: Any, path: str) -> Any:
    """The value at a dotted path (``site.zip_code``, ``devices.0.type``), or None."""
    current = facts
    for part in path.split("."):
        if isinstance(current, dict):
            current = current.get(part)
        elif isinstance(current, list) and part.isdigit() and int(part) < len(current):
            current = current[int(part)]
        else:
            return None
    return current


def fingerprint_sources(paths: Iterable[str]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Which raw inputs a policy's facts come from: site keys, and top-level enrollment keys.

    Derived facts are traced back to what the API sent (``totals.*`` and ``devices`` to the
    raw device list, ``program.*`` to the raw attributes), so the fingerprint does not move
    when only ``now`` does (``age_days``).
    """
    site_keys: dict[str, None] = {}
    top_keys: dict[str, None] = {}
    for path in paths:
        head, _, rest = path.partition(".")
        if head == "site" and rest:
            key = rest.split(".")[0]
            site_keys.setdefault("groups" if key == "group_ids" else key, None)
        elif head in ("devices", "totals"):
            top_keys.setdefault("devices", None)
        elif head == "program":
            top_keys.setdefault("program_specific_attributes", None)
        elif head != "now":
            top_keys.setdefault(head, None)
    return tuple(site_keys), tuple(top_keys)


def fingerprint(raw: dict[str, Any], sources: tuple[tuple[str, ...], tuple[str, ...]]) -> str:
    """A stable hash of the raw data a policy's facts were built from, to detect changes."""
    site_keys, top_keys = sources
    site = raw.get("site")
    site_values = [site.get(key) for key in site_keys] if isinstance(site, dict) else None
    text = json.dumps(
        [site_values, [raw.get(key) for key in top_keys]], sort_keys=True, default=repr, ensure_ascii=True
    )
    return hashlib.blake2b(text.encode("ascii"), digest_size=16).hexdigest()


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []
