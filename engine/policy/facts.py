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
import marshal
import math
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from engine.policy.logic import parse_date

TRUE_WORDS = frozenset({"true", "yes", "y", "1", "on"})
FALSE_WORDS = frozenset({"false", "no", "n", "0", "off"})
_MAX_INT = 2**53  # beyond this a number is not exact in JSON (and our JsonLogic library)
NUMBER_TYPES = frozenset({"number", "integer", "int", "float", "decimal"})

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


@dataclass(frozen=True)
class FactsPlan:
    """Which facts a policy reads, so only those are built and fingerprinted.

    ``full`` (the default, and the fallback when a policy reads something it cannot see
    statically, like a computed ``var``) builds every fact and fingerprints whole inputs.
    """

    full: bool = True
    program_names: frozenset[str] = frozenset()
    totals_keys: frozenset[str] = frozenset()
    device_age: bool = True
    device_whole: bool = False
    device_fields: tuple[str, ...] = ()
    site_keys: tuple[str, ...] = ()
    top_keys: tuple[str, ...] = ()

    @property
    def reads_devices(self) -> bool:
        return bool(self.device_whole or self.device_fields or self.totals_keys - {"device_count"})

    @classmethod
    def from_reads(cls, reads: Iterable[tuple[str, str | None]]) -> FactsPlan:
        """Plan from ``(path, scope)`` pairs: scope None at the root, "devices" inside one."""
        plan = _PlanBuilder()
        for path, scope in reads:
            if not plan.add(path, scope):
                return cls()
        return plan.build()


class _PlanBuilder:
    def __init__(self) -> None:
        self.program: set[str] = set()
        self.totals: set[str] = set()
        self.device_fields: dict[str, None] = {}
        self.site: dict[str, None] = {}
        self.top: dict[str, None] = {}
        self.device_age = False
        self.device_whole = False

    def add(self, path: str, scope: str | None) -> bool:
        """Record one read; False when it cannot be planned (build everything instead)."""
        if scope == "devices":
            return self._device_field(path)
        if scope is not None:
            return scope != "?"  # inside another collection: its root read covers it
        head, _, rest = path.partition(".")
        first = rest.split(".")[0]
        if head in ("program", "totals", "site") and not first:
            return False
        if head == "program":
            self.program.add(first)
        elif head == "totals":
            self.totals.add(first)
        elif head == "site":
            self.site.setdefault("groups" if first == "group_ids" else first, None)
        elif head == "devices":
            parts = rest.split(".", 1)
            if not rest:
                self.device_whole = self.device_whole or not self.device_fields
            elif len(parts) == 2 and parts[0].isdigit():
                return self._device_field(parts[1])
            else:
                self.device_whole = True
        elif head not in ("now", "decision", ""):
            self.top.setdefault(head, None)
        return head != ""

    def _device_field(self, path: str) -> bool:
        if not path:
            self.device_whole = True
            return True
        head = path.split(".", 1)[0]
        field = path if head in ("attributes", "configuration") else head
        if field == "age_days":
            self.device_age = True
            field = "install_date"
        self.device_fields.setdefault(field, None)
        return True

    def build(self) -> FactsPlan:
        whole = self.device_whole and not self.device_fields
        return FactsPlan(
            full=False,
            program_names=frozenset(self.program),
            totals_keys=frozenset(self.totals),
            device_age=self.device_age,
            device_whole=whole,
            device_fields=tuple(self.device_fields),
            site_keys=tuple(self.site),
            top_keys=tuple(self.top),
        )


