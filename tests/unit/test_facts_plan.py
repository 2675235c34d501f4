"""Which facts a policy reads (``facts_plan``): only those are built and fingerprinted, so a
plan that misses a read would change decisions, and one that reads too much costs time."""

from __future__ import annotations

import pytest

from engine.policy.document import load_policy_text
from engine.policy.evaluator import facts_plan
from engine.policy.facts import FactsPlan

POLICY = """program_id: p
applies_to: [SUBMITTED]
rules:
  - id: r
    when: {when}
    status: ACTIVE
    reason: "in {{site.zip_code}}"
default: {{status: PENDING, reason: "tariff {{program.tariff}}"}}
"""


def plan_of(when: str) -> FactsPlan:
    return facts_plan(load_policy_text(POLICY.format(when=when), "<plan test>"))


def narrow(**fields: object) -> FactsPlan:
    """A plan that builds only what is named, plus what the two reason templates read."""
    base: dict[str, object] = {
        "full": False,
        "device_age": False,
        "site_keys": ("zip_code",),
        "program_names": frozenset({"tariff"}),
    }
    base.update(fields)
    return FactsPlan(**base)  # type: ignore[arg-type]


def test_each_kind_of_fact_lands_in_its_part_of_the_plan() -> None:
    when = (
        '{"and": [{"==": [{"var": "site.state_code"}, "TX"]},'
        ' {">=": [{"var": ["totals.battery_capacity_wh", 0]}, 1]},'
        ' {"some": [{"var": "devices"}, {"==": [{"var": "type"}, "BATTERY"]}]},'
        ' {"==": [{"var": "program.has_solar"}, true]}]}'
    )
    assert plan_of(when) == narrow(
        program_names=frozenset({"has_solar", "tariff"}),
        totals_keys=frozenset({"battery_capacity_wh"}),
        device_fields=("type",),
        site_keys=("state_code", "zip_code"),
    )


def test_device_age_is_built_only_when_read() -> None:
    when = '{"some": [{"var": "devices"}, {">": [{"var": "age_days"}, 10]}]}'
    plan = plan_of(when)
    assert (plan.full, plan.device_age, plan.device_fields) == (False, True, ("install_date",))  # age from it


@pytest.mark.parametrize(
    ("when", "programs", "site"),
    [
        ('{"!!": [{"missing": ["program.account", "site.state_code"]}]}', {"account"}, ("state_code",)),
        ('{"!!": [{"missing": [["program.account"]]}]}', {"account"}, ()),
        ('{"!!": [{"missing_some": [1, ["program.a", "program.b"]]}]}', {"a", "b"}, ()),
    ],
    ids=["missing-keys", "missing-one-list", "missing-some"],
)
def test_missing_with_literal_keys_reads_just_those(
    when: str, programs: set[str], site: tuple[str, ...]
) -> None:
    assert plan_of(when) == narrow(
        program_names=frozenset(programs | {"tariff"}), site_keys=tuple(sorted({*site, "zip_code"}))
    )


@pytest.mark.parametrize(
    "when",
    [
        '{"!!": [{"missing": [{"var": "x"}]}]}',
        '{"!!": [{"missing_some": [1, {"var": "x"}]}]}',
        '{"!!": [{"missing_some": [[1], {"var": "x"}]}]}',
        '{"==": [{"var": {"cat": ["site.", "state_code"]}}, "TX"]}',
        '{"==": [{"var": true}, "TX"]}',
        '{"!!": [{"missing": [true]}]}',
    ],
    ids=[
        "missing-computed",
        "missing-some-computed",
        "missing-some-computed-list-count",
        "var-computed",
        "var-boolean",
        "missing-boolean",
    ],
)
def test_a_read_that_cannot_be_seen_statically_builds_everything(when: str) -> None:
    assert plan_of(when) == FactsPlan()
    assert FactsPlan().full is True


def test_a_numeric_var_is_a_top_level_key() -> None:
    assert plan_of('{"==": [{"var": 1}, "TX"]}') == narrow(top_keys=("1",))


def test_device_fields_are_top_level_names_or_whole_attribute_paths() -> None:
    when = (
        '{"some": [{"var": "devices"}, {"and": [{"==": [{"var": "manufacturer.name"}, "X"]},'
        ' {">": [{"var": "attributes.battery_capacity_wh"}, 1]}]}]}'
    )
    assert plan_of(when).device_fields == ("manufacturer", "attributes.battery_capacity_wh")


def test_reading_a_whole_device_builds_whole_devices() -> None:
    plan = plan_of('{"some": [{"var": "devices"}, {"!!": [{"var": ""}]}]}')
    assert (plan.full, plan.device_whole, plan.device_fields) == (False, True, ())


def test_missing_some_without_a_key_list_reads_nothing() -> None:
    assert plan_of('{"!!": [{"missing_some": [1]}]}') == narrow()


def planned(**fields: object) -> FactsPlan:
    """A plan of exactly the fields named (no reason templates)."""
    return FactsPlan(full=False, device_age=False, **fields)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("reads", "expected"),
    [
        ([("program.tariff.code", None)], planned(program_names=frozenset({"tariff"}))),
        ([("site.groups.0.id", None), ("site.group_ids", None)], planned(site_keys=("groups",))),
        (
            [("status_reason", None), ("now", None), ("decision.status", None)],
            planned(top_keys=("status_reason",)),
        ),
        ([("program", None)], FactsPlan()),
        ([("totals", None)], FactsPlan()),
        ([("site", None)], FactsPlan()),
        ([("", None)], FactsPlan()),
        ([("code", "program.list")], planned()),
        ([("code", "?")], FactsPlan()),
        ([("devices", None)], planned(device_whole=True)),
        ([("devices.0.type", None)], planned(device_fields=("type",))),
        ([("devices.0.attributes.cap", None)], planned(device_fields=("attributes.cap",))),
        ([("devices.last.type", None)], planned(device_whole=True)),
        ([("devices", None), ("type", "devices")], planned(device_fields=("type",))),
        ([("configuration.mode", "devices")], planned(device_fields=("configuration.mode",))),
        ([("manufacturer.name.short", "devices")], planned(device_fields=("manufacturer",))),
    ],
    ids=[
        "program-name-is-the-first-part",
        "site-key-is-the-first-part",
        "top-keys-but-now-and-decision",
        "whole-program",
        "whole-totals",
        "whole-site",
        "whole-enrollment",
        "inside-a-read-collection",
        "inside-a-computed-collection",
        "the-device-list",
        "one-device-field",
        "one-device-attribute",
        "a-device-by-a-name-not-an-index",
        "device-list-and-fields",
        "a-device-configuration-path",
        "a-nested-device-field",
    ],
)
def test_reads_to_plan(reads: list[tuple[str, str | None]], expected: FactsPlan) -> None:
    assert FactsPlan.from_reads(reads) == expected
