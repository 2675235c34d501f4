"""Reviewing a policy change through the real entry point: diff (with git: bases in a real
temporary repository), backtest, cases and test --coverage, offline."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from cli_process import REPO_ROOT, CliResult, run_cli

RULES = REPO_ROOT / "rules"
TX = RULES / "tx_residential_battery.yaml"
SAMPLE = RULES / "samples" / "tx_residential_battery.enrollments.json"
NOW = "2026-11-25T00:00:00Z"


def git(repo: Path, *args: str) -> None:
    subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@example.com", "-c", "commit.gpgsign=false", *args],
        cwd=repo, check=True, capture_output=True,
    )  # fmt: skip


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A git repository holding a committed copy of the Texas policy (one commit)."""
    folder = tmp_path / "policies"
    folder.mkdir()
    git(folder, "init", "-q")
    shutil.copy(TX, folder / "tx.yaml")
    git(folder, "add", "tx.yaml")
    git(folder, "commit", "-q", "-m", "policy")
    return folder


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text(encoding="utf-8")
    assert old in text
    path.write_text(text.replace(old, new), encoding="utf-8")


def as_json(result: CliResult) -> Any:
    assert result.code in (0, 1), result.stderr
    return json.loads(result.stdout)


# --- diff ------------------------------------------------------------------------------------


def test_diff_against_git_head_shows_what_the_uncommitted_edit_changes(repo: Path) -> None:
    policy = repo / "tx.yaml"
    unchanged = run_cli(["diff", "--rules", str(policy), "--base", "git:HEAD", "--input", str(SAMPLE),
                         "--now", NOW, "--format", "json", "--fail-on-change"])  # fmt: skip
    assert unchanged.code == 0, unchanged.stderr
    assert as_json(unchanged)["summary"]["changed"] == 0
    edit(policy, "10000]}", "30000]}")  # nothing below 30 kWh is approved any more
    result = run_cli(["diff", "--rules", str(policy), "--base", "git:HEAD", "--input", str(SAMPLE),
                      "--now", NOW, "--format", "json", "--fail-on-change"])  # fmt: skip
    assert result.code == 1
    document = as_json(result)
    summary = document["summary"]
    assert summary["changed"] > 0
    assert summary["enrollments"] == summary["changed"] + summary["unchanged"] == 40
    assert {t["from"] for t in summary["transitions"]} == {"ACTIVE"}
    for change in document["changes"]:
        assert change["base"]["rule_id"] == "approve"
        assert "status" in change["changed"]
        assert "rule_id" in change["changed"]
    assert summary["base"].startswith("HEAD:tx.yaml")
    # the table: summary first, hits, one row per change
    table = run_cli(
        ["diff", "--rules", str(policy), "--base", "git:HEAD", "--input", str(SAMPLE), "--now", NOW]
    )
    assert table.code == 0
    lines = table.stdout.splitlines()
    assert (
        lines[3] == f"Summary: 40 enrollments, {summary['changed']} changed, {summary['unchanged']} unchanged"
    )
    assert any(line.split()[:3] == ["ACTIVE", "->", summary["transitions"][0]["to"]] for line in lines)
    assert "Rule hits (enrollments each rule matched, base -> new):" in lines


def test_diff_base_errors_are_clear_and_exit_2(repo: Path, tmp_path: Path) -> None:
    policy = repo / "tx.yaml"
    common = ["--input", str(SAMPLE), "--now", NOW]
    unknown = run_cli(["diff", "--rules", str(policy), "--base", "git:no-such-branch", *common])
    assert unknown.code == 2
    assert "git:no-such-branch: unknown revision" in unknown.stderr
    untracked = repo / "new.yaml"
    shutil.copy(TX, untracked)
    missing = run_cli(["diff", "--rules", str(untracked), "--base", "git:HEAD", *common])
    assert missing.code == 2
    assert "new.yaml is not tracked at HEAD" in missing.stderr
    outside = tmp_path / "elsewhere.yaml"
    shutil.copy(TX, outside)
    no_repo = run_cli(["diff", "--rules", str(outside), "--base", "git:HEAD", *common])
    assert no_repo.code == 2
    assert "is not in a git repository" in no_repo.stderr
    db = f"sqlite:///{tmp_path / 'store.db'}"
    no_run = run_cli(["diff", "--rules", str(policy), "--base", "run:12", "--db", db, *common])
    assert no_run.code == 2
    assert "run:12: no such run" in no_run.stderr
    malformed = run_cli(["diff", "--rules", str(policy), "--base", "run:twelve", *common])
    assert malformed.code == 2
    assert "Traceback" not in unknown.stderr + missing.stderr + no_run.stderr + malformed.stderr


def test_diff_csv_has_a_row_per_change(tmp_path: Path) -> None:
    edited = tmp_path / "tx.yaml"
    shutil.copy(TX, edited)
    edit(edited, "Meets program requirements", "Approved")
    result = run_cli(["diff", "--rules", str(edited), "--base", str(TX), "--input", str(SAMPLE), "--now", NOW,
                      "--format", "csv"])  # fmt: skip
    assert result.code == 0
    header, *rows = result.stdout.splitlines()
    assert header.startswith("enrollment_id,changed,base_status,new_status")
    assert rows
    assert all(",reason," in row for row in rows)


# --- backtest ------------------------------------------------------------------------------


