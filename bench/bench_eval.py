"""Evaluation benchmark: the engine's per-enrollment path against hand-written Python, raw
datalogic-py and two pure-Python JsonLogic libraries, on the same generated records.

    .venv/bin/python bench/bench_eval.py [--records 20000] [--repeat 5] [--seed 7]
                                         [--lib-records N] [--only POINTS] [--profile]

Points (``--only`` takes a comma list of these names; default: all but profile):

  engine     a   Evaluator(policy, now, trace=False).evaluate(raw): raw dict -> Decision
  closures   b   the same policy hand-written as Python closures over the raw dict
  lean       a*  a sketch of two engine fixes, assembled from the engine's own pieces
  datalogic  c1  datalogic-py Rule.evaluate(facts dict) per rule
             c2  DataHandle(facts) once per record + Session.evaluate_truthy per rule
             c2' DataHandle(facts) once per record + Session.evaluate_data + truthiness
             c3  DataHandle(facts) once per record + Session.evaluate_many (all rules)
  panzi      d   panzi-json-logic 1.0.1 jsonLogic(condition, facts)   (child process)
  qubit      e   json-logic-qubit 0.9.1 jsonLogic(condition, facts)   (child process)
  breakdown      where the engine's time goes: facts, DataHandle, rules, decision
  profile        pyinstrument over the engine path (also turned on by --profile)

In-process points run round-robin (one pass each per round) so load on a shared machine
hits them alike; each library child times itself, the engine, c2 and FactsBuilder the same
way. A full run writes its output to bench/results/eval-<date>.txt.

See bench/README.md for what each point measures and the latest results.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import subprocess
import sys
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as common
from _common import NOW, Outcome, Run, Tee, Timing, time_interleaved

ALL_POINTS = ("engine", "closures", "lean", "datalogic", "panzi", "qubit", "breakdown")


# =========================================================================================
# b. The policy hand-written in Python
# =========================================================================================
#
# Written as a developer would: one pass over the raw dict pulls out what the rules need
# (site, devices with their age, the program answers, two totals), then one closure per rule.
# Semantics follow the engine's (datalogic-py with the json-logic-js rewrites), including
# its one sharp edge: comparing a non-numeric string such as "unknown" with a number is an
# error for the whole enrollment, not false.


class NotANumber(Exception):
    pass


_TRUE_WORDS = frozenset({"true", "yes", "y", "1", "on"})
_FALSE_WORDS = frozenset({"false", "no", "n", "0", "off"})
_BATTERY_TYPES = ("BATTERY", "battery")
_TODAY = NOW.date()


def _num(value: Any) -> float | int:
    """A value as the engine's comparisons see it (null -> 0, numeric text -> number)."""
    kind = type(value)
    if kind is int or kind is float:
        return value
    if value is None:
        return 0
    if kind is bool:
        return int(value)
    if kind is str:
        if value == "":
            return 0
        if value != value.strip():
            raise NotANumber(value)
        try:
            return float(value)
        except ValueError:
            raise NotANumber(value) from None
    raise NotANumber(value)


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _day(value: Any) -> date | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        if len(value) == 10:
            return date.fromisoformat(value)
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC)
    return moment.date()


def _answer(kind: str, value: Any) -> Any:
    if value is None:
        return None
    if kind == "boolean":
        if isinstance(value, bool):
            return value
        word = str(value).strip().lower()
        return True if word in _TRUE_WORDS else False if word in _FALSE_WORDS else None
    if kind == "date":
        parsed = _day(value)
        return parsed.isoformat() if parsed else None
    return value if isinstance(value, str) else json.dumps(value)


class View:
    """What the rules read about one enrollment, pulled out of the raw dict once."""

    __slots__ = (
        "batteries", "capacity", "company", "count", "current", "devices", "power", "program",
        "state", "zip", "zip3",
    )  # fmt: skip

    def __init__(self, raw: dict[str, Any]) -> None:
        site = raw.get("site")
        site = site if isinstance(site, dict) else {}
        groups = site.get("groups")
        self.current = [
            g["id"] for g in (groups if isinstance(groups, list) else ())
            if isinstance(g, dict) and isinstance(g.get("id"), str)
        ]  # fmt: skip
        zip_code = site.get("zip_code")
        self.zip = zip_code
        self.zip3 = zip_code[:3] if isinstance(zip_code, str) else ""
        self.state = site.get("state_code")
        self.company = site.get("company_name")
        devices = raw.get("devices")
        # (type, attributes, configuration, serial, age_days) per device
        self.devices = []
        capacity = power = None
        for device in devices if isinstance(devices, list) else ():
            if not isinstance(device, dict):
                continue
            attributes = device.get("attributes")
            attributes = attributes if isinstance(attributes, dict) else {}
            installed = _day(device.get("install_date"))
            age = None if installed is None else (_TODAY - installed).days
            self.devices.append(
                (
                    device.get("type"),
                    attributes,
                    device.get("configuration"),
                    device.get("serial_number"),
                    age,
                )
            )
            wh, w = attributes.get("battery_capacity_wh"), attributes.get("battery_power_output_w")
            if type(wh) in (int, float) and math.isfinite(wh):
                capacity = (capacity or 0) + wh
            if type(w) in (int, float) and math.isfinite(w):
                power = (power or 0) + w
        self.count = len(self.devices)
        self.capacity, self.power = capacity, power
        self.batteries = [d for d in self.devices if d[0] in _BATTERY_TYPES]
        program: dict[str, Any] = {}
        answers = raw.get("program_specific_attributes")
        for answer in answers if isinstance(answers, list) else ():
            if isinstance(answer, dict) and isinstance(answer.get("name"), str):
                program[answer["name"]] = _answer(
                    str(answer.get("type") or "string").lower(), answer.get("value")
                )
        self.program = program


