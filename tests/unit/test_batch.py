"""Folder runs: every program once, in order or in parallel, failures isolated, duplicate
programs refused before anything runs."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from engine.errors import ApiError, InputError, LockHeldError
from engine.policy.document import load_policy_text
from engine.runs.batch import ProgramJob, check_unique_programs, run_programs

POLICY = """
program_id: {program}
applies_to: [SUBMITTED]
rules:
  - id: approve
    when: true
    status: ACTIVE
    reason: ok
"""


def job(program: str, name: str | None = None) -> ProgramJob:
    path = Path(f"rules/{name or program}.yaml")
    return ProgramJob(path, load_policy_text(POLICY.format(program=program), str(path)))


def test_every_program_runs_once_in_order_and_a_failure_stops_only_its_own() -> None:
    jobs = [job("a"), job("b"), job("c")]
    ran: list[str] = []

    def run_one(j: ProgramJob) -> str:
        ran.append(j.program_id)
        if j.program_id == "b":
            raise LockHeldError("program b is locked by host:1")
        return f"report {j.program_id}"

    results = run_programs(jobs, run_one)
    assert ran == ["a", "b", "c"]
    assert [r.report for r in results] == ["report a", None, "report c"]
    assert isinstance(results[1].error, LockHeldError)


def test_parallel_runs_overlap_and_come_back_in_job_order() -> None:
    jobs = [job(p) for p in "abcd"]
    active, peak = 0, 0
    guard = threading.Lock()

    def run_one(j: ProgramJob) -> str:
        nonlocal active, peak
        with guard:
            active += 1
            peak = max(peak, active)
        time.sleep(0.05)
        with guard:
            active -= 1
        if j.program_id == "c":
            raise ApiError("down", status_code=503)
        return j.program_id

    results = run_programs(jobs, run_one, parallel=2)
    assert [r.job.program_id for r in results] == ["a", "b", "c", "d"]
    assert peak == 2
    assert results[2].error is not None
    assert [r.report for r in results if r.error is None] == ["a", "b", "d"]


def test_a_stop_starts_no_further_run() -> None:
    stop = threading.Event()

    def run_one(j: ProgramJob) -> str:
        stop.set()  # a SIGTERM during the first run
        return j.program_id

    results = run_programs([job("a"), job("b")], run_one, stop=stop)
    assert [r.report for r in results] == ["a"]


def test_a_bug_is_not_swallowed() -> None:
    def run_one(_j: ProgramJob) -> str:
        raise RuntimeError("bug")

    with pytest.raises(RuntimeError):
        run_programs([job("a")], run_one)


def test_two_policies_for_one_program_are_refused_naming_both_files() -> None:
    with pytest.raises(InputError) as caught:
        check_unique_programs([job("a"), job("b"), job("a", name="a-copy")])
    message = str(caught.value)
    assert "rules/a.yaml" in message
    assert "rules/a-copy.yaml" in message
    check_unique_programs([job("a"), job("b")])
