"""Fixtures for the whole pipeline: the real simulator over HTTP, the real client, the real
store (SQLite in ``tmp_path``; PostgreSQL when ``AUTOAPPROVE_TEST_POSTGRES_URL`` is set),
and ``RunService`` built from them the way ``engine.bootstrap`` wires it. Nothing is patched:
faults come from the simulator, waits from an injected ``sleep``."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from postgres_databases import fresh_postgres_database

from engine.flip.client import ApiSettings, FlipClient, Secret
from engine.policy.decision import Decision
from engine.policy.document import Policy, load_policy
from engine.runs.ports import ProgressCallback
from engine.runs.service import EvaluatedCallback, RunService, RunSettings
from engine.sandbox.generator import CA_EV_PROGRAM, TX_BATTERY_PROGRAM
from engine.sandbox.simulator import FaultConfig, Simulator, SimulatorConfig
from engine.store import ProgramLock, Store, acquire_program_lock

REPO_ROOT = Path(__file__).resolve().parents[2]
TX_RULES = REPO_ROOT / "rules" / "tx_residential_battery.yaml"
CA_RULES = REPO_ROOT / "rules" / "ca_ev_charging.yaml"
NOW = datetime(2026, 11, 25, tzinfo=UTC)
NOW_ARG = "2026-11-25T00:00:00Z"
SEED = 11
TX_COUNT = 90
CA_COUNT = 60
# Scripted "timeout" faults hang this long; the clients of the timeout tests give up sooner.
HANG_S = 1.0

BOTH_STORES = pytest.mark.parametrize(
    "store_url", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True
)


# --- the simulator and the client -----------------------------------------------------------


@pytest.fixture
def simulator() -> Iterator[Simulator]:
    """A started simulator on a free loopback port: both example programs, fixed seed and now."""
    config = SimulatorConfig(
        programs={TX_BATTERY_PROGRAM: TX_COUNT, CA_EV_PROGRAM: CA_COUNT},
        seed=SEED,
        now=NOW,
        faults=FaultConfig(hang_s=HANG_S),
    )
    with Simulator(config) as sim:
        yield sim


class RecordingSleep:
    """A real ``sleep`` (the simulator's request log keeps real times) that records each wait
    and which requests the simulator received while it lasted."""

    def __init__(self, simulator: Simulator) -> None:
        self.simulator = simulator
        self.waits: list[tuple[float, float, float]] = []  # (seconds, started, ended)
        self._lock = threading.Lock()

    def __call__(self, seconds: float) -> None:
        started = time.monotonic()
        time.sleep(seconds)
        with self._lock:
            self.waits.append((seconds, started, time.monotonic()))

    def requests_during(self, started: float, ended: float) -> list[Any]:
        return [r for r in self.simulator.request_log() if started < r.at < ended]


@pytest.fixture
def recording_sleep(simulator: Simulator) -> RecordingSleep:
    return RecordingSleep(simulator)


def client_settings(sim: Simulator, **changes: Any) -> ApiSettings:
    """Fast retries for tests: small backoff, short timeout."""
    base: dict[str, Any] = {
        "api_key": Secret(sim.config.api_key),
        "base_url": sim.base_url,
        "timeout_s": 2.0,
        "max_attempts": 4,
        "backoff_initial_s": 0.01,
        "backoff_max_s": 0.05,
    }
    base.update(changes)
    return ApiSettings(**base)


@pytest.fixture
def make_client(simulator: Simulator) -> Iterator[Callable[..., FlipClient]]:
    """Clients of the running simulator; keyword args change settings, ``sleep=`` the waits."""
    clients: list[FlipClient] = []

    def make(*, sleep: Callable[[float], None] = time.sleep, **changes: Any) -> FlipClient:
        client = FlipClient(client_settings(simulator, **changes), sleep=sleep)
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


@pytest.fixture
def client(make_client: Callable[..., FlipClient]) -> FlipClient:
    return make_client()


# --- stores ---------------------------------------------------------------------------------


@pytest.fixture
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A database URL: SQLite in ``tmp_path`` by default; a fresh PostgreSQL database when
    parametrized indirectly with ``"postgres"`` (see ``BOTH_STORES``)."""
    backend = getattr(request, "param", "sqlite")
    if backend == "sqlite":
        yield f"sqlite:///{tmp_path / 'store.db'}"
        return
    with fresh_postgres_database("pipeline") as url:
        yield url


@pytest.fixture
def store(store_url: str) -> Iterator[Store]:
    """The real store, migrated, on the fresh database of ``store_url``."""
    with Store.open(store_url) as opened:
        yield opened


# --- the service ----------------------------------------------------------------------------


def lock_factory_for(store: Store, ttl_s: float = 60.0) -> Callable[[str, str], Any]:
    """The program lock the way ``engine.bootstrap.run_policy`` takes it."""

    @contextmanager
    def factory(program: str, holder: str) -> Iterator[ProgramLock]:
        with acquire_program_lock(store.engine, program, holder, ttl_s=ttl_s) as lock:
            yield lock

    return factory


@dataclass
class Pipeline:
    """Builds ``RunService`` from the real client and store of one test."""

    client: FlipClient
    store: Store
    progress_log: list[tuple[str, int, int]] = field(default_factory=list)

    def service(
        self,
        policy: Policy,
        *,
        client: FlipClient | None = None,
        progress: ProgressCallback | None = None,
        stop: threading.Event | None = None,
        on_evaluated: EvaluatedCallback | None = None,
        on_decision: Callable[[Decision], None] | None = None,
        **settings: Any,
    ) -> RunService:
        settings.setdefault("now", NOW)

        def record(stage: str, done: int, total: int) -> None:
            self.progress_log.append((stage, done, total))
            if progress is not None:
                progress(stage, done, total)

        return RunService(
            policy,
            client or self.client,
            self.store,
            RunSettings(**settings),
            lock_factory=lock_factory_for(self.store),
            progress=record,
            stop=stop,
            on_evaluated=on_evaluated,
            on_decision=on_decision,
        )

    def run(self, policy: Policy, **kwargs: Any) -> Any:
        return self.service(policy, **kwargs).run()


@pytest.fixture
def pipeline(client: FlipClient, store: Store) -> Pipeline:
    return Pipeline(client, store)


# --- policies -------------------------------------------------------------------------------


def tx_document() -> dict[str, Any]:
    """The example Texas policy as a dict, to derive test policies from."""
    data: dict[str, Any] = yaml.safe_load(TX_RULES.read_text(encoding="utf-8"))
    return data


@pytest.fixture
def write_policy(tmp_path: Path) -> Callable[..., Policy]:
    """Write a policy document (dict) under ``tmp_path`` and load it like the CLI does."""
    counter = iter(range(1_000))

    def write(document: dict[str, Any], name: str | None = None) -> Policy:
        path = tmp_path / (name or f"policy_{next(counter)}.yaml")
        path.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
        return load_policy(path)

    return write


# --- the CLI in a subprocess ----------------------------------------------------------------


def cli_env(sim: Simulator, db_url: str, **extra: str) -> dict[str, str]:
    return {
        "FLIP_API_URL": sim.base_url,
        "FLIP_API_KEY": sim.config.api_key,
        "AUTOAPPROVE_DB": db_url,
        **extra,
    }


# --- small helpers --------------------------------------------------------------------------


def group_ids(enrollment: dict[str, Any]) -> set[str]:
    site = enrollment.get("site") or {}
    return {g["id"] for g in site.get("groups") or []}


def writes(sim: Simulator) -> int:
    """PATCH and POST requests the simulator received."""
    counts = sim.request_counts()
    return counts.get("PATCH", 0) + counts.get("POST", 0)