def _blank(value: Any) -> bool:
    return value is None or value == ""


def _cap(v: View) -> float | int:
    return v.capacity or 0


def _reserve(configuration: Any) -> Any:
    return configuration.get("reserve_percentage", 0) if isinstance(configuration, dict) else 0


COOP_ZIPS = frozenset({"77099", "75254", "78759", "78260", "76140", "79712"})
TARIFFS = ("RES-TOU", "RES-STD", "RES-EV")

# (rule id, status, predicate, reason)
RULES: list[tuple[str, str, Any, Any]] = [
    ("reject-el-paso-zip", "REJECTED",
     lambda v: v.zip3 in ("798", "799", "885"),
     lambda v: f"ZIP {_text(v.zip)} is outside the service territory"),
    ("reject-coop-feeder-zip", "REJECTED",
     lambda v: isinstance(v.zip, str) and v.zip[:5] in COOP_ZIPS,
     lambda v: f"ZIP {_text(v.zip)} is served by an electric cooperative"),
    ("reject-recalled-serials", "REJECTED",
     lambda v: any(
         isinstance(s, str) and s[:4] == "LGR1" and (age or 0) < 400 for _, _, _, s, age in v.batteries
     ),
     lambda v: "A battery at the site is in a recalled serial range"),
    ("reject-oversized-storage", "REJECTED",
     lambda v: _cap(v) >= 50000,
     lambda v: f"{_text(v.capacity)} Wh is above the residential cap"),
    ("review-high-power", "PENDING",
     lambda v: (v.power or 0) > 30000,
     lambda v: f"Battery output {_text(v.power)} W needs an interconnection review"),
    ("review-too-many-devices", "PENDING",
     lambda v: v.count > 3,
     lambda v: f"{v.count} devices: manual review"),
    ("review-very-old-battery", "PENDING",
     lambda v: any((age or 0) > 3600 for *_, age in v.batteries),
     lambda v: "A battery is more than 10 years old"),
    ("needs-action-reserve-too-high", "NEEDS_ACTION",
     lambda v: any(
         _num(_reserve(conf)) >= 50 and _num(attrs.get("battery_capacity_wh", 0)) < 6000
         for _, attrs, conf, _, _ in v.batteries
     ),
     lambda v: "Lower the battery reserve below 50% to take part"),
    ("reject-tiny-batteries", "REJECTED",
     lambda v: bool(v.batteries) and all(
         kind not in _BATTERY_TYPES or _num(attrs.get("battery_capacity_wh", 0)) < 3000
         for kind, attrs, *_ in v.devices
     ),
     lambda v: "Every battery at the site is under 3 kWh"),
    ("review-pv-oversized", "PENDING",
     lambda v: any(
         kind == "SOLAR_INVERTER" and _num(attrs.get("pv_capacity_w", 0)) > 12000
         for kind, attrs, *_ in v.devices
     ),
     lambda v: "PV array larger than 12 kW: interconnection review"),
    ("reject-unknown-tariff", "REJECTED",
     lambda v: bool(v.program.get("tariff")) and v.program.get("tariff") not in TARIFFS,
     lambda v: f"Tariff {_text(v.program.get('tariff'))} is not eligible"),
    ("review-ev-tariff-large-storage", "PENDING",
     lambda v: v.program.get("tariff") == "RES-EV" and _cap(v) >= 30000,
     lambda v: "Large storage on an EV tariff: manual review"),
    ("reject-thermostat-only", "REJECTED",
     lambda v: bool(v.devices) and all(kind == "THERMOSTAT" for kind, *_ in v.devices),
     lambda v: "Thermostats alone are not eligible for the battery program"),
    ("needs-action-unidentified-device", "NEEDS_ACTION",
     lambda v: any(not kind for kind, *_ in v.devices),
     lambda v: "Please identify every device at the site"),
    ("needs-action-service-address", "NEEDS_ACTION",
     lambda v: _blank(v.zip) or _blank(v.state),
     lambda v: "Please complete the service address"),
    ("needs-action-program-answers", "NEEDS_ACTION",
     lambda v: _blank(v.program.get("has_solar")) or _blank(v.program.get("tariff")),
     lambda v: "Please answer the solar and tariff questions"),
    ("needs-action-consent-date", "NEEDS_ACTION",
     lambda v: _blank(v.program.get("consent_date")),
     lambda v: "Please give the date you consented (YYYY-MM-DD)"),
    ("needs-action-vpp-needs-tou", "NEEDS_ACTION",
     lambda v: "PILOT_VPP" in v.current and v.program.get("tariff") == "RES-STD",
     lambda v: "VPP pilot members must switch to the RES-TOU tariff"),
    ("reject-commercial-site", "REJECTED",
     lambda v: bool(v.company),
     lambda v: "The site is a business; this program is residential"),
    ("reject-no-devices", "REJECTED",
     lambda v: v.count == 0,
     lambda v: "No devices are linked to the site"),
    ("reject-out-of-territory", "REJECTED",
     lambda v: bool(v.state) and v.state != "TX",
     lambda v: f"Site is in {_text(v.state)}, outside the service territory"),
    ("needs-action-account-number", "NEEDS_ACTION",
     lambda v: _blank(v.program.get("utility_account_number")),
     lambda v: "Please provide your utility account number"),
    ("reject-no-battery", "REJECTED",
     lambda v: not v.batteries,
     lambda v: "No battery found at the site"),
    ("review-old-battery", "PENDING",
     lambda v: any((age or 0) > 2920 for *_, age in v.batteries),
     lambda v: "Battery installed more than 8 years ago: manual review"),
    ("approve", "ACTIVE",
     lambda v: _cap(v) >= 10000 and (v.power or 0) >= 5000,
     lambda v: f"Meets program requirements ({_text(v.capacity)} Wh of storage)"),
    ("reject-too-small", "REJECTED",
     lambda v: _cap(v) < 5000,
     lambda v: f"Battery capacity {_text(v.capacity)} Wh is below the 5000 Wh minimum"),
]  # fmt: skip

