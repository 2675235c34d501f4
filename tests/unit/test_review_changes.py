"""diff and backtest on plain enrollments and decisions: the comparisons and their invariants."""

from __future__ import annotations

import csv
import io
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.errors import InputError
from engine.policy.document import Policy, load_policy
from engine.policy.evaluator import Evaluator
from engine.render.comparison import (
    render_backtest_csv,
    render_backtest_table,
    render_diff_csv,
    render_diff_table,
)
from engine.render.coverage import NO_MATCH_FLAG
from engine.runs.backtest import DEFAULT_DECIDED, backtest, parse_statuses
from engine.runs.bases import BaseKind, BaseSpec, load_base, parse_base
from engine.runs.diff import changed_fields, diff_policies
from engine.sandbox.generator import generate_enrollments

ROOT = Path(__file__).resolve().parents[2]
TX = ROOT / "rules" / "tx_residential_battery.yaml"
NOW = datetime(2026, 11, 25, tzinfo=UTC)


def edited(path: Path, old: str, new: str, tmp_path: Path) -> Policy:
    text = path.read_text(encoding="utf-8")
    assert old in text
    target = tmp_path / path.name
    target.write_text(text.replace(old, new), encoding="utf-8")
    return load_policy(target)


# --- diff ------------------------------------------------------------------------------


def test_an_edit_changes_exactly_the_enrollments_it_reaches(tx_policy: Policy, tmp_path: Path) -> None:
    stricter = edited(TX, "10000]}", "12000]}", tmp_path)  # enough_capacity: 10 kWh -> 12 kWh
    enrollments = list(generate_enrollments("prog-tx-residential-battery", 600, seed=3, now=NOW))
    report = diff_policies(tx_policy, stricter, enrollments, NOW)
    assert report.enrollments == 600
    assert 0 < report.changed < 600
    assert report.changed + report.unchanged == 600
    for change in report.changes:
        assert change.base.rule_id == "approve"  # only approvals can move
        assert change.new.rule_id != "approve"
        assert "rule_id" in change.changed
    counted = sum(count for _, _, count in report.sorted_transitions())
    assert counted == sum(1 for c in report.changes if c.base.status != c.new.status)
    assert all(old != new for old, new, _ in report.sorted_transitions())
    hits = {h.id: h.hits for h in report.new_hits if h.kind == "rule"}
    base_hits = {h.id: h.hits for h in report.base_hits if h.kind == "rule"}
    assert base_hits["approve"] - hits["approve"] == report.changed


def test_the_json_shape(tx_policy: Policy, tmp_path: Path, tx_enrollment: Any) -> None:
    renamed = edited(TX, "Meets program requirements (", "Approved (", tmp_path)
    data = diff_policies(tx_policy, renamed, [tx_enrollment(), tx_enrollment(id="e2", status="ACTIVE")], NOW)
    document = data.to_dict()
    assert set(document) == {"summary", "changes"}
    summary = document["summary"]
    assert (summary["enrollments"], summary["changed"], summary["unchanged"]) == (2, 1, 1)
    assert summary["transitions"] == []  # the status did not move, only the reason
    (change,) = document["changes"]
    assert change["enrollment_id"] == "enr-1"
    assert change["changed"] == ["reason"]
    keys = {"status", "rule_id", "group_ids", "action", "reason"}
    assert set(change["base"]) == keys == set(change["new"])
    assert change["new"]["reason"].startswith("Approved (")


def test_transitions_use_null_for_left_as_is(policy_from_text: Callable[..., Policy]) -> None:
    rule = '{id: r, status: REJECTED, reason: x, when: {"==": [{"var": "site.state_code"}, "OK"]}}'
    base = policy_from_text(f"program_id: p\napplies_to: [SUBMITTED]\nrules: [{rule}]\n", "base.yaml")
    new = policy_from_text(
        f"program_id: p\napplies_to: [SUBMITTED]\nrules: [{rule}]\ndefault: {{status: PENDING, reason: d}}\n",
        "new.yaml",
    )
    report = diff_policies(base, new, [{"id": "a", "status": "SUBMITTED"}], NOW)
    assert report.to_dict()["summary"]["transitions"] == [{"from": None, "to": "PENDING", "count": 1}]


