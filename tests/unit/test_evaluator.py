"""The evaluator: first match, default, groups in file order, actions, errors, traces."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from engine.policy.decision import Action, Decision, RuleTrace
from engine.policy.document import Policy, load_policy_text
from engine.policy.evaluator import Evaluator
from engine.runs.patch import patch_body


def rule(rule_id: str, when: Any, status: str = "ACTIVE", reason: str = "because") -> dict[str, Any]:
    return {"id": rule_id, "when": when, "status": status, "reason": reason}


def group(group_id: str, when: Any, add: Sequence[str] = (), remove: Sequence[str] = ()) -> dict[str, Any]:
    return {"id": group_id, "when": when, "add": list(add), "remove": list(remove)}


def make_policy(
    rules: list[dict[str, Any]],
    *,
    default: dict[str, str] | None = None,
    groups: Sequence[dict[str, Any]] = (),
    applies_to: Sequence[str] = ("SUBMITTED", "PENDING"),
    definitions: dict[str, Any] | None = None,
) -> Policy:
    """A policy from Python values (JSON is YAML), loaded through the real loader."""
    document: dict[str, Any] = {"program_id": "prog-test", "applies_to": list(applies_to), "rules": rules}
    if default is not None:
        document["default"] = default
    if groups:
        document["groups"] = list(groups)
    if definitions:
        document["definitions"] = definitions
    return load_policy_text(json.dumps(document), "test.yaml")


def enrollment(status: str = "SUBMITTED", groups: Sequence[str] = (), **fields: Any) -> dict[str, Any]:
    site = fields.pop("site", {})
    if site is not None:
        site = {**site, "groups": [{"id": g, "name": g.title()} for g in groups]}
    return {"id": "enr-1", "status": status, "site": site, **fields}


def var(path: str, *default: Any) -> dict[str, Any]:
    return {"var": [path, *default]} if default else {"var": path}


def site_is(state: str) -> dict[str, Any]:
    return {"==": [var("site.state_code"), state]}


@pytest.fixture
def evaluate(now: datetime) -> Callable[[Policy, Any], Decision]:
    def run(policy: Policy, raw: Any) -> Decision:
        return Evaluator(policy, now).evaluate(raw)

    return run


# --- status rules ----------------------------------------------------------------------------


def test_first_matching_rule_decides(evaluate: Callable[[Policy, Any], Decision]) -> None:
    policy = make_policy(
        [
            rule("reject-ok", site_is("OK"), "REJECTED", "out of state"),
            rule("pending-all", True, "PENDING", "review"),
            rule("approve-ok", site_is("OK"), "ACTIVE", "never reached"),
        ]
    )
    decision = evaluate(policy, enrollment(site={"state_code": "OK"}))
    assert (decision.status, decision.rule_id, decision.reason) == ("REJECTED", "reject-ok", "out of state")
    decision = evaluate(policy, enrollment(site={"state_code": "TX"}))
    assert (decision.status, decision.rule_id, decision.reason) == ("PENDING", "pending-all", "review")


def test_default_when_no_rule_matches(evaluate: Callable[[Policy, Any], Decision]) -> None:
    policy = make_policy(
        [rule("reject-ok", site_is("OK"), "REJECTED")],
        default={"status": "PENDING", "reason": "Manual review for {site.state_code}"},
    )
    decision = evaluate(policy, enrollment(site={"state_code": "TX"}))
    assert decision.status == "PENDING"
    assert decision.rule_id == "default"
    assert decision.reason == "Manual review for TX"
    assert decision.action is Action.UPDATE


def test_no_rule_and_no_default_leaves_the_status(evaluate: Callable[[Policy, Any], Decision]) -> None:
    policy = make_policy(
        [rule("reject-ok", site_is("OK"), "REJECTED")],
        groups=[group("tag-tx", site_is("TX"), add=["TEXAS"])],
    )
    decision = evaluate(policy, enrollment(site={"state_code": "TX"}))
    assert (decision.status, decision.reason, decision.rule_id) == (None, None, None)
    assert decision.group_ids == ["TEXAS"]
    assert decision.action is Action.UPDATE
    assert patch_body(decision) == ({"group_ids": ["TEXAS"]}, None)
    assert decision.transition == "SUBMITTED (groups only)"

    unchanged = evaluate(policy, enrollment(groups=["TEXAS"], site={"state_code": "TX"}))
    assert unchanged.status is None
    assert unchanged.action is Action.NONE
    assert patch_body(unchanged) == ({}, None)
    assert unchanged.transition == "SUBMITTED (unchanged)"


@pytest.mark.parametrize(
    "status", ["ACTIVE", "REJECTED", "UNENROLLED", "CREATED", "PAUSED", None, "", "submitted"]
)
def test_status_outside_applies_to_is_skipped(
    evaluate: Callable[[Policy, Any], Decision], status: str | None
) -> None:
    policy = make_policy(
        [rule("always", True, "REJECTED")],
        default={"status": "PENDING", "reason": "r"},
        groups=[group("tag", True, add=["NEW"], remove=["OLD"])],
    )
    raw = enrollment(groups=["OLD"], updated_at="2026-11-20T10:00:00Z")
    raw["status"] = status
    decision = evaluate(policy, raw)
    assert decision.action is Action.SKIP
    assert (decision.status, decision.reason, decision.rule_id) == (None, None, None)
    assert decision.group_ids == decision.current_group_ids == ["OLD"]
    assert decision.trace == []
    assert decision.warnings == []
    assert decision.error is None
    assert decision.updated_at == "2026-11-20T10:00:00Z"
    assert patch_body(decision) == ({}, None)
    assert decision.transition == "skip"


def test_missing_status_key_is_skipped(evaluate: Callable[[Policy, Any], Decision]) -> None:
    policy = make_policy([rule("always", True)])
    assert evaluate(policy, {"id": "x"}).action is Action.SKIP


def test_action_none_when_already_decided(evaluate: Callable[[Policy, Any], Decision]) -> None:
    policy = make_policy([rule("review", True, "PENDING")])
    decision = evaluate(policy, enrollment(status="PENDING"))
    assert decision.status == "PENDING"
    assert decision.rule_id == "review"
    assert decision.action is Action.NONE
    assert patch_body(decision) == ({}, None)
    assert not decision.status_changes


def test_action_update_when_the_status_differs(evaluate: Callable[[Policy, Any], Decision]) -> None:
    policy = make_policy([rule("approve", True, "ACTIVE", "ok")])
    decision = evaluate(policy, enrollment(status="PENDING", groups=["KEEP"]))
    assert decision.action is Action.UPDATE
    assert decision.transition == "PENDING -> ACTIVE"
    assert patch_body(decision) == ({"status": "ACTIVE", "status_reason": "ok"}, None)


def test_non_object_enrollment_is_an_error(evaluate: Callable[[Policy, Any], Decision]) -> None:
    policy = make_policy([rule("always", True)])
    for raw in (None, 5, "text", ["a"]):
        decision = evaluate(policy, raw)
        assert decision.action is Action.ERROR
        assert decision.error is not None
        assert type(raw).__name__ in decision.error


# --- groups ---------------------------------------------------------------------------------------


def test_every_matching_group_entry_applies_in_file_order(
    evaluate: Callable[[Policy, Any], Decision],
) -> None:
    policy = make_policy(
        [rule("approve", True)],
        groups=[
            group("add-a", True, add=["A"]),
            group("skip-me", False, add=["NEVER"], remove=["KEEP"]),
            group("add-b-drop-a", True, add=["B"], remove=["A"]),
            group("add-c", True, add=["C"]),
        ],
    )
    decision = evaluate(policy, enrollment(groups=["KEEP", "OLD"]))
    assert decision.group_ids == ["KEEP", "OLD", "B", "C"]
    assert decision.groups_added == ["B", "C"]
    assert decision.groups_removed == []


def test_a_later_entry_can_add_back_what_an_earlier_removed(
    evaluate: Callable[[Policy, Any], Decision],
) -> None:
    policy = make_policy(
        [rule("approve", True)],
        groups=[group("drop", True, remove=["A"]), group("re-add", True, add=["A"])],
    )
    decision = evaluate(policy, enrollment(groups=["A", "B"]))
    assert decision.action is Action.UPDATE
    assert decision.group_ids == ["B", "A"]
    assert decision.groups_added == []
    assert decision.groups_removed == []


def test_within_one_entry_add_comes_before_remove(evaluate: Callable[[Policy, Any], Decision]) -> None:
    policy = make_policy([rule("approve", True)], groups=[group("both", True, add=["A", "B"], remove=["A"])])
    decision = evaluate(policy, enrollment(groups=["A"]))
    assert decision.group_ids == ["B"]
    assert decision.groups_removed == ["A"]
    assert decision.groups_added == ["B"]


def test_adding_a_group_the_site_has_does_not_duplicate(evaluate: Callable[[Policy, Any], Decision]) -> None:
    policy = make_policy([rule("review", True, "PENDING")], groups=[group("a", True, add=["A"])])
    decision = evaluate(policy, enrollment(status="PENDING", groups=["A"]))
    assert decision.group_ids == ["A"]
    assert decision.action is Action.NONE


def test_removing_a_group_is_an_update(evaluate: Callable[[Policy, Any], Decision]) -> None:
    policy = make_policy([rule("review", True, "PENDING")], groups=[group("drop", True, remove=["A"])])
    decision = evaluate(policy, enrollment(status="PENDING", groups=["A", "B"]))
    assert decision.group_ids == ["B"]
    assert decision.groups_removed == ["A"]
    assert decision.action is Action.UPDATE
    assert patch_body(decision) == ({"group_ids": ["B"]}, None)


def test_reordering_groups_is_not_a_change(evaluate: Callable[[Policy, Any], Decision]) -> None:
    policy = make_policy(
        [rule("review", True, "PENDING")],
        groups=[group("drop", True, remove=["A"]), group("add", True, add=["A"])],
    )
    decision = evaluate(policy, enrollment(status="PENDING", groups=["A", "B"]))
    assert decision.group_ids == ["B", "A"]
    assert decision.action is Action.NONE


def test_groups_see_the_decided_status_and_rule(evaluate: Callable[[Policy, Any], Decision]) -> None:
    policy = make_policy(
        [rule("reject-ok", site_is("OK"), "REJECTED"), rule("approve-tx", site_is("TX"), "ACTIVE")],
        default={"status": "PENDING", "reason": "review"},
        groups=[
            group("active", {"==": [var("decision.status"), "ACTIVE"]}, add=["ACTIVE_ZONE"]),
            group("rejected", {"==": [var("decision.status"), "REJECTED"]}, remove=["ACTIVE_ZONE"]),
            group("by-default", {"==": [var("decision.rule_id"), "default"]}, add=["REVIEW"]),
            group("by-rule", {"==": [var("decision.rule_id"), "approve-tx"]}, add=["BY_RULE"]),
        ],
    )
    assert evaluate(policy, enrollment(site={"state_code": "TX"})).group_ids == ["ACTIVE_ZONE", "BY_RULE"]
    assert evaluate(policy, enrollment(groups=["ACTIVE_ZONE"], site={"state_code": "OK"})).group_ids == []
    assert evaluate(policy, enrollment(site={"state_code": "CA"})).group_ids == ["REVIEW"]


def test_groups_see_a_null_status_when_nothing_decided(evaluate: Callable[[Policy, Any], Decision]) -> None:
    policy = make_policy(
        [rule("never", False)],
        groups=[
            group("undecided", {"==": [var("decision.status"), None]}, add=["UNDECIDED"]),
            group("with-default", {"==": [var("decision.status", "NONE"), "NONE"]}, add=["DEFAULTED"]),
            group("not", {"!": var("decision.rule_id")}, add=["NO_RULE"]),
        ],
    )
    assert evaluate(policy, enrollment()).group_ids == ["UNDECIDED", "DEFAULTED", "NO_RULE"]


def test_decision_inside_an_iteration_is_the_element(evaluate: Callable[[Policy, Any], Decision]) -> None:
    # Inside "some", {"var": "decision.status"} reads the device, not the decided status.
    when = {"some": [var("devices"), {"==": [var("decision.status"), "ACTIVE"]}]}
    policy = make_policy([rule("approve", True)], groups=[group("g", when, add=["G"])])
    assert evaluate(policy, enrollment(devices=[{"decision": {"status": "ACTIVE"}}])).group_ids == ["G"]
    assert evaluate(policy, enrollment(devices=[{"type": "BATTERY"}])).group_ids == []


def test_missing_sees_the_decided_status(evaluate: Callable[[Policy, Any], Decision]) -> None:
    policy = make_policy(
        [rule("approve", True)],
        groups=[group("undecided", {"missing": ["decision.status"]}, add=["UNDECIDED"])],
    )
    decision = evaluate(policy, enrollment())
    assert decision.status == "ACTIVE"
    assert decision.group_ids == []


def test_null_decided_status_compares_like_javascript(evaluate: Callable[[Policy, Any], Decision]) -> None:
    policy = make_policy(
        [rule("never", False)],
        groups=[
            group("fact", {"==": [var("site.nothing"), ""]}, add=["FACT"]),
            group("decided", {"==": [var("decision.status"), ""]}, add=["DECIDED"]),
        ],
    )
    assert evaluate(policy, enrollment()).group_ids == []


# --- reasons -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("Site is in {site.state_code}", "Site is in TX"),
        ("{totals.battery_capacity_wh} Wh from {totals.device_count} devices", "13500 Wh from 2 devices"),
        ("first device {devices.0.type}", "first device BATTERY"),
        ("solar={program.has_solar} start={program.start}", "solar=true start=2026-01-15"),
        ("{{literal}} and {{{site.state_code}}}", "{literal} and {TX}"),
        ("[{site.nothing}] [{program.nothing}] [{devices.5.type}]", "[] [] []"),
        ("groups {site.group_ids}", 'groups ["A", "B"]'),
        ("at {now}", "at 2026-11-25T00:00:00Z"),
        ("bad value [{program.count}]", "bad value []"),
    ],
)
def test_reason_rendering(evaluate: Callable[[Policy, Any], Decision], template: str, expected: str) -> None:
    policy = make_policy([rule("approve", True, "ACTIVE", template)])
    raw = enrollment(
        groups=["A", "B"],
        site={"state_code": "TX"},
        devices=[
            {"type": "BATTERY", "attributes": {"battery_capacity_wh": 10000}},
            {"type": "BATTERY", "attributes": {"battery_capacity_wh": 3500}},
        ],
        program_specific_attributes=[
            {"name": "has_solar", "type": "boolean", "value": "YES"},
            {"name": "start", "type": "date", "value": "2026-01-15T08:00:00Z"},
            {"name": "count", "type": "integer", "value": "many"},
        ],
    )
    assert evaluate(policy, raw).reason == expected


# --- errors and warnings -------------------------------------------------------------------------------


def test_broken_value_is_an_error_decision_naming_the_rule(
    evaluate: Callable[[Policy, Any], Decision],
) -> None:
    policy = make_policy(
        [rule("check-size", {">=": [var("site.size"), 5]}, "ACTIVE"), rule("after", True, "PENDING")]
    )
    decision = evaluate(policy, enrollment(groups=["G"], site={"size": "abc"}, updated_at="t1"))
    assert decision.action is Action.ERROR
    assert decision.error is not None
    assert "check-size" in decision.error
    assert "not a number" in decision.error
    assert (decision.status, decision.rule_id, decision.reason) == (None, None, None)
    assert decision.group_ids == decision.current_group_ids == ["G"]
    assert decision.current_status == "SUBMITTED"
    assert decision.enrollment_id == "enr-1"
    assert decision.updated_at == "t1"
    assert patch_body(decision) == ({}, None)
    assert decision.transition == "error"


NUMERIC_OPERATORS = ["<", "<=", ">", ">=", "==", "!=", "+", "-", "*", "/", "%", "min", "max"]


@pytest.mark.parametrize("operator", NUMERIC_OPERATORS)
@pytest.mark.parametrize("value", ["unknown", [5], {"kwh": 5}])
@pytest.mark.parametrize("side", ["left", "right"])
def test_every_comparison_and_arithmetic_operator_errors_on_a_non_number(
    evaluate: Callable[[Policy, Any], Decision], operator: str, value: Any, side: str
) -> None:
    operands = [var("site.size"), 5] if side == "left" else [5, var("site.size")]
    policy = make_policy([rule("check-size", {operator: operands}), rule("after", True, "PENDING")])
    decision = evaluate(policy, enrollment(site={"size": value}))
    assert decision.action is Action.ERROR
    assert decision.error is not None
    assert decision.error.startswith("rule 'check-size': ")
    assert decision.rule_id is None


# min and max take only numbers; the others also numeric text, null and booleans.
ACCEPTED_VALUES = [
    (operator, value)
    for operator in NUMERIC_OPERATORS
    for value in ([10, 10.5] if operator in ("min", "max") else [10, 10.5, "10", None, True])
]


@pytest.mark.parametrize(("operator", "value"), ACCEPTED_VALUES)
def test_the_same_operators_take_numbers(
    evaluate: Callable[[Policy, Any], Decision], operator: str, value: Any
) -> None:
    policy = make_policy(
        [rule("check-size", {operator: [var("site.size"), 5]}), rule("after", True, "PENDING")]
    )
    assert evaluate(policy, enrollment(site={"size": value})).action is Action.UPDATE


def test_numeric_text_compares_as_a_number(evaluate: Callable[[Policy, Any], Decision]) -> None:
    policy = make_policy([rule("check-size", {">=": [var("site.size"), 5]})])
    assert evaluate(policy, enrollment(site={"size": "10"})).rule_id == "check-size"


def test_error_in_a_group_names_the_group(evaluate: Callable[[Policy, Any], Decision]) -> None:
    policy = make_policy(
        [rule("approve", True)], groups=[group("sized", {">": [var("site.size"), 1]}, add=["X"])]
    )
    decision = evaluate(policy, enrollment(site={"size": {"not": "a number"}}))
    assert decision.action is Action.ERROR
    assert decision.error is not None
    assert "'sized'" in decision.error


def test_the_run_goes_on_after_an_error(now: datetime) -> None:
    policy = make_policy([rule("check-size", {">=": [var("site.size"), 5]})])
    raws = [enrollment(site={"size": "abc"}), 42, enrollment(site={"size": 9}), enrollment(site={"size": 1})]
    actions = [d.action for d in Evaluator(policy, now).evaluate_many(raws)]
    assert actions == [Action.ERROR, Action.ERROR, Action.UPDATE, Action.NONE]


def test_bad_program_values_are_warnings_not_errors(evaluate: Callable[[Policy, Any], Decision]) -> None:
    policy = make_policy(
        [rule("solar", {"==": [var("program.has_solar"), True]}), rule("other", True, "PENDING")]
    )
    raw = enrollment(
        program_specific_attributes=[
            {"name": "has_solar", "type": "boolean", "value": "maybe"},
            {"name": "panels", "type": "integer", "value": "1.5"},
        ]
    )
    decision = evaluate(policy, raw)
    assert decision.rule_id == "other"
    assert decision.action is Action.UPDATE
    # Warnings cover the attributes the policy reads: panels is not read, so it is not converted.
    assert decision.warnings == [
        "program.has_solar: 'maybe' is not a valid boolean; treated as null",
    ]


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(
            enrollment(
                program_specific_attributes=[
                    {"name": "account", "type": "integer", "value": "99999999999999999999"}
                ]
            ),
            id="program attribute",
        ),
        pytest.param(enrollment(serial=123456789012345678901234), id="unread field"),
    ],
)
def test_huge_integer_never_raises(evaluate: Callable[[Policy, Any], Decision], raw: dict[str, Any]) -> None:
    policy = make_policy([rule("approve", True)])
    decision = evaluate(policy, raw)
    assert decision.action in (Action.UPDATE, Action.ERROR)


def test_lone_surrogate_never_raises(evaluate: Callable[[Policy, Any], Decision]) -> None:
    policy = make_policy([rule("approve", True)])
    raw = json.loads('{"id": "e1", "status": "SUBMITTED", "note": "\\ud800"}')
    decision = evaluate(policy, raw)
    assert decision.action in (Action.UPDATE, Action.ERROR)


def test_a_split_surrogate_pair_is_read_as_its_character(evaluate: Callable[[Policy, Any], Decision]) -> None:
    """A lenient JSON parser may hand over the two halves of an escaped emoji; conditions see
    the emoji."""
    policy = make_policy([rule("smile", {"==": [{"var": "note"}, {"var": "emoji"}]})])
    raw = enrollment(note="\ud83d\ude00", emoji="\U0001f600")
    assert evaluate(policy, raw).rule_id == "smile"


def test_integer_attribute_too_large_for_a_float_is_a_warning(
    evaluate: Callable[[Policy, Any], Decision],
) -> None:
    policy = make_policy([rule("approve", {"!": {"var": "program.count"}})])
    raw = enrollment(program_specific_attributes=[{"name": "count", "type": "integer", "value": 10**400}])
    decision = evaluate(policy, raw)
    assert decision.action is Action.UPDATE
    assert decision.warnings == [f"program.count: {10**400!r} is not a valid integer; treated as null"]


# --- JsonLogic semantics policies rely on ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("site", "matches"),
    [
        ({"account": "X"}, False),
        ({"account": None}, True),
        ({"account": ""}, True),
        ({}, True),
        ({"account": 0}, False),
    ],
)
def test_missing_treats_null_and_empty_text_as_missing(
    evaluate: Callable[[Policy, Any], Decision], site: dict[str, Any], matches: bool
) -> None:
    policy = make_policy([rule("needs", {"!!": [{"missing": ["site.account"]}]}, "NEEDS_ACTION")])
    assert (evaluate(policy, enrollment(site=site)).rule_id == "needs") is matches


@pytest.mark.parametrize(
    ("when", "value", "matches"),
    [
        ({"==": [var("site.x"), 0]}, None, False),
        ({"==": [var("site.x"), ""]}, None, False),
        ({"==": [0, var("site.x")]}, None, False),
        ({"!=": [var("site.x"), ""]}, None, True),
        ({"!=": [var("site.x"), 0]}, None, True),
        ({"==": [var("site.x"), None]}, None, True),
        ({"==": [var("site.x"), 1]}, "1", True),
        ({"==": [var("site.x"), 0]}, 0, True),
    ],
)
def test_loose_equality_with_null_is_javascript(
    evaluate: Callable[[Policy, Any], Decision], when: Any, value: Any, matches: bool
) -> None:
    policy = make_policy([rule("eq", when)])
    assert (evaluate(policy, enrollment(site={"x": value})).rule_id == "eq") is matches


@pytest.mark.parametrize(
    ("start", "held"), [("2026-11-10", True), ("2026-10-01", False), ("not a date", False)]
)
def test_days_between_from_an_attribute_to_now(
    evaluate: Callable[[Policy, Any], Decision], start: str, held: bool
) -> None:
    days = {"days_between": [var("program.start"), var("now")]}
    policy = make_policy([rule("hold", {"and": [{"!!": [days]}, {"<": [days, 30]}]}, "PENDING")])
    raw = enrollment(program_specific_attributes=[{"name": "start", "type": "date", "value": start}])
    assert (evaluate(policy, raw).rule_id == "hold") is held


def test_now_is_converted_to_utc() -> None:
    policy = make_policy([rule("approve", True, "ACTIVE", "at {now}")])
    eastern = datetime(2026, 11, 24, 19, 0, tzinfo=timezone(timedelta(hours=-5)))
    assert Evaluator(policy, eastern).evaluate(enrollment()).reason == "at 2026-11-25T00:00:00Z"


def test_definitions_can_be_used_by_rules_and_groups(evaluate: Callable[[Policy, Any], Decision]) -> None:
    policy = make_policy(
        [rule("approve", {"ref": "texas"})],
        groups=[group("zone", {"ref": "texas"}, add=["TX_ZONE"])],
        definitions={"texas": site_is("TX")},
    )
    decision = evaluate(policy, enrollment(site={"state_code": "TX"}))
    assert decision.rule_id == "approve"
    assert decision.group_ids == ["TX_ZONE"]


# --- determinism, fingerprint, trace -------------------------------------------------------------------


def test_evaluation_is_deterministic(
    tx_policy: Policy, now: datetime, tx_enrollment: Callable[..., Any]
) -> None:
    raw = tx_enrollment()
    first = Evaluator(tx_policy, now).evaluate(raw)
    again = Evaluator(tx_policy, now).evaluate(raw)
    evaluator = Evaluator(tx_policy, now)
    assert first == again == evaluator.evaluate(raw) == evaluator.evaluate(raw)
    assert first.to_dict() == again.to_dict()
    assert raw == tx_enrollment()


def test_fingerprint_is_stable(tx_policy: Policy, now: datetime, tx_enrollment: Callable[..., Any]) -> None:
    first = Evaluator(tx_policy, now).evaluate(tx_enrollment()).facts_fingerprint
    assert first
    assert first == Evaluator(tx_policy, now).evaluate(tx_enrollment()).facts_fingerprint
    later = now + timedelta(days=3)
    assert first == Evaluator(tx_policy, later).evaluate(tx_enrollment()).facts_fingerprint


def _with(raw: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    changed = json.loads(json.dumps(raw))
    *parents, last = path.split(".")
    node = changed
    for part in parents:
        node = node[int(part)] if isinstance(node, list) else node[part]
    if isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value
    return changed


@pytest.mark.parametrize(
    ("path", "value"),
    [
        ("site.state_code", "OK"),
        ("site.zip_code", "75201"),
        ("devices.0.attributes.battery_capacity_wh", 9000),
        ("devices.0.type", "SOLAR_INVERTER"),
        ("program_specific_attributes.2.value", "RES-TOU"),
        ("program_specific_attributes.0.value", ""),
    ],
)
def test_fingerprint_changes_when_a_read_fact_changes(
    tx_policy: Policy, now: datetime, tx_enrollment: Callable[..., Any], path: str, value: Any
) -> None:
    evaluator = Evaluator(tx_policy, now)
    raw = tx_enrollment()
    assert (
        evaluator.evaluate(raw).facts_fingerprint
        != evaluator.evaluate(_with(raw, path, value)).facts_fingerprint
    )


@pytest.mark.parametrize(
    ("path", "value"),
    [
        ("site.city", "Dallas"),
        ("site.street_address", "1 Main St"),
        ("id", "enr-2"),
        ("updated_at", "2026-11-24T00:00:00Z"),
        ("status_reason", "anything"),
    ],
)
def test_fingerprint_ignores_facts_the_policy_does_not_read(
    tx_policy: Policy, now: datetime, tx_enrollment: Callable[..., Any], path: str, value: Any
) -> None:
    evaluator = Evaluator(tx_policy, now)
    raw = tx_enrollment()
    assert (
        evaluator.evaluate(raw).facts_fingerprint
        == evaluator.evaluate(_with(raw, path, value)).facts_fingerprint
    )


def test_fingerprint_follows_site_group_ids(evaluate: Callable[[Policy, Any], Decision]) -> None:
    policy = make_policy([rule("pilot", {"in": ["PILOT", var("site.group_ids")]})])
    in_pilot = evaluate(policy, enrollment(groups=["PILOT"]))
    not_in_pilot = evaluate(policy, enrollment(groups=[]))
    assert in_pilot.rule_id != not_in_pilot.rule_id
    assert in_pilot.facts_fingerprint != not_in_pilot.facts_fingerprint


def test_fingerprint_is_stable_and_errs_towards_changed(
    tx_policy: Policy, now: datetime, tx_enrollment: Callable[..., Any]
) -> None:
    # Cheap by design: the same payload parsed twice hashes the same; a payload that only
    # reorders keys counts as changed (a false "changed" is harmless: nothing is skipped on
    # the fingerprint's say-so), and a changed read value always counts as changed.
    raw = tx_enrollment()
    evaluator = Evaluator(tx_policy, now)
    same = json.loads(json.dumps(raw))
    assert evaluator.evaluate(raw).facts_fingerprint == evaluator.evaluate(same).facts_fingerprint
    changed = json.loads(json.dumps(raw))
    changed["devices"][0]["attributes"]["battery_capacity_wh"] = 1
    assert evaluator.evaluate(raw).facts_fingerprint != evaluator.evaluate(changed).facts_fingerprint


def test_skipped_and_failed_decisions_have_no_fingerprint(
    evaluate: Callable[[Policy, Any], Decision],
) -> None:
    policy = make_policy([rule("check", {">=": [var("site.size"), 5]})])
    assert evaluate(policy, enrollment(status="ACTIVE")).facts_fingerprint is None
    assert evaluate(policy, enrollment(site={"size": "abc"})).facts_fingerprint is None


def test_trace_lists_rules_up_to_the_match_then_every_group(
    evaluate: Callable[[Policy, Any], Decision],
) -> None:
    policy = make_policy(
        [
            rule("ok-state", site_is("OK"), "REJECTED"),
            rule("big", {">=": [var("totals.cap", 0), 10]}),
            rule("never-evaluated", True, "PENDING"),
        ],
        groups=[
            group("zone", {"==": [var("site.zip_code"), "77002"]}, add=["Z"]),
            group("on-active", {"==": [var("decision.status"), "ACTIVE"]}, add=["A"]),
        ],
    )
    raw = enrollment(site={"state_code": "TX", "zip_code": "77002"}, devices=[{"attributes": {"cap": 12}}])
    decision = evaluate(policy, raw)
    assert decision.trace == [
        RuleTrace("ok-state", "rule", False, {"site.state_code": "TX"}),
        RuleTrace("big", "rule", True, {"totals.cap": 12}),
        RuleTrace("zone", "group", True, {"site.zip_code": "77002"}),
        RuleTrace("on-active", "group", True, {}),
    ]


def test_trace_can_be_turned_off(now: datetime, tx_policy: Policy, tx_enrollment: Callable[..., Any]) -> None:
    traced = Evaluator(tx_policy, now).evaluate(tx_enrollment())
    untraced = Evaluator(tx_policy, now, trace=False).evaluate(tx_enrollment())
    assert traced.trace
    assert untraced.trace == []
    assert untraced.to_dict() | {"trace": traced.to_dict()["trace"]} == traced.to_dict()


# --- the example policies ---------------------------------------------------------------------------------


def test_texas_policy_approves_and_zones(
    tx_policy: Policy, now: datetime, tx_enrollment: Callable[..., Any]
) -> None:
    decision = Evaluator(tx_policy, now).evaluate(tx_enrollment())
    assert decision.status == "ACTIVE"
    assert decision.rule_id == "approve"
    assert decision.reason == "Meets program requirements (13500 Wh of storage)"
    assert decision.group_ids == ["LZ_HOUSTON"]
    assert decision.action is Action.UPDATE
    assert decision.to_dict()["action"] == "update"


def test_texas_policy_moves_zones(
    tx_policy: Policy, now: datetime, tx_enrollment: Callable[..., Any]
) -> None:
    raw = tx_enrollment(status="PENDING")
    raw["site"]["groups"] = [{"id": "LZ_NORTH"}, {"id": "OTHER"}]
    decision = Evaluator(tx_policy, now).evaluate(raw)
    assert decision.group_ids == ["OTHER", "LZ_HOUSTON"]
    assert decision.groups_removed == ["LZ_NORTH"]
    assert decision.groups_added == ["LZ_HOUSTON"]


def test_california_policy_rejects_out_of_state(ca_policy: Policy, now: datetime) -> None:
    decision = Evaluator(ca_policy, now).evaluate(
        {"id": "c1", "status": "NEEDS_ACTION", "site": {"state_code": "NV"}, "devices": []}
    )
    assert decision.rule_id == "reject-out-of-state"
    assert decision.reason == "Site is in NV; this program serves California only"


def test_evaluator_defaults_to_the_current_time(tx_policy: Policy) -> None:
    before = datetime.now(UTC).replace(microsecond=0)
    evaluator = Evaluator(tx_policy)
    assert evaluator.now.tzinfo is not None
    assert before <= evaluator.now <= datetime.now(UTC)
