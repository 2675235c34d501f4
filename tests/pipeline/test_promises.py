"""README promises that need the real command, the real HTTP client or the real store:
flags reaching the run, exit codes, the Retry-After cap, the lease and no transaction
across a request. (What fakes can show lives in tests/unit/test_run_service.py.)"""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from cli_process import REPO_ROOT, cli_environment, run_cli
from fake_time import FakeTime
from sqlalchemy import create_engine, event, select
from sqlalchemy.engine import Engine

from engine.flip.client import FlipClient
from engine.policy.decision import Action
from engine.policy.document import Policy
from engine.runs.service import RunService, RunSettings
from engine.sandbox.generator import TX_BATTERY_PROGRAM
from engine.sandbox.simulator import Simulator
from engine.store import Store
from engine.store.schema import DecisionRow, ProgramLockRow

from .conftest import (
    BOTH_STORES,
    NOW,
    NOW_ARG,
    TX_RULES,
    Pipeline,
    cli_env,
    client_settings,
    lock_factory_for,
    tx_document,
    writes,
)

LIVE = ["run", "--rules", str(TX_RULES), "--now", NOW_ARG, "--live", "--yes", "--format", "json"]


def needed_changes(pipeline: Pipeline, policy: Policy) -> list[str]:
    """The enrollments a live run would change (from a dry run of the same data)."""
    return [d.enrollment_id or "" for d in pipeline.run(policy).decisions if d.action is Action.UPDATE]


def rereads(sim: Simulator, enrollment_ids: list[str]) -> dict[str, int]:
    return {e: sim.requests_for(e).get("GET", 0) for e in enrollment_ids}


def change_states(db_url: str) -> dict[str, str]:
    with Store.open(db_url) as store:
        live = [r for r in store.list_runs() if r.mode == "live"]
        return {r.decision.enrollment_id or "": str(r.change_state) for r in store.run_decisions(live[0].id)}


# --- flags reach the run ----------------------------------------------------------------------


@pytest.mark.parametrize(("flags", "per_change"), [([], 1), (["--no-recheck"], 0)])
def test_the_reread_before_each_change_and_no_recheck(
    simulator: Simulator,
    pipeline: Pipeline,
    tx_policy: Policy,
    tmp_path: Path,
    flags: list[str],
    per_change: int,
) -> None:
    needed = needed_changes(pipeline, tx_policy)
    simulator.reset_counters()

    result = run_cli([*LIVE, *flags], env=cli_env(simulator, f"sqlite:///{tmp_path / 'cli.db'}"))

    assert result.code == 0, result.stderr
    assert rereads(simulator, needed) == dict.fromkeys(needed, per_change)
    assert simulator.request_counts()["PATCH"] == len(needed)


def test_the_policys_max_changes_stops_the_cli_run(
    simulator: Simulator,
    pipeline: Pipeline,
    tx_policy: Policy,
    write_policy: Callable[..., Policy],
    tmp_path: Path,
) -> None:
    needed = len(needed_changes(pipeline, tx_policy))
    document = tx_document()
    document["limits"] = {**document.get("limits", {}), "max_changes": needed - 1}
    write_policy(document, name="limited.yaml")
    args = [*LIVE[:2], str(tmp_path / "limited.yaml"), *LIVE[3:]]

    result = run_cli(args, env=cli_env(simulator, f"sqlite:///{tmp_path / 'cli.db'}"))

    assert result.code == 5, result.stderr
    assert f"{needed} changes planned, more than the limit of {needed - 1}" in result.stderr
    assert writes(simulator) == 0


def busiest_window(sim: Simulator, width_s: float, paths: Callable[[str], bool]) -> int:
    """The most requests (to ``paths``) that arrived within any ``width_s`` seconds."""
    times = sorted(r.at for r in sim.request_log() if paths(r.path))
    return max((sum(1 for t in times[i:] if t - start < width_s) for i, start in enumerate(times)), default=0)


def one_enrollment(path: str) -> bool:
    return path.startswith("/v1/enrollments/")


@pytest.mark.parametrize(("flags", "workers"), [([], 8), (["--concurrency", "3"], 3)])
def test_concurrency_through_the_cli(
    simulator: Simulator, tmp_path: Path, flags: list[str], workers: int
) -> None:
    # Every request takes 0.5 s: within 0.45 s one worker can have started one request at most,
    # so the busiest such window counts the workers.
    simulator.set_faults(latency_s=0.5)

    result = run_cli([*LIVE, *flags], env=cli_env(simulator, f"sqlite:///{tmp_path / 'cli.db'}"))

    assert result.code == 0, result.stderr
    assert busiest_window(simulator, 0.45, one_enrollment) == workers