LOAD_ZONES = ("LZ_HOUSTON", "LZ_NORTH", "LZ_SOUTH", "LZ_WEST")
# (predicate(view, decided status), add, remove)
GROUPS: list[tuple[Any, tuple[str, ...], tuple[str, ...]]] = [
    (lambda v, s: s == "ACTIVE" and v.zip3 in ("770", "772", "773", "774", "775"),
     ("LZ_HOUSTON",), ("LZ_NORTH", "LZ_SOUTH", "LZ_WEST")),
    (lambda v, s: s == "ACTIVE" and v.zip3 in ("750", "751", "752", "760", "761"),
     ("LZ_NORTH",), ("LZ_HOUSTON", "LZ_SOUTH", "LZ_WEST")),
    (lambda v, s: s == "ACTIVE" and v.program.get("has_solar") is True
     and v.program.get("tariff") == "RES-TOU" and _cap(v) >= 13000,
     ("PILOT_VPP",), ()),
    (lambda v, s: s == "REJECTED", (), (*LOAD_ZONES, "PILOT_VPP")),
]  # fmt: skip

APPLIES_TO = frozenset(
    {"CREATED", "SUBMITTED", "PENDING", "NEEDS_ACTION", "ACTIVE", "PAUSED", "REJECTED", "UNENROLLED"}
)


def closures_decide(raw: dict[str, Any]) -> tuple[str | None, str | None, str | None, list[str]]:
    """``(status, rule_id, reason, group_ids)``; an error leaves status and groups as they are."""
    view = View(raw)
    if raw.get("status") not in APPLIES_TO:
        return None, None, None, view.current
    try:
        for rule_id, status, when, reason in RULES:  # noqa: B007  (the match is used after the loop)
            if when(view):
                break
        else:
            rule_id, status, reason = "default", "PENDING", lambda v: "Needs manual review"
        text = reason(view)
        group_ids = view.current
        for when, add, remove in GROUPS:
            if when(view, status):
                group_ids = group_ids + [g for g in add if g not in group_ids]
                group_ids = [g for g in group_ids if g not in remove]
    except NotANumber:
        return None, None, None, view.current
    return status, rule_id, text, group_ids


# =========================================================================================
# Semantic probes: how each library treats the corner cases real payloads hit
# =========================================================================================

PROBES: list[tuple[str, Any, Any, str]] = [
    # (label, condition, data, json-logic-js result, read from its source)
    ("missing, value null", {"missing": ["a"]}, {"a": None}, '["a"]'),
    ('missing, value ""', {"missing": ["a"]}, {"a": ""}, '["a"]'),
    ("null < 5", {"<": [{"var": "a"}, 5]}, {"a": None}, "true"),
    ('"unknown" >= 10', {">=": [{"var": "a"}, 10]}, {"a": "unknown"}, "false"),
    ('"13500" >= 10000', {">=": [{"var": "a"}, 10000]}, {"a": "13500"}, "true"),
    ('" 5" >= 3', {">=": [{"var": "a"}, 3]}, {"a": " 5"}, "true"),
    ("[20000] >= 10", {">=": [{"var": "a"}, 10]}, {"a": [20000]}, "true"),
    ('1 == "X"', {"==": [{"var": "a"}, "X"]}, {"a": 1}, "false"),
    ("null == 0", {"==": [{"var": "a"}, 0]}, {"a": None}, "false"),
    ('"true" == true', {"==": [{"var": "a"}, True]}, {"a": "true"}, "false"),
    ("var default, value null", {"var": ["a", 7]}, {"a": None}, "null"),
    ("!! {}", {"!!": [{"var": "a"}]}, {"a": {}}, "true"),
    ("substr of missing", {"substr": [{"var": "a"}, 0, 3]}, {}, '"nul"'),
    ("in, haystack missing", {"in": ["a", {"var": "a"}]}, {}, "false"),
    ("all of []", {"all": [{"var": "a"}, {"var": ""}]}, {"a": []}, "false"),
]


def _show(value: Any) -> str:
    try:
        return json.dumps(value)
    except (TypeError, ValueError):
        return repr(value)


def probe_results(evaluate: Any) -> list[str]:
    results = []
    for _, condition, data, _ in PROBES:
        try:
            results.append(_show(evaluate(condition, data)))
        except Exception as exc:
            results.append(f"error:{type(exc).__name__}")
    return results


# =========================================================================================
# Child process: one pure-Python library, isolated by its own --target folder
# =========================================================================================


def child_main(lib: str, records: int, repeat: int, seed: int, clock: str) -> None:
    """Time one pure-Python library, with the engine, c2 and FactsBuilder interleaved beside it."""
    target = common.vendor_path(lib)
    sys.path.insert(0, str(target))
    import json_logic

    module_file = Path(json_logic.__file__).resolve()
    if target.resolve() not in module_file.parents:
        raise SystemExit(f"json_logic came from {module_file}, not {target}")
    apply = json_logic.jsonLogic
    if lib == "panzi":
        from json_logic.builtins import to_bool as truthy
    else:
        truthy = bool  # qubit's _truthy is bool()

    import datalogic_py

    from engine.policy.evaluator import Evaluator
    from engine.policy.facts import FactsBuilder

    def check(condition: Any, facts: Any) -> bool:
        return truthy(apply(condition, facts))

    policy = common.bench_policy()
    raws = common.load_records(records, seed)
    facts = common.build_facts(raws)
    decide = common.make_decider(policy, lambda c: c, check, source="source")
    outcomes, evaluated, errors = [], 0, 0
    for item in facts:
        outcome, count = decide(item, item)
        outcomes.append(outcome)
        evaluated += count
        errors += outcome[0] is None

    evaluator = Evaluator(policy, NOW, trace=False)
    builder = FactsBuilder(NOW)
    plain = datalogic_py.Engine()
    c2_decide = common.make_decider(
        policy, lambda c: plain.compile(json.dumps(c)), plain.session().evaluate_truthy
    )
    handle = datalogic_py.DataHandle

    def run_lib() -> None:
        for item in facts:
            decide(item, item)

    def run_engine() -> None:
        for raw in raws:
            evaluator.evaluate(raw)

    def run_c2() -> None:
        for item in facts:
            c2_decide(item, handle(item))

    def run_facts() -> None:
        for raw in raws:
            builder.build(raw)

    runs = [Run(key, "", func, len(raws), 0, repeat) for key, func in (
        ("lib", run_lib), ("engine", run_engine), ("c2", run_c2), ("facts", run_facts),
    )]  # fmt: skip
    time_interleaved(runs, repeat, clock)
    print(
        json.dumps(
            {
                "lib": lib,
                "package": common.PURE_LIBS[lib],
                "module": str(module_file.relative_to(common.REPO)),
                "seconds": {run.key: run.seconds for run in runs},
                "wall": {run.key: run.wall for run in runs},
                "items": len(facts),
                "evaluated": evaluated,
                "errors": errors,
                "outcomes": outcomes,
                "probes": probe_results(apply),
            }
        )
    )


