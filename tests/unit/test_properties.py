"""Property tests: the evaluator never raises and is deterministic, first match and group
order follow the spec (checked against small reference models), and loading any YAML raises
only ``PolicyError``."""

from __future__ import annotations

import contextlib
import copy
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.errors import PolicyError
from engine.policy.decision import Action, Decision
from engine.policy.document import Policy, load_policy, load_policy_text
from engine.policy.evaluator import Evaluator
from engine.policy.logic import ALLOWED_OPERATORS
from engine.policy.statuses import EnrollmentStatus
from engine.policy.yamlsafe import load_yaml
from engine.runs.patch import patch_body

REPO_ROOT = Path(__file__).resolve().parents[2]
NOW = datetime(2026, 11, 25, tzinfo=UTC)
STATUSES = [status.value for status in EnrollmentStatus]
PROPERTY = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])  # examples: the profile
POLICIES = {
    name: load_policy(REPO_ROOT / "rules" / f"{name}.yaml")
    for name in ("tx_residential_battery", "ca_ev_charging")
}

# --- messy enrollments ----------------------------------------------------------------------------

# Anything JSON can carry and more: integers and floats of any size, NaN and infinities,
# text with lone surrogates (test_evaluator.py pins the single cases of each).
scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(st.characters(blacklist_categories=()), max_size=12)
    | st.sampled_from(["13500", "1.5", "abc", "", "yes", "NO", "2026-01-01", "TX", "77002", "NaN", "-1"])
)
junk = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=8,
)


def weighted(
    good: st.SearchStrategy[Any], bad: st.SearchStrategy[Any], per_ten: int
) -> st.SearchStrategy[Any]:
    """``good`` about ``per_ten`` times in ten, else ``bad`` (one_of would weigh them equally)."""
    return st.integers(0, 9).flatmap(lambda n: good if n < per_ten else bad)