def test_max_rps_through_the_cli(simulator: Simulator, tmp_path: Path) -> None:
    result = run_cli([*LIVE, "--max-rps", "20"], env=cli_env(simulator, f"sqlite:///{tmp_path / 'cli.db'}"))

    assert result.code == 0, result.stderr
    sent = sorted(r.at for r in simulator.request_log())
    assert len(sent) > 40
    assert busiest_window(simulator, 1.0, lambda _path: True) <= 21
    assert sent[-1] - sent[0] >= (len(sent) - 1) / 20 * 0.9


# --- the Retry-After cap ----------------------------------------------------------------------


@pytest.mark.parametrize(("asked", "state"), [(300, "deferred"), (31, "deferred"), (30, "applied")])
def test_retry_after_is_capped_at_30_seconds(
    simulator: Simulator, pipeline: Pipeline, tx_policy: Policy, asked: int, state: str
) -> None:
    target = needed_changes(pipeline, tx_policy)[0]
    time_ = FakeTime()
    client = FlipClient(client_settings(simulator), sleep=time_.sleep, clock=time_.monotonic)  # default cap
    simulator.script("PATCH", f"/v1/enrollments/{target}$", "429", retry_after=asked)

    with client:
        report = pipeline.run(tx_policy, live=True, client=client)

    (row,) = [r for r in pipeline.store.run_decisions(report.run_id) if r.decision.enrollment_id == target]
    assert str(row.change_state) == state
    assert (asked in time_.sleeps) is (state == "applied")
    assert all(wait <= 30 for wait in time_.sleeps)


# --- the lease --------------------------------------------------------------------------------


def test_lock_ttl_sets_the_lease_and_a_long_run_keeps_renewing_it(
    simulator: Simulator, tmp_path: Path
) -> None:
    db_url = f"sqlite:///{tmp_path / 'lease.db'}"
    Store.open(db_url).close()  # migrated before the run starts, so the watcher can read it
    simulator.set_faults(latency_s=0.25)  # the run lasts several lease lengths
    seen: list[tuple[datetime, datetime]] = []  # (when read, expires_at) while held
    done = threading.Event()
    watcher = threading.Thread(target=watch_lease, args=(db_url, seen, done))
    watcher.start()
    try:
        result = run_cli([*LIVE, "--lock-ttl", "1.5", "--concurrency", "2"], env=cli_env(simulator, db_url))
    finally:
        done.set()
        watcher.join()

    assert result.code == 0, result.stderr
    assert len(seen) > 20
    assert all(0 < (expires - read).total_seconds() <= 1.5 for read, expires in seen)
    assert len({expires for _read, expires in seen}) >= 4  # renewed, again and again
    assert (seen[-1][0] - seen[0][0]).total_seconds() > 4.5  # longer than three leases


def watch_lease(db_url: str, seen: list[tuple[datetime, datetime]], done: threading.Event) -> None:
    engine = create_engine(db_url, connect_args={"timeout": 0.2})
    query = select(ProgramLockRow.holder, ProgramLockRow.expires_at)
    try:
        while not done.is_set():
            try:
                with engine.connect() as connection:
                    row = connection.execute(query).first()
            except Exception:  # a read that meets a write lock: try again
                row = None
            if row is not None and row.holder is not None:
                expires = row.expires_at if row.expires_at.tzinfo else row.expires_at.replace(tzinfo=UTC)
                seen.append((datetime.now(UTC), expires))
            time.sleep(0.05)
    finally:
        engine.dispose()


# --- exit codes -------------------------------------------------------------------------------


def test_exit_1_when_live_changes_failed(
    simulator: Simulator, pipeline: Pipeline, tx_policy: Policy, tmp_path: Path
) -> None:
    target = needed_changes(pipeline, tx_policy)[0]
    simulator.script("PATCH", f"/v1/enrollments/{target}$", "503", times=10)  # beyond the retry budget
    db_url = f"sqlite:///{tmp_path / 'cli.db'}"

    result = run_cli(LIVE, env=cli_env(simulator, db_url))

    assert result.code == 1, result.stderr
    assert "failed_retryable 1" in result.stderr
    assert change_states(db_url)[target] == "failed_retryable"


def test_exit_3_when_the_key_is_forbidden(simulator: Simulator, tmp_path: Path) -> None:
    simulator.script("PATCH", "^/v1/enrollments/", "403")

    result = run_cli(
        [*LIVE, "--concurrency", "1"], env=cli_env(simulator, f"sqlite:///{tmp_path / 'cli.db'}")
    )

    assert result.code == 3, result.stderr
    assert "refused the key" in result.stderr
    assert simulator.request_counts()["PATCH"] == 1