def run_child(lib: str, records: int, repeat: int, seed: int, clock: str) -> dict[str, Any]:
    common.ensure_vendored(lib)
    command = [
        sys.executable, str(Path(__file__).resolve()), "--child", lib,
        "--records", str(records), "--repeat", str(repeat), "--seed", str(seed), "--clock", clock,
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, check=False, timeout=900)
    if done.returncode != 0:
        raise RuntimeError(f"{lib} child failed ({done.returncode}):\n{done.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


# =========================================================================================
# The parent: every point on the same records
# =========================================================================================


def outcome_of(decision: Any) -> Outcome:
    return decision.status, decision.rule_id, tuple(decision.group_ids)


def disagreements(reference: list[Outcome], other: list[Any], limit: int = 4) -> tuple[int, str]:
    pairs: dict[tuple[Any, Any], int] = {}
    count = 0
    for mine, got in zip(reference, other, strict=False):
        theirs = (got[0], got[1], tuple(got[2]))
        if mine != theirs:
            count += 1
            key = (mine[1] or "error/skip", theirs[1] or "error/skip")
            if mine[1] == theirs[1]:
                key = (f"{mine[1]} groups {list(mine[2])}", f"groups {list(theirs[2])}")
            pairs[key] = pairs.get(key, 0) + 1
    top = sorted(pairs.items(), key=lambda item: -item[1])[:limit]
    detail = "; ".join(f"engine {a} vs {b}: {n}" for (a, b), n in top)
    return count, detail


def fact_projection(policy: Any) -> Any:
    """A function keeping only the facts the policy's conditions read (None: cannot tell)."""
    from engine.policy.document import substitute_decision
    from engine.policy.logic import var_reads

    conditions = [rule.condition.source for rule in policy.rules]
    conditions += [substitute_decision(g.source, {"status": None, "rule_id": None}) for g in policy.groups]
    top: set[str] = set()
    site: set[str] = set()
    device: set[str] = set()
    for condition in conditions:
        for read in var_reads(condition):
            if read.scope is None:
                head, _, rest = read.path.partition(".")
                if head == "site" and rest:
                    site.add(rest.split(".")[0])
                elif head == "site" or not head:
                    return None
                else:
                    top.add(head)
            elif read.scope == "devices":
                device.add(read.path.split(".")[0])
                top.add("devices")
            else:
                return None  # iterating over something else: keep everything
    if "" in device:
        return None
    top.discard("site")

    def project(facts: dict[str, Any]) -> dict[str, Any]:
        out = {key: facts[key] for key in top if key in facts}
        whole_site = facts["site"]
        out["site"] = {key: whole_site[key] for key in site if key in whole_site}
        if "devices" in out:
            out["devices"] = [{k: d[k] for k in device if k in d} for d in facts["devices"]]
        return out

    return project


def lean_evaluator(policy: Any) -> Any:
    """A sketch of the fixes, built from the engine's own pieces (bench-only, not the engine).

    Same FactsBuilder, DataHandle, compiled conditions, reason templates and Decision; different
    in two ways: the rule loop calls Session.evaluate_truthy directly (one try around the
    loop instead of two wrapper calls per rule), and no fingerprint on the hot path.
    """
    import datalogic_py

    from engine.policy.decision import Action, Decision
    from engine.policy.facts import FactsBuilder
    from engine.policy.logic import default_engine, lookup

    engine = default_engine()
    truthy = engine._engine.session().evaluate_truthy  # the native session (private: a sketch)
    builder = FactsBuilder(NOW)
    rules = [(rule.condition.native, rule.status, rule.id, rule.reason) for rule in policy.rules]
    fallback = policy.document.default
    default = (fallback.status.value, "default", policy.default_reason) if fallback else (None, None, None)
    applies = policy.applies_to
    handle_type, failure = datalogic_py.DataHandle, datalogic_py.DataLogicError
    groups_by_outcome: dict[tuple[Any, Any], list[tuple[Any, Any]]] = {}

    def evaluate(raw: dict[str, Any]) -> Any:
        facts, warnings = builder.build(raw)
        current = facts["site"]["group_ids"]
        status_now = raw.get("status")
        if status_now not in applies:
            return Decision(
                raw.get("id"), status_now, None, None, None, current, current, [], [], Action.SKIP
            )
        handle = handle_type(facts)
        try:
            for native, *decided in rules:
                if truthy(native, handle):
                    status, rule_id, template = decided
                    break
            else:
                status, rule_id, template = default
            key = (status, rule_id)
            groups = groups_by_outcome.get(key)
            if groups is None:
                groups = [(g.condition_for(engine, status, rule_id).native, g) for g in policy.groups]
                groups_by_outcome[key] = groups
            group_ids = list(current)
            for native, group in groups:
                if truthy(native, handle):
                    group_ids += [a for a in group.add if a not in group_ids]
                    group_ids = [g for g in group_ids if g not in group.remove]
        except failure as exc:
            return Decision(
                raw.get("id"),
                status_now,
                None,
                None,
                None,
                current,
                current,
                [],
                [],
                Action.ERROR,
                error=str(exc),
            )
        reason = template.render(lambda path: lookup(facts, path)) if template else None
        added = [g for g in group_ids if g not in current]
        removed = [g for g in current if g not in group_ids]
        changed = (status is not None and status != status_now) or bool(added or removed)
        return Decision(
            raw.get("id"), status_now, status, reason, rule_id, group_ids, current, added, removed,
            Action.UPDATE if changed else Action.NONE, warnings=warnings, updated_at=raw.get("updated_at"),
        )  # fmt: skip

    return evaluate


_FALSY_JSON = frozenset({"false", "null", "0", "0.0", "-0", '""', "[]", "{}"})


def many_decider(policy: Any, plain: Any, session: Any) -> Any:
    """c3: every status rule in one native call, then every group rule in one more.

    Same outcome as first match: the first result that is an error or truthy decides.
    """
    import datalogic_py

    error_type = datalogic_py.BatchItemError
    applies = policy.applies_to
    compile_ = lambda condition: plain.compile(json.dumps(condition))  # noqa: E731
    rules = [compile_(rule.condition.normalized) for rule in policy.rules]
    meta = [(rule.status, rule.id) for rule in policy.rules]
    fallback = policy.document.default
    default = (fallback.status.value, "default") if fallback else (None, None)
    groups = common.GroupConditions(policy, lambda c: c)
    compiled_groups: dict[tuple[Any, Any], tuple[list[Any], list[Any]]] = {}

    def decide(facts: dict[str, Any], handle: Any) -> tuple[Outcome, int]:
        current = facts["site"]["group_ids"]
        if facts.get("status") not in applies:
            return (None, None, tuple(current)), 0
        status, rule_id = default
        for index, result in enumerate(session.evaluate_many(rules, handle)):
            if type(result) is error_type:
                return (None, None, tuple(current)), len(rules)
            if result not in _FALSY_JSON:
                status, rule_id = meta[index]
                break
        key = (status, rule_id)
        entry = compiled_groups.get(key)
        if entry is None:
            from engine.policy.logic import normalize

            found = groups.for_outcome(status, rule_id)
            entry = ([compile_(normalize(c)) for c, _, _ in found], [(a, r) for _, a, r in found])
            compiled_groups[key] = entry
        group_ids = list(current)
        for result, (add, remove) in zip(session.evaluate_many(entry[0], handle), entry[1], strict=True):
            if type(result) is error_type:
                return (None, None, tuple(current)), len(rules) + len(entry[0])
            if result not in _FALSY_JSON:
                group_ids = common.apply_group(group_ids, add, remove)
        return (status, rule_id, tuple(group_ids)), len(rules) + len(entry[0])

    return decide


def js_truthy(value: Any) -> bool:
    if value is None or value is False:
        return False
    if value is True:
        return True
    if isinstance(value, int | float):
        return value == value and value != 0
    if isinstance(value, str | list):
        return len(value) > 0
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--records", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--lib-records", type=int, default=None,
        help="records for the pure-Python libraries: the first N of the same records (default: all)",
    )  # fmt: skip
    parser.add_argument(
        "--only", default=",".join(ALL_POINTS), help=f"comma list of {', '.join(ALL_POINTS)}, profile"
    )
    parser.add_argument(
        "--profile", action="store_true", help="also profile the engine path with pyinstrument"
    )
    parser.add_argument(
        "--results", default=None,
        help="where to write the output (default bench/results/eval-<date>.txt for a full run; '-' for none)",
    )  # fmt: skip
    parser.add_argument(
        "--clock", choices=common.CLOCKS, default="cpu",
        help="cpu: this process's CPU time (default; steady on a shared machine); wall: elapsed time",
    )  # fmt: skip
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.child:
        child_main(args.child, args.records, args.repeat, args.seed, args.clock)
        return 0

    points = [p.strip() for p in args.only.split(",") if p.strip()]
    unknown = set(points) - {*ALL_POINTS, "profile"}
    if unknown:
        parser.error(f"unknown points: {', '.join(sorted(unknown))}")
    if args.profile and "profile" not in points:
        points.append("profile")
    full_run = set(ALL_POINTS) <= set(points)
    results_path = args.results
    if results_path is None and full_run:
        results_path = str(common.BENCH_DIR / "results" / f"eval-{datetime.now(UTC):%Y-%m-%d}.txt")

    out = Tee()
    bench(args, points, out)
    if results_path and results_path != "-":
        Path(results_path).parent.mkdir(parents=True, exist_ok=True)
        Path(results_path).write_text(out.text(), encoding="utf-8")
        print(f"(written to {Path(results_path).resolve().relative_to(common.REPO)})")
    return 0