def maybe(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Usually the right shape, sometimes anything at all."""
    return weighted(strategy, junk, 8)


group_ids = st.sampled_from(["LZ_HOUSTON", "LZ_NORTH", "PILOT_VPP", "BAY_AREA", "PILOT_V2G", "OTHER"])
site_group = maybe(st.fixed_dictionaries({}, optional={"id": maybe(group_ids), "name": junk}))
site = maybe(
    st.fixed_dictionaries(
        {},
        optional={
            "state_code": maybe(st.sampled_from(["TX", "CA", "OK", "NV", ""])),
            "zip_code": maybe(st.sampled_from(["77002", "75201", "78701", "94110", "90012", "92101", ""])),
            "groups": maybe(st.lists(site_group, max_size=4)),
            "group_ids": junk,
            "city": junk,
        },
    )
)
attribute_values = maybe(st.integers(min_value=-1, max_value=30_000) | st.floats(-1e6, 1e6))
device = maybe(
    st.fixed_dictionaries(
        {},
        optional={
            "type": maybe(st.sampled_from(["BATTERY", "battery", "EV_CHARGER", "SOLAR_INVERTER"])),
            "install_date": maybe(st.sampled_from(["2023-05-01T00:00:00Z", "2017-01-15", "02/22/2022", ""])),
            "attributes": maybe(
                st.dictionaries(
                    st.sampled_from(
                        ["battery_capacity_wh", "battery_power_output_w", "charger_level", "networked", "x"]
                    ),
                    attribute_values,
                    max_size=4,
                )
            ),
        },
    )
)
program_attribute = maybe(
    st.fixed_dictionaries(
        {},
        optional={
            "name": maybe(
                st.sampled_from(
                    [
                        "utility_account_number",
                        "has_solar",
                        "tariff",
                        "vehicle_count",
                        "rate_plan",
                        "service_start_date",
                    ]
                )
            ),
            "type": maybe(st.sampled_from(["string", "boolean", "integer", "number", "date", "BOOLEAN"])),
            "value": maybe(
                st.sampled_from(["TX-1", "yes", "maybe", "2", "two", "RES-TOU", "EV2-A", "2026-11-10"])
            ),
        },
    )
)
in_scope = st.sampled_from(["SUBMITTED", "PENDING", "NEEDS_ACTION"])
messy_enrollments = st.builds(
    lambda fields, extra: {**extra, **fields},
    st.fixed_dictionaries(
        {"status": weighted(in_scope, maybe(st.sampled_from([*STATUSES, "", "submitted"])), 8)},
        optional={
            "id": maybe(st.text(min_size=1, max_size=8)),
            "site": site,
            "devices": maybe(st.lists(device, max_size=4)),
            "program_specific_attributes": maybe(st.lists(program_attribute, max_size=5)),
            "updated_at": junk,
        },
    ),
    st.dictionaries(st.text(max_size=6), junk, max_size=2),
)


_DELETE = object()


def _seeds(policy_name: str) -> list[dict[str, Any]]:
    """The enrollments of a policy's own test cases (base merged under each case)."""
    spec = yaml.safe_load((REPO_ROOT / "rules" / f"{policy_name}.test.yaml").read_text(encoding="utf-8"))
    base = spec.get("base", {})
    seeds = []
    for case in spec["cases"]:
        merged = copy.deepcopy(base)
        for key, value in case.get("enrollment", {}).items():
            if isinstance(value, dict) and isinstance(merged.get(key), dict):
                merged[key] = {**merged[key], **value}
            else:
                merged[key] = value
        seeds.append(merged)
    return seeds


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix] if prefix else []
    if isinstance(node, dict):
        for key, value in node.items():
            found += _paths(value, (*prefix, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            found += _paths(value, (*prefix, index))
    return found


def _mutated(seed: dict[str, Any], edits: list[tuple[tuple[Any, ...], Any]]) -> dict[str, Any]:
    """Apply edits in order; an edit whose path an earlier edit replaced is dropped."""
    raw = copy.deepcopy(seed)
    for path, value in edits:
        parent: Any = raw
        for part in path[:-1]:
            parent = _child(parent, part)
        last = path[-1]
        if isinstance(parent, dict) and isinstance(last, str):
            if value is _DELETE:
                parent.pop(last, None)
            else:
                parent[last] = value
        elif isinstance(parent, list) and isinstance(last, int) and last < len(parent):
            parent[last] = None if value is _DELETE else value
    return raw


def _child(node: Any, part: Any) -> Any:
    if isinstance(node, dict) and isinstance(part, str):
        return node.get(part)
    if isinstance(node, list) and isinstance(part, int) and part < len(node):
        return node[part]
    return None


def mutated_cases(policy_name: str) -> st.SearchStrategy[dict[str, Any]]:
    """A policy's test-case enrollments with a few values replaced by junk or removed: they
    reach every rule, then go wrong in one or two places."""
    seeds = [(seed, _paths(seed)) for seed in _seeds(policy_name)]
    return st.sampled_from(seeds).flatmap(
        lambda pair: st.lists(st.tuples(st.sampled_from(pair[1]), junk | st.just(_DELETE)), max_size=3).map(
            lambda edits: _mutated(pair[0], edits)
        )
    )


MUTATED_CASES = {name: mutated_cases(name) for name in POLICIES}


def check_consistent(policy: Policy, raw: Any, decision: Decision) -> None:
    assert isinstance(decision.action, Action)
    current = decision.current_group_ids
    if decision.action is Action.SKIP:
        assert decision.current_status not in policy.applies_to
    else:
        assert isinstance(raw, dict)
    if decision.action in (Action.SKIP, Action.ERROR):
        assert (decision.status, decision.reason, decision.rule_id) == (None, None, None)
        assert decision.group_ids == current
        assert patch_body(decision) == ({}, None)
        assert (decision.action is Action.ERROR) == bool(decision.error)
        return
    assert decision.error is None
    if decision.status is not None:
        assert decision.status in STATUSES
        assert isinstance(decision.reason, str)
        assert decision.rule_id in [*(r.id for r in policy.rules), "default"]
    else:
        assert decision.rule_id is None
    assert decision.groups_added == [g for g in decision.group_ids if g not in current]
    assert decision.groups_removed == [g for g in current if g not in decision.group_ids]
    changes = decision.status_changes or set(decision.group_ids) != set(current)
    assert (decision.action is Action.UPDATE) == changes
    assert bool(patch_body(decision)[0]) == changes


def as_json(decision: Decision) -> str:
    return json.dumps(decision.to_dict(), sort_keys=True, default=repr)


@pytest.mark.parametrize("name", sorted(POLICIES))
@PROPERTY
@given(data=st.data())
def test_evaluation_never_raises_and_is_consistent(name: str, data: st.DataObject) -> None:
    policy = POLICIES[name]
    raw = data.draw(weighted(MUTATED_CASES[name], messy_enrollments, 6))
    decision = Evaluator(policy, NOW).evaluate(raw)
    check_consistent(policy, raw, decision)


@pytest.mark.parametrize("name", sorted(POLICIES))
@PROPERTY
@given(data=st.data())
def test_evaluation_is_deterministic(name: str, data: st.DataObject) -> None:
    policy = POLICIES[name]
    raw = data.draw(st.one_of(MUTATED_CASES[name], messy_enrollments, junk))
    evaluator = Evaluator(policy, NOW)
    first = evaluator.evaluate(raw)
    assert as_json(first) == as_json(evaluator.evaluate(raw))
    assert as_json(first) == as_json(Evaluator(policy, NOW).evaluate(raw))


# --- first match and groups against reference models -------------------------------------------------


@dataclass(frozen=True)
class Cond:
    """A condition the test can evaluate itself: a literal, a site fact, or the decided status."""

    kind: str  # "literal" | "site" | "decision"
    key: str = ""
    value: Any = None

    def logic(self) -> Any:
        if self.kind == "literal":
            return self.value
        path = "decision.status" if self.kind == "decision" else f"site.{self.key}"
        return {"==": [{"var": path}, self.value]}

    def holds(self, site: dict[str, int], decided: str | None) -> bool:
        if self.kind == "literal":
            return bool(self.value)
        if self.kind == "decision":
            return decided == self.value
        return site.get(self.key) == self.value


site_conditions = st.one_of(
    st.builds(Cond, st.just("literal"), value=st.booleans()),
    st.builds(Cond, st.just("site"), st.sampled_from(["a", "b"]), st.integers(0, 2)),
)
group_conditions = st.one_of(
    site_conditions, st.builds(Cond, st.just("decision"), value=st.sampled_from(STATUSES))
)
pool = st.sampled_from(["G0", "G1", "G2", "G3", "G4"])


@dataclass(frozen=True)
class Scenario:
    rules: list[tuple[Cond, str]]
    default: str | None
    groups: list[tuple[Cond, list[str], list[str]]]
    site: dict[str, int]
    current_status: str
    current_groups: list[str]

    def policy(self) -> Policy:
        document: dict[str, Any] = {
            "program_id": "prop",
            "applies_to": STATUSES,
            "rules": [
                {"id": f"r{i}", "when": cond.logic(), "status": status, "reason": f"reason {i} {{site.a}}"}
                for i, (cond, status) in enumerate(self.rules)
            ],
            "groups": [
                {"id": f"g{i}", "when": cond.logic(), "add": add, "remove": remove}
                for i, (cond, add, remove) in enumerate(self.groups)
            ],
        }
        if self.default is not None:
            document["default"] = {"status": self.default, "reason": "by default"}
        return load_policy_text(json.dumps(document), "prop.yaml")

    def enrollment(self) -> dict[str, Any]:
        return {
            "id": "p1",
            "status": self.current_status,
            "site": {**self.site, "groups": [{"id": g} for g in self.current_groups]},
        }

    def expected_outcome(self) -> tuple[str | None, str | None, str | None]:
        """First true rule, else the default, else nothing decided."""
        for index, (cond, status) in enumerate(self.rules):
            if cond.holds(self.site, None):
                return status, f"r{index}", f"reason {index} {self.site.get('a', '')}"
        if self.default is not None:
            return self.default, "default", "by default"
        return None, None, None

    def expected_groups(self, decided: str | None) -> set[str]:
        """Every matching entry in file order: add, then remove, starting from the site's groups."""
        groups = set(self.current_groups)
        for cond, add, remove in self.groups:
            if cond.holds(self.site, decided):
                groups |= set(add)
                groups -= set(remove)
        return groups


scenarios = st.builds(
    Scenario,
    rules=st.lists(st.tuples(site_conditions, st.sampled_from(STATUSES)), min_size=1, max_size=6),
    default=st.none() | st.sampled_from(STATUSES),
    groups=st.lists(
        st.tuples(
            group_conditions, st.lists(pool, max_size=3, unique=True), st.lists(pool, max_size=3, unique=True)
        ),
        max_size=6,
    ),
    site=st.fixed_dictionaries({}, optional={"a": st.integers(0, 2), "b": st.integers(0, 2)}),
    current_status=st.sampled_from(STATUSES),
    current_groups=st.lists(pool, max_size=4, unique=True),
)


@PROPERTY
@given(scenario=scenarios)
def test_first_true_rule_decides_else_default(scenario: Scenario) -> None:
    decision = Evaluator(scenario.policy(), NOW).evaluate(scenario.enrollment())
    assert (decision.status, decision.rule_id, decision.reason) == scenario.expected_outcome()
    matched = [t.rule_id for t in decision.trace if t.kind == "rule" and t.matched]
    assert matched == ([decision.rule_id] if decision.rule_id not in (None, "default") else [])


@PROPERTY
@given(scenario=scenarios)
def test_groups_follow_file_order_add_then_remove(scenario: Scenario) -> None:
    policy = scenario.policy()
    decision = Evaluator(policy, NOW).evaluate(scenario.enrollment())
    status, _, _ = scenario.expected_outcome()
    expected = scenario.expected_groups(status)
    assert set(decision.group_ids) == expected
    assert len(decision.group_ids) == len(set(decision.group_ids))
    removed_somewhere = {
        g for cond, _, remove in scenario.groups if cond.holds(scenario.site, status) for g in remove
    }
    untouched = [g for g in scenario.current_groups if g not in removed_somewhere]
    assert decision.group_ids[: len(untouched)] == untouched
    changes = (status is not None and status != scenario.current_status) or expected != set(
        scenario.current_groups
    )
    assert decision.action is (Action.UPDATE if changes else Action.NONE)
    check_consistent(policy, scenario.enrollment(), decision)


# --- loading anything ------------------------------------------------------------------------------

_NON_PRINTABLE = yaml.reader.Reader.NON_PRINTABLE


def as_json_text(value: Any) -> str:
    """JSON (which is YAML) without surrogate-pair escapes, which PyYAML decodes into lone
    surrogates (see test_escaped_surrogate_pair_is_one_character), and with non-printable
    characters escaped."""
    text = json.dumps(value, ensure_ascii=False)
    return _NON_PRINTABLE.sub(lambda match: f"\\u{ord(match.group()):04x}", text)


YAML_TOKENS = [
    "a",
    "rules",
    "program_id",
    "applies_to",
    "when",
    "id",
    ":",
    "-",
    "[",
    "]",
    "{",
    "}",
    ",",
    "&x",
    "*x",
    "!!python/object:os.system",
    "!t",
    "!!set",
    "!!binary",
    "'",
    '"',
    "#",
    "|",
    ">",
    "?",
    "---",
    "...",
    "%YAML",
    "1",
    "1.5",
    "null",
    "~",
    "true",
    "2026-01-01",
    "<<",
    "\\",
    "\ufeff",
    "é",
]
yaml_tokens = st.sampled_from([*YAML_TOKENS, ": ", " ", "  ", "\n", "- ", "\t", "? ", "&x ", "!t "])
EXAMPLE_TEXT = """\
program_id: prog-x
version: "1"
applies_to: [SUBMITTED, PENDING]
definitions:
  in_tx: {"==": [{"var": "site.state_code"}, "TX"]}
rules:
  - id: reject
    when: {"!": {"ref": "in_tx"}}
    status: REJECTED
    reason: "Site is in {site.state_code}"
  - id: approve
    when: {">=": [{"var": ["totals.battery_capacity_wh", 0]}, 10000]}
    status: ACTIVE
    reason: ok
default: {status: PENDING, reason: review}
groups:
  - id: zone
    when: {"==": [{"var": "decision.status"}, "ACTIVE"]}
    add: [LZ_HOUSTON]
    remove: [LZ_NORTH]
limits: {max_reject_ratio: 0.5}
"""


def _mutate(text: str, edits: list[tuple[int, int, str]]) -> str:
    """Replace ``length`` characters at each (fraction of the text) ``position`` with a token."""
    for position, length, token in edits:
        at = position * len(text) // 1000
        text = text[:at] + token + text[at + length :]
    return text


mutated_policies = st.builds(
    _mutate,
    st.just(EXAMPLE_TEXT),
    st.lists(st.tuples(st.integers(0, 1000), st.integers(0, 3), yaml_tokens), min_size=1, max_size=3),
)
yaml_texts = st.one_of(
    st.text(st.characters(blacklist_categories=()), max_size=200),  # control characters, surrogates too
    st.lists(yaml_tokens, max_size=40).map("".join),
    mutated_policies,
    mutated_policies,
)


def load_or_refuse(text: str) -> None:
    """Load policy text; a refusal must be a ``PolicyError`` that says where and what."""
    problems = []
    try:
        load_policy_text(text, "fuzz.yaml")
    except PolicyError as exc:
        problems = exc.problems
        assert problems
    for problem in problems:
        assert problem.location.path == "fuzz.yaml"
        assert problem.message


@PROPERTY
@given(text=yaml_texts)
def test_any_text_loads_or_raises_policy_error(text: str) -> None:
    load_or_refuse(text)
    with contextlib.suppress(PolicyError):
        load_yaml(text, "fuzz.yaml")


statuses = st.sampled_from(STATUSES)
var_nodes = st.builds(
    lambda path: {"var": path},
    st.sampled_from(
        ["site.x", "status", "devices", "totals.device_count", "program.a", "decision.status", "", "now"]
    ),
)
conditions = st.recursive(
    scalars | var_nodes,
    lambda inner: (
        st.builds(
            lambda operator, args: {operator: args},
            st.sampled_from(sorted(ALLOWED_OPERATORS)),
            st.lists(inner, max_size=3) | inner,
        )
        | st.lists(inner, max_size=3)
    ),
    max_leaves=10,
)
bad_conditions = conditions | st.builds(
    lambda operator, args: {operator: args}, st.sampled_from(["method", "log", "ref", "eval"]), conditions
)
reasons = st.sampled_from(["ok", "{site.x}", "{", "}}", "{{x}}", "{}", "{status} {now}"])
good_reasons = st.sampled_from(["ok", "{site.x}", "{{x}}", "{status} {now}", "{devices}"])
rule_like = st.fixed_dictionaries(
    {
        "id": st.sampled_from(["r1", "r2", "r3"]),
        "when": conditions,
        "status": statuses,
        "reason": good_reasons,
    },
    optional={"description": st.text(max_size=5)},
)
group_like = st.fixed_dictionaries(
    {"id": st.sampled_from(["g1", "g2"]), "when": conditions},
    optional={"add": st.lists(pool, max_size=2), "remove": st.lists(pool, max_size=2)},
)
valid_shaped_policies = st.fixed_dictionaries(
    {
        "program_id": st.text(min_size=1, max_size=5),
        "applies_to": st.lists(statuses, min_size=1, max_size=3),
        "rules": st.lists(rule_like, min_size=1, max_size=3, unique_by=lambda rule: rule["id"]),
    },
    optional={
        "definitions": st.dictionaries(st.sampled_from(["a", "b"]), conditions | st.just({"ref": "a"})),
        "default": st.fixed_dictionaries({"status": statuses, "reason": good_reasons}),
        "groups": st.lists(group_like, max_size=2, unique_by=lambda group: group["id"]),
        "limits": st.fixed_dictionaries({}, optional={"max_reject_ratio": st.floats(0, 1)}),
    },
)
messy_policies = st.fixed_dictionaries(
    {},
    optional={
        "program_id": maybe(st.text(max_size=5)),
        "applies_to": maybe(st.lists(st.sampled_from([*STATUSES, "NOPE"]), max_size=3)),
        "definitions": maybe(
            st.dictionaries(st.sampled_from(["a", "b"]), bad_conditions | st.just({"ref": "a"}))
        ),
        "rules": maybe(
            st.lists(
                st.fixed_dictionaries(
                    {
                        "id": maybe(st.sampled_from(["r1", "r2", "bad id"])),
                        "when": bad_conditions | st.just({"ref": "b"}),
                        "status": maybe(st.sampled_from([*STATUSES, "NOPE"])),
                        "reason": maybe(reasons),
                    },
                    optional={"description": junk, "extra": junk},
                ),
                max_size=3,
            )
        ),
        "default": maybe(st.fixed_dictionaries({"status": statuses, "reason": st.text(max_size=5)})),
        "groups": maybe(
            st.lists(
                st.fixed_dictionaries(
                    {"id": st.sampled_from(["g1", "g2"]), "when": bad_conditions},
                    optional={
                        "add": maybe(st.lists(pool | st.just("bad id"))),
                        "remove": maybe(st.lists(pool)),
                    },
                ),
                max_size=2,
            )
        ),
        "limits": maybe(st.fixed_dictionaries({}, optional={"max_reject_ratio": junk, "max_changes": junk})),
    },
)
policy_like = weighted(valid_shaped_policies, messy_policies, 7)


@PROPERTY
@given(value=junk | policy_like)
def test_dumped_yaml_loads_or_raises_policy_error(value: Any) -> None:
    load_or_refuse(yaml.safe_dump(value, allow_unicode=True))
    load_or_refuse(as_json_text(value))


@PROPERTY
@given(value=policy_like)
def test_a_policy_that_loads_evaluates_without_raising(value: Any) -> None:
    try:
        policy = load_policy_text(as_json_text(value), "fuzz.yaml")
    except PolicyError:
        return
    evaluator = Evaluator(policy, NOW)
    for status in sorted(policy.applies_to):
        raw = {"id": "f", "status": status, "site": {"x": 1, "groups": [{"id": "G0"}]}, "devices": [{}]}
        check_consistent(policy, raw, evaluator.evaluate(raw))