def test_exit_6_when_the_api_fails_after_retries(simulator: Simulator, tmp_path: Path) -> None:
    simulator.set_faults(error_rate=1.0)

    result = run_cli(LIVE, env=cli_env(simulator, f"sqlite:///{tmp_path / 'cli.db'}"))

    assert result.code == 6, result.stderr
    assert "503" in result.stderr or "500" in result.stderr
    assert "Traceback" not in result.stderr
    assert simulator.request_counts()["GET"] == 4  # the listing, tried four times
    assert writes(simulator) == 0


@pytest.mark.parametrize(
    "db_url",
    ["postgresql+psycopg://nobody@127.0.0.1:1/none", "sqlite:////nonexistent-folder/x/autoapprove.db"],
    ids=["postgres-refused", "sqlite-unwritable"],
)
def test_exit_6_when_the_database_is_unreachable(simulator: Simulator, db_url: str) -> None:
    result = run_cli(LIVE, env=cli_env(simulator, db_url), timeout=120)

    assert result.code == 6, result.stderr
    assert result.stderr.startswith("error: ")
    assert "Traceback" not in result.stderr
    assert writes(simulator) == 0


def test_exit_130_on_ctrl_c_mid_run(simulator: Simulator, tmp_path: Path) -> None:
    db_url = f"sqlite:///{tmp_path / 'cli.db'}"
    simulator.set_faults(latency_s=0.2)
    process = subprocess.Popen(
        [sys.executable, str(REPO_ROOT / "cli.py"), *LIVE, "--concurrency", "1"],
        cwd=REPO_ROOT,
        env=cli_environment(cli_env(simulator, db_url)),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while simulator.request_counts().get("PATCH", 0) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()

    assert process.returncode == 130, stderr
    assert "Traceback" not in stderr
    states = change_states(db_url)
    assert "in_flight" not in states.values()
    assert list(states.values()).count("planned") > 0  # the rest waits for the next run
    with Store.open(db_url) as store:
        assert [str(r.outcome) for r in store.list_runs()] == ["interrupted"]


# --- no transaction across a request ----------------------------------------------------------


class TransactionWatch:
    """Counts the open database transactions of each thread (SQLAlchemy's connection events)
    and fails the test when a thread starts an HTTP request, or reads its answer, while one
    of its transactions is open."""

    def __init__(self, engine: Engine) -> None:
        self.open: defaultdict[int, int] = defaultdict(int)
        self.violations: list[str] = []
        self.transactions = 0
        self.requests = 0
        event.listen(engine, "begin", self._begin)
        event.listen(engine, "commit", self._end)
        event.listen(engine, "rollback", self._end)

    def _begin(self, _connection: Any) -> None:
        self.open[threading.get_ident()] += 1
        self.transactions += 1

    def _end(self, _connection: Any) -> None:
        ident = threading.get_ident()
        self.open[ident] = max(0, self.open[ident] - 1)

    def check(self, what: str) -> None:
        if self.open[threading.get_ident()]:
            self.violations.append(what)


class WatchedTransport(httpx.BaseTransport):
    """The real HTTP transport, asking the watch before each request and each chunk read."""

    def __init__(self, watch: TransactionWatch) -> None:
        self.watch = watch
        self.inner = httpx.HTTPTransport()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.watch.requests += 1
        self.watch.check(f"{request.method} {request.url.path}")
        response = self.inner.handle_request(request)
        return httpx.Response(
            response.status_code,
            headers=response.headers,
            stream=WatchedStream(response.stream, self.watch, request.url.path),  # type: ignore[arg-type]
            extensions=response.extensions,
        )

    def close(self) -> None:
        self.inner.close()


class WatchedStream(httpx.SyncByteStream):
    def __init__(self, inner: Any, watch: TransactionWatch, path: str) -> None:
        self.inner, self.watch, self.path = inner, watch, path

    def __iter__(self) -> Iterator[bytes]:
        for chunk in self.inner:
            self.watch.check(f"reading {self.path}")
            yield chunk

    def close(self) -> None:
        self.inner.close()


@BOTH_STORES
def test_no_transaction_is_open_while_a_request_is_in_flight(
    simulator: Simulator, store: Store, tx_policy: Policy
) -> None:
    watch = TransactionWatch(store.engine)
    client = FlipClient(client_settings(simulator), transport=WatchedTransport(watch))
    edited = simulator.enrollment_ids(TX_BATTERY_PROGRAM)[0]
    with client:
        for live in (False, True, True):
            service = RunService(
                tx_policy,
                client,
                store,
                RunSettings(live=live, now=NOW),
                lock_factory=lock_factory_for(store),
            )
            service.run()
            simulator.edit_enrollment(edited, status_reason="edited between runs")

    assert watch.requests > 50
    assert watch.transactions > 10
    assert watch.violations == []
    with store.engine.connect() as connection:
        left = connection.execute(
            select(DecisionRow.change_state).where(DecisionRow.change_state == "in_flight")
        )
        assert left.all() == []
