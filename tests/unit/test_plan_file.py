"""Plan files: written with a checksum, read back exactly, refused when edited or not a plan."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.errors import InputError
from engine.runs.plans import (
    PlanChange,
    PlanDocument,
    PlanPolicy,
    StatusAndGroups,
    describe_drift,
    parse_plan_argument,
    plan_checksum,
    read_plan_file,
)

NOW = datetime(2026, 11, 25, tzinfo=UTC)


def change(enrollment_id: str = "e-1", reason: str = "Meets program requirements") -> PlanChange:
    return PlanChange(
        enrollment_id=enrollment_id,
        updated_at="2026-11-20T10:00:00Z",
        facts_fingerprint="abc123",
        current=StatusAndGroups(status="SUBMITTED", group_ids=[]),
        planned=StatusAndGroups(status="ACTIVE", group_ids=["LZ_HOUSTON"]),
        rule_id="approve",
        reason=reason,
        patch={"status": "ACTIVE", "status_reason": reason, "group_ids": ["LZ_HOUSTON"]},
    )


def plan(*changes: PlanChange) -> PlanDocument:
    return PlanDocument.build(
        plan_id=12,
        program_id="prog-tx",
        api_url="http://127.0.0.1:8765",
        policy=PlanPolicy(name="Texas", version="1", content_hash="f" * 64, text="program_id: prog-tx\n"),
        evaluation_time=NOW,
        created_at=NOW,
        changes=changes or (change(),),
    )


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "plan.json"
    path.write_text(text, encoding="utf-8")
    return path


def test_a_plan_file_reads_back_exactly(tmp_path: Path) -> None:
    original = plan(change("e-1"), change("e-2", reason="Approved {braces} ünïcode"))
    read = read_plan_file(write(tmp_path, original.to_json()))
    assert read == original
    assert read.checksum.startswith("sha256:")
    data = json.loads(original.to_json())
    assert set(data) >= {"plan_id", "program_id", "policy", "evaluation_time", "created_at", "changes"}
    assert set(data["changes"][0]) >= {
        "enrollment_id",
        "updated_at",
        "facts_fingerprint",
        "current",
        "planned",
        "patch",
    }
    assert data["evaluation_time"] == "2026-11-25T00:00:00Z"


@given(st.text(max_size=40), st.lists(st.from_regex(r"[A-Za-z0-9_-]{1,8}", fullmatch=True), max_size=4))
def test_the_checksum_round_trips_any_reason_and_groups(reason: str, groups: list[str]) -> None:
    body = {"status": "ACTIVE", "status_reason": reason, "group_ids": groups}
    document = plan(change().model_copy(update={"reason": reason, "patch": body}))
    assert plan_checksum(json.loads(document.to_json())) == document.checksum


@pytest.mark.parametrize(
    "edit",
    [
        lambda d: d["changes"][0]["patch"].update(status="REJECTED"),
        lambda d: d["changes"].append(dict(d["changes"][0], enrollment_id="e-9")),
        lambda d: d.update(api_url="https://api-utility.flip.energy"),
        lambda d: d["policy"].update(text="program_id: other\n"),
        lambda d: d.update(plan_id=13),
    ],
)
def test_an_edited_plan_is_refused(tmp_path: Path, edit: object) -> None:
    data = json.loads(plan().to_json())
    edit(data)  # type: ignore[operator]
    with pytest.raises(InputError, match="edited after it was saved"):
        read_plan_file(write(tmp_path, json.dumps(data)))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{not json", r"plan\.json:1:2: not a plan file \(not JSON"),
        ('[{"enrollment_id": "e-1"}]', "not an autoapprove plan file"),
        ('{"enrollments": []}', "not an autoapprove plan file"),
        ('{"format": "autoapprove-plan", "format_version": 7}', "format version 7"),
        ('{"format": "autoapprove-plan", "format_version": 1}', "no checksum"),
        ("[" * 100_000, "not a plan file"),
    ],
)
def test_what_is_not_a_plan_is_refused_clearly(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(InputError, match=message):
        read_plan_file(write(tmp_path, text))


def test_a_plan_with_a_valid_checksum_but_a_bad_field_names_the_field(tmp_path: Path) -> None:
    data = json.loads(plan().to_json())
    data["changes"][0]["enrollment_id"] = ""
    data["checksum"] = plan_checksum(data)
    with pytest.raises(InputError, match=r"not a valid plan: changes\.0\.enrollment_id"):
        read_plan_file(write(tmp_path, json.dumps(data)))


def test_not_utf8_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "plan.json"
    path.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(InputError, match="not UTF-8"):
        read_plan_file(path)


def test_plan_argument_is_an_id_or_a_file(tmp_path: Path) -> None:
    assert parse_plan_argument("12").plan_id == 12
    assert parse_plan_argument(" 7 ").document is None
    target = parse_plan_argument(str(write(tmp_path, plan().to_json())))
    assert (target.plan_id, target.document) == (12, plan())
    with pytest.raises(InputError, match="neither a plan id nor an existing plan file"):
        parse_plan_argument(str(tmp_path / "missing.json"))
    with pytest.raises(InputError, match="not a plan id"):
        parse_plan_argument("0")


def test_drift_names_status_groups_and_fact_paths_never_values() -> None:
    text = describe_drift(
        planned_status="SUBMITTED",
        planned_groups=["A"],
        fresh_status="ACTIVE",
        fresh_groups=["B"],
        planned_reads={"site.zip_code": "77002", "site.email": "jo@example.com", "n": 1},
        fresh_reads={"site.zip_code": "77003", "site.email": "new@example.com", "n": 1},
    )
    assert text == "status SUBMITTED -> ACTIVE; groups +B -A; facts changed: site.email, site.zip_code"
    assert "example.com" not in text
    assert "7700" not in text
    unchanged = describe_drift(
        planned_status="SUBMITTED", planned_groups=[], fresh_status="SUBMITTED", fresh_groups=[],
        planned_reads={"x": 1}, fresh_reads={"x": 1},
    )  # fmt: skip
    assert "no status, group or fact" in unchanged