class FactsBuilder:
    """Turns raw enrollment dicts into facts for one run's fixed ``now``."""

    def __init__(self, now: datetime, plan: FactsPlan | None = None) -> None:
        self.now_iso = now.strftime("%Y-%m-%dT%H:%M:%SZ")
        self.today = now.date()
        self.plan = plan or FactsPlan()
        self._conversions: Conversions = {}

    def build(self, raw: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
        """Return ``(facts, warnings)`` for one enrollment. Never raises on odd data."""
        plan = self.plan
        warnings: list[str] = []
        facts = dict(raw)
        site = raw.get("site")
        site = dict(site) if isinstance(site, dict) else {}
        site["group_ids"] = group_ids_of(site)
        facts["site"] = site
        raw_devices = [d for d in _as_list(raw.get("devices")) if isinstance(d, dict)]
        devices = [self._device(d) for d in raw_devices] if plan.full or plan.device_age else raw_devices
        facts["devices"] = devices
        names = None if plan.full else plan.program_names
        attributes = raw.get("program_specific_attributes")
        facts["program"] = program_attributes(attributes, warnings, names, self._conversions)
        keys = None if plan.full else plan.totals_keys
        facts["totals"] = device_totals(devices, warnings, keys)
        facts["now"] = self.now_iso
        facts.pop("decision", None)  # reserved for group rules (decision.status reads null)
        return facts, warnings

    def _device(self, device: dict[str, Any]) -> dict[str, Any]:
        result = dict(device)
        installed = parse_date(device.get("install_date"))
        result["age_days"] = None if installed is None else (self.today - installed).days
        return result


def group_ids_of(site: Any) -> list[str]:
    """The site's current group ids, in the order the API sent them (none when ``site`` is
    not an object; groups without a text id are left out). The one reader of them."""
    if not isinstance(site, dict):
        return []
    ids = []
    for group in _as_list(site.get("groups")):
        if isinstance(group, dict) and isinstance(group.get("id"), str):
            ids.append(group["id"])
    return ids


Conversions = dict[tuple[str, str], Any]
"""Text attribute values already converted, by ``(type, value)``: one per ``FactsBuilder``."""
_CONVERSIONS_MAX = 50_000  # programs repeat the same few answers: yes/no, tariffs, dates
_NOT_CONVERTED = object()


def program_attributes(
    raw: Any, warnings: list[str], names: frozenset[str] | None = None, memo: Conversions | None = None
) -> dict[str, Any]:
    """Program-specific attributes by name (only ``names`` when given), converted by ``type``.

    ``memo`` keeps the conversions of text values from one call to the next (a run's
    ``FactsBuilder`` keeps one, so each run and each test starts from an empty one).
    """
    memo = {} if memo is None else memo
    result: dict[str, Any] = {}
    for attribute in _as_list(raw):
        if not isinstance(attribute, dict) or not isinstance(attribute.get("name"), str):
            continue
        name = attribute["name"]
        if names is not None and name not in names:
            continue
        kind = attribute.get("type") or "string"
        value = attribute.get("value")
        converted = _converted(kind, value, memo)
        if converted is None and value not in (None, ""):
            warnings.append(f"program.{name}: {value!r} is not a valid {str(kind).lower()}; treated as null")
        result[name] = converted
    return result


def _converted(kind: Any, value: Any, memo: Conversions) -> Any:
    """``convert_attribute`` memoized for text values (the common case)."""
    if not isinstance(kind, str) or not isinstance(value, str):
        return convert_attribute(str(kind).lower(), value)
    key = (kind, value)
    found = memo.get(key, _NOT_CONVERTED)
    if found is _NOT_CONVERTED:
        found = convert_attribute(kind.lower(), value)
        if len(memo) < _CONVERSIONS_MAX:
            memo[key] = found
    return found


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
        parsed = parse_date(value)
        return None if parsed is None else parsed.isoformat()
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


def device_totals(
    devices: Iterable[dict[str, Any]], warnings: list[str] | None = None, keys: frozenset[str] | None = None
) -> dict[str, Any]:
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
            if keys is not None and key not in keys:
                continue
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


def fingerprint(raw: dict[str, Any], plan: FactsPlan) -> str:
    """A hash of the raw inputs behind the facts a policy reads, recorded with each decision.

    The site and top-level keys the policy reads, plus (when it reads any device or
    program fact) the device list and the program attributes as the API sent them, so it
    does not move when only ``now`` does. It is cheap by design (``marshal`` format 0 of
    what was parsed, hashed: twice as fast as ``repr``): the API serializes equal data the
    same way, and a payload that merely reorders keys (or a new Python version) counts as
    changed, never the reverse. Nothing is skipped on its say-so: the stale check before a
    change compares ``updated_at`` and re-evaluates.
    """
    site_value = raw.get("site")
    site: dict[str, Any] = site_value if isinstance(site_value, dict) else {}
    if plan.full:
        values: tuple[Any, ...] = (site, raw.get("devices"), raw.get("program_specific_attributes"))
    else:
        values = (
            [site.get(key) for key in plan.site_keys],
            [raw.get(key) for key in plan.top_keys],
            raw.get("devices") if plan.reads_devices else None,
            raw.get("program_specific_attributes") if plan.program_names else None,
        )
    try:
        data = marshal.dumps(values, 0)
    except ValueError:  # not plain JSON data (a caller's own objects): fall back to repr
        data = repr(values).encode("utf-8", "backslashreplace")
    return hashlib.blake2b(data, digest_size=16).hexdigest()


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []
