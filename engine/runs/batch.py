"""Every program of a folder of policies in one command: one run per program, each under
its own program lock, one after another or a few at a time; one program's failure (or its
held lock) never stops the others.

This module only orders and isolates the runs; what one run is (``run_one``) and what its
failure means to a person (exit codes, messages) are the caller's.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Generic, TypeVar

from engine.errors import AutoapproveError, InputError
from engine.policy.document import Policy

__all__ = ["ProgramJob", "ProgramResult", "check_unique_programs", "run_programs"]

ReportT = TypeVar("ReportT")


@dataclass(frozen=True)
class ProgramJob:
    """One policy file of the folder and the program it runs against."""

    path: Path
    policy: Policy

    @property
    def program_id(self) -> str:
        return self.policy.program_id


@dataclass(frozen=True)
class ProgramResult(Generic[ReportT]):
    """How one program's run ended: its report, or the error that stopped it."""

    job: ProgramJob
    started_at: datetime
    report: ReportT | None = None
    error: AutoapproveError | None = None


def check_unique_programs(jobs: Sequence[ProgramJob]) -> None:
    """Two policies for one program would race for its enrollments: refuse before any run."""
    first: dict[str, Path] = {}
    clashes: list[str] = []
    for job in jobs:
        seen = first.setdefault(job.program_id, job.path)
        if seen != job.path:
            clashes.append(f"{job.program_id} in {seen} and {job.path}")
    if clashes:
        raise InputError("two policies for the same program (one file per program): " + "; ".join(clashes))


def run_programs(
    jobs: Sequence[ProgramJob],
    run_one: Callable[[ProgramJob], ReportT],
    *,
    parallel: int = 1,
    stop: threading.Event | None = None,
) -> list[ProgramResult[ReportT]]:
    """Run every job, in order or ``parallel`` at a time; results come back in job order.

    An ``AutoapproveError`` ends only its own program's run; anything else (a bug, Ctrl-C)
    propagates. Once ``stop`` is set no further run starts.
    """
    stop = stop or threading.Event()

    def guarded(job: ProgramJob) -> ProgramResult[ReportT] | None:
        if stop.is_set():
            return None
        started = datetime.now(UTC)
        try:
            return ProgramResult(job, started, report=run_one(job))
        except AutoapproveError as exc:
            return ProgramResult(job, started, error=exc)

    if parallel <= 1 or len(jobs) <= 1:
        results = [guarded(job) for job in jobs]
    else:
        with ThreadPoolExecutor(max_workers=parallel, thread_name_prefix="program") as pool:
            results = list(pool.map(guarded, jobs))
    return [result for result in results if result is not None]