def test_group_ids_compare_as_a_set(tx_policy: Policy, tx_enrollment: Any) -> None:
    decision = Evaluator(tx_policy, NOW).evaluate(tx_enrollment())
    from dataclasses import replace

    reordered = replace(decision, group_ids=[*reversed(decision.group_ids), "LZ_HOUSTON"])
    assert changed_fields(decision, reordered) == []
    assert changed_fields(decision, replace(decision, group_ids=["OTHER"])) == ["group_ids"]


example_enrollments = st.sampled_from(list(generate_enrollments("prog-tx-residential-battery", 300, 9, NOW)))
odd_values = st.one_of(st.none(), st.integers(), st.text(max_size=5), st.booleans())


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(
    st.lists(
        st.one_of(
            example_enrollments,
            st.fixed_dictionaries(
                {"id": st.text(max_size=4), "status": st.sampled_from(["SUBMITTED", "PENDING"])}
            ),
            st.dictionaries(st.sampled_from(["id", "status", "site", "devices"]), odd_values, max_size=4),
            odd_values,
        ),
        max_size=25,
    )
)
def test_a_policy_diffed_with_itself_changes_nothing(tx_policy: Policy, enrollments: list[Any]) -> None:
    report = diff_policies(tx_policy, tx_policy, enrollments, NOW)
    assert (report.changed, report.unchanged, report.enrollments) == (0, len(enrollments), len(enrollments))
    assert report.transitions == {}
    assert report.base_hits == report.new_hits


# --- backtest ------------------------------------------------------------------------------


def labelled_with_own_decisions(policy: Policy, enrollments: list[Any], as_status: str) -> list[Any]:
    evaluator = Evaluator(policy, NOW)
    labelled = []
    for raw in enrollments:
        if not isinstance(raw, dict):
            continue
        decision = evaluator.evaluate({**raw, "status": as_status})
        if decision.status is not None and decision.action.value != "error":
            labelled.append({**raw, "status": decision.status})
    return labelled


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(
    st.lists(example_enrollments, min_size=1, max_size=40),
    st.sampled_from(["SUBMITTED", "PENDING"]),
)
def test_backtest_agrees_fully_with_the_policys_own_decisions(
    tx_policy: Policy, enrollments: list[Any], as_status: str
) -> None:
    labelled = labelled_with_own_decisions(tx_policy, enrollments, as_status)
    decided = tuple(sorted({raw["status"] for raw in labelled}))
    report = backtest(tx_policy, labelled, NOW, decided=decided, as_status=as_status)
    assert report.evaluated == len(labelled)
    assert report.agreement == 1.0
    assert report.disagreements == []
    assert all(rule.matched == rule.agree for rule in report.rules)


def test_agreement_confusion_and_rule_precision(tx_policy: Policy, tx_enrollment: Any) -> None:
    people = [
        tx_enrollment(id="a", status="ACTIVE"),  # the policy approves it too
        tx_enrollment(id="b", status="REJECTED"),  # the policy would approve: a disagreement
        tx_enrollment(id="c", status="REJECTED", site={"state_code": "OK"}),  # agrees
        tx_enrollment(id="d", status="SUBMITTED"),  # not decided: left out
        tx_enrollment(id="e", status="NEEDS_ACTION", devices=[]),  # policy rejects (no battery)
        "junk",
    ]
    report = backtest(tx_policy, people, NOW)
    assert (report.evaluated, report.agree) == (4, 2)
    assert report.agreement == 0.5
    summary = report.to_dict()["summary"]
    assert summary["confusion"] == {
        "ACTIVE": {"ACTIVE": 1},
        "REJECTED": {"ACTIVE": 1, "REJECTED": 1},
        "NEEDS_ACTION": {"REJECTED": 1},
    }
    assert summary["by_status"]["REJECTED"] == {"evaluated": 2, "agree": 1, "agreement": 0.5}
    rules = {rule["rule_id"]: (rule["matched"], rule["agree"]) for rule in summary["rules"]}
    assert rules["approve"] == (2, 1)
    assert rules["reject-out-of-territory"] == (1, 1)
    assert rules["reject-no-battery"] == (1, 0)
    assert rules["default"] == (0, 0)
    assert [d.to_dict() for d in report.disagreements] == [
        {"enrollment_id": "b", "human_status": "REJECTED", "status": "ACTIVE", "rule_id": "approve",
         "reason": "Meets program requirements (13500 Wh of storage)"},
        {"enrollment_id": "e", "human_status": "NEEDS_ACTION", "status": "REJECTED",
         "rule_id": "reject-no-battery",
         "reason": "No battery found at the site; this program is for home batteries"},
    ]  # fmt: skip
    assert set(report.to_dict()) == {"summary", "disagreements"}