def bench(args: argparse.Namespace, points: list[str], out: Tee) -> None:
    import datalogic_py

    from engine.policy import facts as facts_module
    from engine.policy.evaluator import Evaluator
    from engine.policy.facts import FactsBuilder
    from engine.policy.logic import default_engine, evaluate_logic

    out(common.machine_line())
    out(
        f"command: bench/bench_eval.py --records {args.records} --repeat {args.repeat} --seed {args.seed}"
        + (f" --clock {args.clock}" if args.clock != "cpu" else "")
        + (f" --lib-records {args.lib_records}" if args.lib_records else "")
        + (f" --only {','.join(points)}" if args.only != ",".join(ALL_POINTS) else "")
    )
    out(
        f"data: {args.records:,} records of {common.PROGRAM_ID}, seed {args.seed}, "
        f"now {NOW:%Y-%m-%dT%H:%M:%SZ}"
    )
    policy = common.bench_policy()
    out(
        f"policy: {common.POLICY_PATH.relative_to(common.REPO)}: {len(policy.rules)} status rules + "
        f"{len(policy.groups)} group rules + default; datalogic-py {_version('datalogic-py')}"
    )

    raws = common.load_records(args.records, args.seed)
    facts = common.build_facts(raws)
    n = len(raws)

    # Reference decisions and the rule-evaluation count (first match + every group rule).
    evaluator = Evaluator(policy, NOW, trace=False)
    engine_decisions = [evaluator.evaluate(raw) for raw in raws]
    reference = [outcome_of(d) for d in engine_decisions]
    plain = datalogic_py.Engine()
    session = plain.session()
    compile_plain = lambda condition: plain.compile(json.dumps(condition))  # noqa: E731
    c2_decide = common.make_decider(policy, compile_plain, session.evaluate_truthy)
    evaluated = 0
    for item in facts:
        evaluated += c2_decide(item, datalogic_py.DataHandle(item))[1]
    errors = sum(d.action.value == "error" for d in engine_decisions)
    by_rule: dict[str, int] = {}
    for d in engine_decisions:
        by_rule[d.rule_id or "error"] = by_rule.get(d.rule_id or "error", 0) + 1
    out(
        f"workload: {evaluated:,} rule evaluations ({evaluated / n:.1f} of 30 per record on average); "
        f"{by_rule.get('default', 0) / n:.0%} reach the default, {errors / n:.1%} are errors; "
        f"most decided by: "
        + ", ".join(f"{k} {v / n:.0%}" for k, v in sorted(by_rule.items(), key=lambda kv: -kv[1])[:4])
    )

    runs: list[Run] = []
    notes: list[str] = []

    def add(key: str, name: str, func: Any, repeat: int = args.repeat, evals: int = evaluated) -> None:
        runs.append(Run(key, name, func, n, evals, repeat))

    def agree(label: str, got: list[Any]) -> None:
        mismatch, detail = disagreements(reference, got)
        notes.append(
            f"{label} vs engine: {mismatch} disagreements of {n:,}" + (f" ({detail})" if mismatch else "")
        )

    if "engine" in points:

        def run_engine() -> None:
            for raw in raws:
                evaluator.evaluate(raw)

        add("a", "a   engine Evaluator.evaluate(raw)", run_engine)

    if "closures" in points:
        decided = [closures_decide(raw) for raw in raws]
        agree("b   closures (status, rule_id, group_ids)", [(s, r, g) for s, r, _, g in decided])
        reasons = sum(d.reason != c[2] for d, c in zip(engine_decisions, decided, strict=True))
        notes.append(f"b   closures vs engine: {reasons} different reasons of {n:,}")

        def run_closures() -> None:
            for raw in raws:
                closures_decide(raw)

        add("b", "b   hand-written closures (raw dict)", run_closures)

    if "lean" in points:
        lean = lean_evaluator(policy)
        agree("a*  lean sketch", [outcome_of(lean(raw)) for raw in raws])

        def run_lean() -> None:
            for raw in raws:
                lean(raw)

        add("a*", "a*  lean sketch of the engine path (bench only)", run_lean)

    if "datalogic" in points:
        c1_decide = common.make_decider(
            policy, compile_plain, lambda rule, data: js_truthy(rule.evaluate(data))
        )
        c2d_decide = common.make_decider(
            policy, compile_plain, lambda rule, h: js_truthy(session.evaluate_data(rule, h))
        )
        c3_decide = many_decider(policy, plain, session)
        as_written = common.make_decider(policy, compile_plain, session.evaluate_truthy, source="source")
        handles = [datalogic_py.DataHandle(item) for item in facts]
        for label, decide, use_handles in (
            ("c1  datalogic Rule.evaluate(dict)", c1_decide, False),
            ("c2  datalogic DataHandle+evaluate_truthy", c2_decide, True),
            ("c2' datalogic DataHandle+evaluate_data", c2d_decide, True),
            ("c3  datalogic DataHandle+evaluate_many", c3_decide, True),
            ("    datalogic, conditions as written (no rewrites)", as_written, True),
        ):
            agree(label, [decide(f, h if use_handles else f)[0] for f, h in zip(facts, handles, strict=True)])
        del handles

        def run_with(decide: Any, use_handle: bool) -> Any:
            handle = datalogic_py.DataHandle

            def run() -> None:
                for item in facts:
                    decide(item, handle(item) if use_handle else item)

            return run

        add("c1", "c1  datalogic Rule.evaluate(facts dict)", run_with(c1_decide, False), min(args.repeat, 3))
        add("c2", "c2  datalogic DataHandle + evaluate_truthy", run_with(c2_decide, True))
        add("c2d", "c2' datalogic DataHandle + evaluate_data", run_with(c2d_decide, True))
        add("c3", "c3  datalogic DataHandle + evaluate_many", run_with(c3_decide, True), evals=n * 30)

    fingerprinted: list[str] = []
    if "breakdown" in points:
        builder = FactsBuilder(NOW)
        engine = default_engine()
        logic_session = engine.session()
        project = fact_projection(policy) or (lambda item: item)
        handles = [datalogic_py.DataHandle(item) for item in facts]

        def run_facts() -> None:
            for raw in raws:
                builder.build(raw)

        def run_handles() -> None:
            for item in facts:
                datalogic_py.DataHandle(item)

        def run_projected() -> None:
            for item in facts:
                datalogic_py.DataHandle(project(item))

        def run_rules() -> None:
            for h in handles:
                status = rule_id = None
                try:
                    for rule in policy.rules:
                        if logic_session.is_true(rule.condition, h):
                            status, rule_id = rule.status, rule.id
                            break
                    else:
                        status, rule_id = "PENDING", "default"
                    for group in policy.groups:
                        logic_session.is_true(group.condition_for(engine, status, rule_id), h)
                except Exception:
                    continue

        from engine.policy.evaluator import facts_plan

        plan = facts_plan(policy)  # the engine fingerprints the raw inputs its facts come from
        fingerprinted = [*plan.site_keys, *plan.top_keys, "devices", "program_specific_attributes"]

        def run_fingerprint() -> None:
            for raw in raws:
                facts_module.fingerprint(raw, plan)

        add("facts", "FactsBuilder.build", run_facts)
        add("handle", "DataHandle(facts)", run_handles)
        add("rules", "rule evaluation (LogicSession.is_true)", run_rules)
        add("fingerprint", "facts_fingerprint()", run_fingerprint)
        add("projected", "projection + DataHandle(read facts only)", run_projected)
        if "engine" not in points:
            add("a", "a   engine Evaluator.evaluate(raw)", lambda: [evaluator.evaluate(r) for r in raws])

    # Every in-process point once per round, so a busy moment hits all of them alike.
    time_interleaved(runs, args.repeat, args.clock)
    timings = {run.key: Timing(run.name, run.items, run.evaluations, run.seconds, run.wall) for run in runs}
    shown = [key for key in ("a", "a*", "b", "c1", "c2", "c2d", "c3") if key in timings]
    out()
    out(
        f"== throughput: median of {args.repeat} interleaved runs on {args.clock} time, "
        f"[min .. max] enrollments/s =="
    )
    for key in shown:
        out(timings[key].line())
    if not shown and not any(lib in points for lib in ("panzi", "qubit")):
        out("(no throughput point selected)")

    children: dict[str, dict[str, Any]] = {}
    for key, lib in (("d", "panzi"), ("e", "qubit")):
        if lib not in points:
            continue
        lib_records = min(args.lib_records or n, n)
        try:
            result = run_child(lib, lib_records, args.repeat, args.seed, args.clock)
        except (RuntimeError, subprocess.TimeoutExpired, OSError) as exc:
            out(f"{key}   {lib}: skipped: {exc}")
            continue
        children[key] = result
        seconds = result["seconds"]
        items = result["items"]
        timings[key] = Timing(
            f"{key}   {result['package']} (facts)",
            items,
            result["evaluated"],
            seconds["lib"],
            result["wall"]["lib"],
        )
        out(timings[key].line())
        mismatch, detail = disagreements(reference[:lib_records], result["outcomes"])
        notes.append(
            f"{key}   {result['package']} vs engine: {lib_records - mismatch:,} of {lib_records:,} agree"
            + (f"; {mismatch} differ ({detail})" if mismatch else "")
            + f"; {result['errors']} raised inside the library (loaded from {result['module']})"
        )

    if notes:
        out()
        out("== agreement with the engine (status, rule_id, group_ids) ==")
        for note in notes:
            out(note)

    if "breakdown" in points:
        out()
        out("== where the engine's time goes (per enrollment, medians of the same interleaved rounds) ==")
        total = statistics.median(timings["a"].seconds)
        parts = {key: statistics.median(timings[key].seconds) for key in ("facts", "handle", "rules")}
        rest = total - sum(parts.values())
        for key in ("facts", "handle", "rules"):
            out(f"{timings[key].name:<44} {parts[key] / n * 1e6:8.1f} us  {parts[key] / total:6.1%}")
        out(f"{'decision building (the rest)':<44} {rest / n * 1e6:8.1f} us  {rest / total:6.1%}")
        fp = statistics.median(timings["fingerprint"].seconds)
        out(f"{'  of which facts_fingerprint()':<44} {fp / n * 1e6:8.1f} us  {fp / total:6.1%}")
        out(f"{'engine total':<44} {total / n * 1e6:8.1f} us  100.0%")
        projected = statistics.median(timings["projected"].seconds)
        out(f"{'(for comparison: ' + timings['projected'].name + ')':<44} {projected / n * 1e6:8.1f} us")
        out(f"fingerprinted inputs: {', '.join(fingerprinted)}")

    rate = {key: t.median_rate for key, t in timings.items()}
    ratio_lines: list[str] = []

    def ratio(label: str, value: float, note: str = "", target: float | None = None) -> None:
        verdict = f"target >= {target:g}: {'met' if value >= target else 'NOT met'}" if target else ""
        extra = "; ".join(part for part in (verdict, note) if part)
        ratio_lines.append(f"{label:<50} {value:7.2f}" + (f"   ({extra})" if extra else ""))

    def child_rate(result: dict[str, Any], key: str) -> float:
        return float(result["items"] / statistics.median(result["seconds"][key]))

    if "a" in rate and "b" in rate:
        ratio("engine / closures", rate["a"] / rate["b"], target=0.5)
    if "a*" in rate and "b" in rate:
        ratio("lean sketch / closures", rate["a*"] / rate["b"], "what the fixes would give", 0.5)
    if "a*" in rate and "a" in rate:
        ratio("lean sketch / engine", rate["a*"] / rate["a"])
    if children:
        best = max(children, key=lambda k: rate[k])
        result = children[best]
        name = result["package"].split("==")[0]
        lib_rate, engine_rate = child_rate(result, "lib"), child_rate(result, "engine")
        with_facts = 1 / (1 / lib_rate + 1 / child_rate(result, "facts"))
        ratio_lines.append(
            f"(measured interleaved in the {name} child process, on its {result['items']:,} records)"
        )
        ratio(f"engine / best pure-Python ({name})", engine_rate / lib_rate, "library on prebuilt facts", 10)
        ratio(
            f"engine / ({name} + FactsBuilder.build)",
            engine_rate / with_facts,
            f"same raw-to-decision path: {with_facts:,.0f} enr/s",
            10,
        )
        ratio(f"datalogic c2 / {name}", child_rate(result, "c2") / lib_rate, "same work: facts prebuilt")
        if "a*" in rate and "a" in rate:
            ratio(
                f"lean sketch / {name}",
                rate["a*"] / rate["a"] * engine_rate / lib_rate,
                "via lean/engine here",
                10,
            )
        if len(children) == 2:
            ratio("panzi / qubit", rate["d"] / rate["e"], "separate processes")
    if "c2" in rate:
        if "c1" in rate:
            ratio("datalogic c2 / c1", rate["c2"] / rate["c1"], "DataHandle once per record vs dict per rule")
        if "c2d" in rate:
            ratio("datalogic c2 / c2'", rate["c2"] / rate["c2d"], "truthiness in Rust vs Python value")
        if "c3" in rate:
            ratio("datalogic c3 / c2", rate["c3"] / rate["c2"], "all rules in one call vs first match")
        if "a" in rate:
            ratio(
                "engine / datalogic c2",
                rate["a"] / rate["c2"],
                "the engine also builds facts and the Decision",
            )

    if ratio_lines:
        out()
        out("== ratios (median enrollments/s over median enrollments/s) ==")
        for line in ratio_lines:
            out(line)

    if children or "datalogic" in points:
        out()
        out("== semantics probes (what each library returns; error:X = raised X) ==")
        raw_engine = datalogic_py.Engine()
        columns = {
            "engine": probe_results(evaluate_logic),
            "datalogic raw": probe_results(lambda c, d: raw_engine.compile(json.dumps(c)).evaluate(d)),
            **{result["lib"]: result["probes"] for result in children.values()},
        }
        widths = [
            max(len(p[0]) for p in PROBES),
            max(8, *(len(p[3]) for p in PROBES)),
            *(max(len(k), *(len(v) for v in values)) for k, values in columns.items()),
        ]
        header = ["case", "js (ref)", *columns]
        out("  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)))
        for index, (label, _, _, js) in enumerate(PROBES):
            row = [label, js, *(values[index] for values in columns.values())]
            out("  ".join(str(v).ljust(w) for v, w in zip(row, widths, strict=True)))

    if "profile" in points:
        out()
        profile(raws, policy, out)
    out()
    out(f"end: {datetime.now(UTC):%Y-%m-%d %H:%M UTC} {common.load_line()}")


def profile(raws: list[dict[str, Any]], policy: Any, out: Tee, top: int = 30) -> None:
    from pyinstrument import Profiler

    from engine.policy.evaluator import Evaluator

    evaluator = Evaluator(policy, NOW, trace=False)
    profiler = Profiler(interval=0.0002)
    profiler.start()
    for raw in raws:
        evaluator.evaluate(raw)
    profiler.stop()
    root = profiler.last_session.root_frame()
    total = root.time if root is not None else 0.0
    own: dict[str, float] = {}
    inclusive: dict[str, float] = {}

    def walk(frame: Any, stack: frozenset[str]) -> None:
        if frame.is_synthetic:
            return
        name = f"{frame.function}  {frame.file_path_short}:{frame.line_no}"
        if frame.class_name:
            name = f"{frame.class_name}.{name}"
        children = [child for child in frame.children if not child.is_synthetic]
        own[name] = own.get(name, 0.0) + frame.time - sum(child.time for child in children)
        if name not in stack:
            inclusive[name] = inclusive.get(name, 0.0) + frame.time
        for child in children:
            walk(child, stack | {name})

    if root is not None:
        walk(root, frozenset())
    out(
        f"== pyinstrument: engine path over {len(raws):,} records "
        f"({total:.2f} s sampled), top {top} functions by own time =="
    )
    out(f"{'own':>6} {'total':>6}  function")
    for name, seconds in sorted(own.items(), key=lambda item: -item[1])[:top]:
        out(f"{seconds / total:6.1%} {inclusive.get(name, 0.0) / total:6.1%}  {name}")
    out()
    out("== pyinstrument call tree (trimmed) ==")
    tree = profiler.output_text(unicode=False, color=False, time="percent_of_total")
    lines = [line for line in tree.splitlines() if line.strip()]
    start = next((i for i, line in enumerate(lines) if "Evaluator.evaluate" in line), 0)
    for line in lines[start : start + 45]:
        out(line)


def _version(package: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return "?"


if __name__ == "__main__":
    sys.exit(main())