def test_backtest_offline_measures_the_people_in_the_file(tmp_path: Path) -> None:
    result = run_cli(
        ["backtest", "--rules", str(TX), "--input", str(SAMPLE), "--now", NOW, "--format", "json"]
    )
    document = as_json(result)
    assert result.code == 0
    summary = document["summary"]
    people = [e for e in json.loads(SAMPLE.read_text())["enrollments"] if e["status"] in
              ("ACTIVE", "REJECTED", "NEEDS_ACTION")]  # fmt: skip
    assert summary["evaluated"] == len(people)
    assert 0 < summary["agreement"] < 1
    assert summary["agreement"] == summary["agree"] / summary["evaluated"]
    assert set(summary["confusion"]) <= {"ACTIVE", "REJECTED", "NEEDS_ACTION"}
    assert sum(sum(row.values()) for row in summary["confusion"].values()) == summary["evaluated"]
    assert {"rule_id", "matched", "agree"} == set(summary["rules"][0])
    assert len(document["disagreements"]) == summary["evaluated"] - summary["agree"]
    assert set(document["disagreements"][0]) == {
        "enrollment_id",
        "human_status",
        "status",
        "rule_id",
        "reason",
    }
    gate = run_cli(
        ["backtest", "--rules", str(TX), "--input", str(SAMPLE), "--now", NOW, "--min-agreement", "1"]
    )
    assert gate.code == 1
    assert "data may have changed since the person decided" in gate.stdout
    assert "below --min-agreement" in gate.stderr
    assert run_cli(["backtest", "--rules", str(TX), "--input", str(SAMPLE), "--min-agreement", "0"]).code == 0
    # each disagreement opens with explain, evaluated the way backtest did
    first = document["disagreements"][0]
    assert "--as-status SUBMITTED --id ID" in gate.stdout
    explained = run_cli(["explain", "--rules", str(TX), "--input", str(SAMPLE), "--as-status", "SUBMITTED",
                         "--id", first["enrollment_id"], "--now", NOW])  # fmt: skip
    assert explained.code == 0, explained.stderr
    assert f"  rule {first['rule_id']}: MATCH" in explained.stdout.splitlines()


def test_backtest_input_errors_exit_2(tmp_path: Path) -> None:
    bad = run_cli(["backtest", "--rules", str(TX), "--input", str(SAMPLE), "--decided", "ACTIVE,APPROVED"])
    assert bad.code == 2
    assert "'APPROVED' is not a Flip status" in bad.stderr
    waiting = tmp_path / "waiting.json"
    waiting.write_text(json.dumps([{"id": "a", "status": "SUBMITTED"}]), encoding="utf-8")
    empty = run_cli(["backtest", "--rules", str(TX), "--input", str(waiting)])
    assert empty.code == 2
    assert "no enrollment is labelled" in empty.stderr
    assert (
        run_cli(["backtest", "--rules", str(TX), "--input", str(SAMPLE), "--as-status", "ACTIVE"]).code == 2
    )
    assert (
        run_cli(["backtest", "--rules", str(TX), "--input", str(SAMPLE), "--min-agreement", "90"]).code == 2
    )


# --- cases and coverage --------------------------------------------------------------------


def test_cases_paste_into_a_test_file_that_passes(tmp_path: Path) -> None:
    sample = json.loads(SAMPLE.read_text())["enrollments"]
    ids = [sample[2]["id"], sample[5]["id"]]
    result = run_cli(
        ["cases", "--rules", str(TX), "--input", str(SAMPLE), "--ids", ",".join(ids), "--now", NOW]
    )
    assert result.code == 0, result.stderr
    assert [line for line in result.stdout.splitlines() if line.startswith("- name:")] == [
        line
        for line in result.stdout.splitlines()
        if line.startswith("- name:") and any(i in line for i in ids)
    ]
    for key in ("first_name", "last_name", "email", "street_address"):
        assert key not in result.stdout
    suite = tmp_path / "tx.test.yaml"
    suite.write_text(f"policy: {TX}\nnow: '{NOW}'\ncases:\n{result.stdout}", encoding="utf-8")
    test = run_cli(["test", str(suite)])
    assert test.code == 0, test.stdout
    assert test.stdout.splitlines()[-1] == "2 passed, 0 failed"
    unknown = run_cli(["cases", "--rules", str(TX), "--input", str(SAMPLE), "--ids", "nope"])
    assert unknown.code == 2
    assert "no enrollment with id 'nope'" in unknown.stderr


def test_test_coverage_text_json_and_the_gate() -> None:
    text = run_cli(["test", str(RULES), "--coverage"])
    assert text.code == 0, text.stdout
    lines = text.stdout.splitlines()
    assert lines[-1].startswith("coverage: ")
    assert any(line.endswith("rule south-load-zone never matched by a case (group)") for line in lines)
    assert any(": condition /" in line and "never" in line for line in lines)
    document = json.loads(run_cli(["test", str(RULES), "--coverage", "--format", "json"]).stdout)
    assert set(document) >= {"passed", "failed", "coverage"}
    assert document["failed"] == 0
    coverage = document["coverage"]
    assert f"{coverage['percent']:.1f}%" in lines[-1]
    assert set(coverage["rules"][0]) == {"id", "kind", "file", "line", "hits"}
    assert set(coverage["conditions"][0]) == {"file", "line", "column", "pointer", "true", "false"}
    gate = run_cli(["test", str(RULES), "--coverage", "--min-coverage", "100"])
    assert gate.code == 1
    assert run_cli(["test", str(RULES), "--coverage", "--min-coverage", "50"]).code == 0