def test_no_decision_and_errors_disagree_as_none_and_error(policy_from_text: Callable[..., Policy]) -> None:
    policy = policy_from_text(
        "program_id: p\napplies_to: [PENDING]\nrules:\n"
        '  - {id: big, status: ACTIVE, reason: ok, when: {">": [{"var": "site.n"}, 5]}}\n'
    )
    people = [
        {"id": "a", "status": "ACTIVE", "site": {"n": 9}},
        {"id": "b", "status": "ACTIVE", "site": {"n": 1}},
        {"id": "c", "status": "REJECTED", "site": {"n": "many"}},
    ]
    report = backtest(policy, people, NOW)
    assert report.as_status == "PENDING"
    assert dict(report.confusion["ACTIVE"]) == {"ACTIVE": 1, "none": 1}
    assert dict(report.confusion["REJECTED"]) == {"error": 1}
    assert report.policy_columns() == ["ACTIVE", "none", "error"]


def test_enrollments_this_tool_decided_are_left_out(tx_policy: Policy, tx_enrollment: Any) -> None:
    people = [tx_enrollment(id="a", status="ACTIVE"), tx_enrollment(id="b", status="REJECTED")]
    report = backtest(tx_policy, people, NOW, applied_by_us={"a": "ACTIVE", "b": "ACTIVE"})
    assert report.left_out_applied == 1  # b was set ACTIVE by us, then a person rejected it
    assert report.evaluated == 1


def test_an_empty_labelled_set_and_a_status_the_policy_never_evaluates_are_input_errors(
    tx_policy: Policy, tx_enrollment: Any
) -> None:
    with pytest.raises(InputError, match="no enrollment is labelled"):
        backtest(tx_policy, [tx_enrollment(status="SUBMITTED")], NOW)
    with pytest.raises(InputError, match="other than the 1 whose status this tool applied"):
        backtest(tx_policy, [tx_enrollment(status="ACTIVE")], NOW, applied_by_us={"enr-1": "ACTIVE"})
    with pytest.raises(InputError, match="--as-status ACTIVE: the policy only evaluates SUBMITTED, PENDING"):
        backtest(tx_policy, [tx_enrollment(status="ACTIVE")], NOW, as_status="ACTIVE")


def test_decided_statuses_must_be_flip_statuses() -> None:
    assert parse_statuses("active, REJECTED,active") == ("ACTIVE", "REJECTED")
    assert parse_statuses(",".join(DEFAULT_DECIDED)) == DEFAULT_DECIDED
    with pytest.raises(InputError, match="'APPROVED' is not a Flip status"):
        parse_statuses("ACTIVE,APPROVED")


# --- bases ---------------------------------------------------------------------------------


class FakeTexts:
    def __init__(self, texts: dict[tuple[str, str], str]) -> None:
        self.texts = texts

    def git_text(self, path: Path, revision: str) -> tuple[str, str]:
        try:
            return self.texts[("git", revision)], f"{revision}:{path.name}"
        except KeyError:
            raise InputError(f"git:{revision}: unknown revision") from None

    def run_text(self, run_id: int) -> tuple[str, str]:
        try:
            return self.texts[("run", str(run_id))], f"<run {run_id}>"
        except KeyError:
            raise InputError(f"run:{run_id}: no such run") from None


