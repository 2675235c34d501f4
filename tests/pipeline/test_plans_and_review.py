"""Review, then apply: saved plans applied exactly, and the review queue, through the real CLI."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy
from cli_process import run_cli

from engine.sandbox.generator import TX_BATTERY_PROGRAM
from engine.sandbox.simulator import Simulator

from .conftest import BOTH_STORES, cli_env

REPO = Path(__file__).resolve().parents[2]
TX_RULES = REPO / "rules" / "tx_residential_battery.yaml"
NOW = "2026-11-25T00:00:00Z"


def patches(sim: Simulator) -> int:
    return sim.request_counts().get("PATCH", 0)


def person_edits(sim: Simulator, enrollment_id: str, status: str) -> None:
    """What a person does in the Flip dashboard: a PATCH the product did not send."""
    headers = {"Authorization": f"Bearer {sim.config.api_key}"}
    body = {"status": status, "status_reason": "decided by a person"}
    httpx.patch(
        f"{sim.base_url}/v1/enrollments/{enrollment_id}", json=body, headers=headers
    ).raise_for_status()


def plan(sim: Simulator, db: str, tmp_path: Path, rules: Path = TX_RULES) -> tuple[int, dict[str, Any]]:
    out = tmp_path / "plan.json"
    result = run_cli(["plan", "--rules", str(rules), "--now", NOW, "--out", str(out)], cli_env(sim, db))
    assert result.code == 0, result.stderr
    document = json.loads(out.read_text(encoding="utf-8"))
    line = f"Plan {document['plan_id']} saved; apply it with: autoapprove apply {document['plan_id']}"
    assert line in result.stdout
    return document["plan_id"], document


@BOTH_STORES
def test_a_plan_applies_exactly_once_and_a_persons_edit_is_caught_as_stale(
    simulator: Simulator, store_url: str, tmp_path: Path
) -> None:
    plan_id, document = plan(simulator, store_url, tmp_path)
    changes = document["changes"]
    assert len(changes) >= 3
    assert patches(simulator) == 0, "planning sends nothing"
    text = json.dumps(document)
    assert simulator.config.api_key not in text
    for enrollment in simulator.enrollments(TX_BATTERY_PROGRAM)[:20]:
        site = enrollment.get("site") or {}
        for key in ("email", "last_name", "street_address"):
            if site.get(key):
                assert site[key] not in text, key

    edited = changes[0]["enrollment_id"]
    person_edits(simulator, edited, "PAUSED" if changes[0]["planned"]["status"] != "PAUSED" else "ACTIVE")
    before = patches(simulator)

    applied = run_cli(
        ["apply", str(tmp_path / "plan.json"), "--yes", "--by", "alice"], cli_env(simulator, store_url)
    )
    assert applied.code == 0, applied.stderr
    assert "stale 1" in applied.stderr
    assert f"{edited}: drifted since planning: status" in applied.stderr
    assert patches(simulator) - before == len(changes) - 1, "every other change exactly once"
    for change in changes[1:]:
        now = simulator.enrollment(change["enrollment_id"])
        if "status" in change["patch"]:
            assert now["status"] == change["patch"]["status"]
            assert now["status_reason"] == change["patch"]["status_reason"]
    assert simulator.enrollment(edited)["status_reason"] == "decided by a person"

    again = run_cli(["apply", str(plan_id), "--yes"], cli_env(simulator, store_url))
    assert again.code == 2
    assert f"plan {plan_id} was already applied" in again.stderr
    assert patches(simulator) - before == len(changes) - 1, "the second apply sent nothing"

    runs = run_cli(["runs"], cli_env(simulator, store_url))
    assert f"apply plan {plan_id} by alice" in runs.stdout
    assert f"plan {plan_id} " in runs.stdout
    history = run_cli(["history", edited], cli_env(simulator, store_url))
    assert "change stale" in history.stdout
    assert "approved by alice" in history.stdout


def test_bad_plans_are_refused_with_exit_2_and_nothing_sent(
    simulator: Simulator, store_url: str, tmp_path: Path
) -> None:
    plan_id, document = plan(simulator, store_url, tmp_path)
    env = cli_env(simulator, store_url)
    edited = dict(document)
    edited["changes"] = [dict(document["changes"][0], patch={"status": "REJECTED"}), *document["changes"][1:]]
    (tmp_path / "edited.json").write_text(json.dumps(edited), encoding="utf-8")
    (tmp_path / "other.json").write_text('{"enrollments": []}', encoding="utf-8")
    cases = [
        (["apply", "999", "--yes"], "no plan 999"),
        (["apply", str(tmp_path / "edited.json"), "--yes"], "edited after it was saved"),
        (["apply", str(tmp_path / "other.json"), "--yes"], "not an autoapprove plan file"),
        (["apply", str(plan_id), "--yes", "--program", "prog-ca-ev-charging"], "is for program"),
        (["apply", str(plan_id)], "needs --yes"),
    ]
    for args, message in cases:
        result = run_cli(args, env)
        assert (result.code, message in result.stderr) == (2, True), (args, result.stderr)
    other_url = run_cli(["apply", str(plan_id), "--yes"], {**env, "FLIP_API_URL": "http://127.0.0.1:9"})
    assert other_url.code == 2
    assert "was made against" in other_url.stderr
    time.sleep(1.2)
    too_old = run_cli(["apply", str(plan_id), "--yes", "--max-age", "1s"], env)
    assert too_old.code == 2
    assert "older than --max-age" in too_old.stderr
    assert patches(simulator) == 0
    assert "Traceback" not in "".join([other_url.stderr, too_old.stderr])


REVIEW_POLICY = "review:\n  require_approval: [REJECTED]\nlimits:"


def review_rules(folder: Path) -> Path:
    """The Texas policy, asking a person to approve every rejection."""
    rules = folder / "review.yaml"
    rules.write_text(
        TX_RULES.read_text(encoding="utf-8").replace("limits:", REVIEW_POLICY, 1), encoding="utf-8"
    )
    return rules


@BOTH_STORES
def test_scheduled_runs_send_no_rejection_until_a_person_approves(
    simulator: Simulator, store_url: str, tmp_path: Path
) -> None:
    rules = review_rules(tmp_path)
    env = cli_env(simulator, store_url)
    live = ["run", "--rules", str(rules), "--now", NOW, "--live", "--yes", "--format", "json"]

    first = run_cli(live, env)
    assert first.code == 0, first.stderr
    queue = json.loads(run_cli(["review", "--format", "json"], env).stdout)
    assert queue, "the test data has rejections"
    assert {item["status"] for item in queue} == {"REJECTED"}
    assert {"enrollment_id", "status", "current_status", "rule_id", "reason", "since"} <= set(queue[0])
    assert f"{len(queue)} changes await approval: autoapprove review" in first.stderr
    for item in queue:
        assert simulator.enrollment(item["enrollment_id"])["status"] != "REJECTED"

    second = run_cli(live, env)
    assert second.code == 0, second.stderr
    again = json.loads(run_cli(["review", "--format", "json"], env).stdout)
    assert [(i["id"], i["since"]) for i in again] == [(i["id"], i["since"]) for i in queue], (
        "not queued twice"
    )

    refused, *approved = queue
    reject = ["review", "reject", str(refused["id"]), "--by", "carol", "--note", "address unclear"]
    assert run_cli(reject, env).code == 0
    before = patches(simulator)
    ok = run_cli(["review", "approve", "--all", "--by", "bob", "--yes"], env)
    assert ok.code == 0, ok.stderr
    assert patches(simulator) - before == len(approved)
    for item in approved:
        assert simulator.enrollment(item["enrollment_id"])["status"] == "REJECTED"
    assert simulator.enrollment(refused["enrollment_id"])["status"] != "REJECTED"

    not_waiting = run_cli(["review", "approve", str(refused["id"]), "--by", "bob", "--yes"], env)
    assert not_waiting.code == 2
    assert "not waiting for approval (it is refused)" in not_waiting.stderr
    history = run_cli(["history", refused["enrollment_id"]], env).stdout
    assert "refused by carol" in history
    assert "address unclear" in history
    if approved:
        assert "approved by bob" in run_cli(["history", approved[0]["enrollment_id"]], env).stdout
    third = run_cli(live, env)
    assert third.code == 0
    assert json.loads(run_cli(["review", "--format", "json"], env).stdout) == [], (
        "a refusal is not re-proposed"
    )


def test_plan_and_review_write_html_reports_and_send_nothing(simulator: Simulator, tmp_path: Path) -> None:
    rules = review_rules(tmp_path)
    env = cli_env(simulator, f"sqlite:///{tmp_path / 'html.db'}")
    planned = run_cli(["plan", "--rules", str(rules), "--now", NOW, "--format", "html"], env)
    assert planned.code == 0, planned.stderr
    html = planned.stdout
    assert html.startswith("<!DOCTYPE html>")
    assert "<title>Plan 1</title>" in html
    assert simulator.base_url in html
    assert "Plan 1 saved; apply it with: autoapprove apply 1" in planned.stderr
    enrollments = simulator.enrollments(TX_BATTERY_PROGRAM)
    assert all(e["id"] in html for e in enrollments)
    for enrollment in enrollments:
        site = enrollment.get("site") or {}
        for key in ("email", "last_name", "street_address"):
            if site.get(key):
                assert site[key] not in html, key
    trap = run_cli(["plan", "--rules", str(rules), "--now", NOW, "--out", str(tmp_path / "p.html")], env)
    assert trap.code == 2
    assert "--out is the plan's JSON file" in trap.stderr

    assert run_cli(["run", "--rules", str(rules), "--now", NOW, "--live", "--yes"], env).code == 0
    before = patches(simulator)
    report = tmp_path / "review.html"
    listed = run_cli(["review", "--format", "html", "--out", str(report)], env)
    assert listed.code == 0, listed.stderr
    assert listed.stdout == ""
    assert f"wrote {report}" in listed.stderr
    page = report.read_text(encoding="utf-8")
    queue = json.loads(run_cli(["review", "--format", "json"], env).stdout)
    assert queue
    assert "<title>Review queue</title>" in page
    assert all(item["enrollment_id"] in page for item in queue)
    assert f'"{len(queue)}"' in page or f">{len(queue)}<" in page
    assert patches(simulator) == before, "listing sends nothing"
    empty = run_cli(["review", "--program", "prog-ca-ev-charging", "--format", "html"], env)
    assert empty.code == 0
    assert "No change is waiting." in empty.stdout


def test_an_approval_whose_policy_is_not_stored_is_refused_before_its_run_starts(
    simulator: Simulator, store_url: str, tmp_path: Path
) -> None:
    rules = review_rules(tmp_path)
    env = cli_env(simulator, store_url)
    live = ["run", "--rules", str(rules), "--now", NOW, "--live", "--yes"]
    assert run_cli(live, env).code == 0
    queue = json.loads(run_cli(["review", "--format", "json"], env).stdout)
    assert queue
    # A store from before policy versions were kept: the queuing run names none.
    engine = sqlalchemy.create_engine(store_url)
    with engine.begin() as connection:
        connection.execute(sqlalchemy.text("UPDATE runs SET policy_version_id = NULL"))
    engine.dispose()
    before = patches(simulator)
    runs_before = run_cli(["runs"], env).stdout

    refused = run_cli(["review", "approve", "--all", "--by", "bob", "--yes"], env)

    assert refused.code == 2, refused.stderr
    assert "the change has no stored policy version: it cannot be re-checked" in refused.stderr
    assert "Traceback" not in refused.stderr
    assert patches(simulator) == before
    runs_after = run_cli(["runs"], env).stdout
    assert runs_after == runs_before, "no run row is started (and none is left running)"
    still = json.loads(run_cli(["review", "--format", "json"], env).stdout)
    assert [i["id"] for i in still] == [i["id"] for i in queue]