def test_bases_parse_and_load() -> None:
    assert parse_base("git:HEAD~1") == BaseSpec(BaseKind.GIT, "HEAD~1")
    assert parse_base("run:007") == BaseSpec(BaseKind.RUN, "7")
    assert parse_base("rules/x.yaml") == BaseSpec(BaseKind.FILE, "rules/x.yaml")
    for bad in ("run:x", "run:0", "run:", "git:", ""):
        with pytest.raises(InputError):
            parse_base(bad)
    text = TX.read_text(encoding="utf-8")
    texts = FakeTexts({("git", "HEAD"): text, ("run", "3"): text})
    assert load_base(parse_base("git:HEAD"), TX, texts).source == "HEAD:tx_residential_battery.yaml"
    assert load_base(parse_base("run:3"), TX, texts).content_hash == load_policy(TX).content_hash
    assert load_base(parse_base(str(TX)), TX, texts).source == str(TX)
    with pytest.raises(InputError, match="run:4: no such run"):
        load_base(parse_base("run:4"), TX, texts)


# --- renderings ----------------------------------------------------------------------------


def test_diff_table_starts_with_the_summary_then_one_row_per_change(
    tx_policy: Policy, tmp_path: Path
) -> None:
    stricter = edited(TX, "10000]}", "14000]}", tmp_path)
    enrollments = list(generate_enrollments("prog-tx-residential-battery", 300, seed=3, now=NOW))
    report = diff_policies(tx_policy, stricter, enrollments, NOW)
    lines = render_diff_table(report).splitlines()
    assert lines[3] == f"Summary: 300 enrollments, {report.changed} changed, {report.unchanged} unchanged"
    old, new, count = report.sorted_transitions()[0]
    assert any(line.split() == [old or "none", "->", new or "none", str(count)] for line in lines)
    assert any(line.split()[:2] == ["rule", "approve"] for line in lines)  # hits: base -> new
    header = next(i for i, line in enumerate(lines) if line.startswith("ENROLLMENT"))
    rows = lines[header + 1 :]
    assert len(rows) == report.changed
    assert {row.split()[0] for row in rows} == {c.enrollment_id for c in report.changes}
    csv_rows = list(csv.DictReader(io.StringIO(render_diff_csv(report))))
    assert len(csv_rows) == report.changed
    assert csv_rows[0]["base_rule_id"] == "approve"


def test_diff_table_says_when_nothing_changed(tx_policy: Policy, tx_enrollment: Any) -> None:
    text = render_diff_table(diff_policies(tx_policy, tx_policy, [tx_enrollment()], NOW))
    assert "Summary: 1 enrollments, 0 changed, 1 unchanged" in text
    assert text.endswith("(no enrollment is decided differently)")


def test_backtest_table_says_the_data_may_have_changed_and_lists_disagreements(
    tx_policy: Policy, tx_enrollment: Any
) -> None:
    people = [tx_enrollment(id="a", status="ACTIVE"), tx_enrollment(id="b", status="REJECTED")]
    report = backtest(tx_policy, people, NOW)
    text = render_backtest_table(report, explain_hint="`autoapprove explain --id ID`")
    assert "their data may have changed since the person decided" in text
    assert "Summary: 2 evaluated, 1 agree, agreement 0.500 (50.0%)" in text
    lines = text.splitlines()
    matrix = lines.index("Confusion (rows: the person's status; columns: the policy's):")
    assert lines[matrix + 1].split() == ["PERSON", "\\", "POLICY", "ACTIVE"]
    assert lines[matrix + 2].split() == ["ACTIVE", "1"]
    assert lines[matrix + 3].split() == ["REJECTED", "1"]
    assert "Disagreements: 1 (open each with `autoapprove explain --id ID`)" in text
    assert lines[-1].split()[:4] == ["b", "REJECTED", "ACTIVE", "approve"]
    assert any(line.strip().startswith("rule") and line.endswith(NO_MATCH_FLAG) for line in lines)
    rows = list(csv.DictReader(io.StringIO(render_backtest_csv(report))))
    reason = "Meets program requirements (13500 Wh of storage)"
    assert rows == [{"enrollment_id": "b", "human_status": "REJECTED", "status": "ACTIVE",
                     "rule_id": "approve", "reason": reason}]  # fmt: skip
