"""Fixtures for the API layer: a running simulator on a free loopback port, raw HTTP to it,
a client pointed at it, and a fake clock whose ``sleep`` records every wait."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import httpx
import pytest
from fake_time import FakeTime

from engine.flip.client import ApiSettings, FlipClient, Secret
from engine.sandbox.generator import CA_EV_PROGRAM, TX_BATTERY_PROGRAM
from engine.sandbox.simulator import Simulator, SimulatorConfig

SIM_NOW = datetime(2026, 11, 25, tzinfo=UTC)
SIM_PROGRAMS = {TX_BATTERY_PROGRAM: 50, CA_EV_PROGRAM: 50}


def sim_config(**changes: object) -> SimulatorConfig:
    base: dict[str, object] = {"programs": dict(SIM_PROGRAMS), "seed": 7, "now": SIM_NOW}
    base.update(changes)
    return SimulatorConfig(**base)  # type: ignore[arg-type]


@pytest.fixture
def simulator() -> Iterator[Simulator]:
    """A started simulator on a free port with 50 enrollments in each program."""
    with Simulator(sim_config()) as sim:
        yield sim


@pytest.fixture
def sim_http(simulator: Simulator) -> Iterator[httpx.Client]:
    """Raw HTTP to the simulator, with the right key."""
    headers = {"Authorization": f"Bearer {simulator.config.api_key}"}
    with httpx.Client(base_url=simulator.base_url, headers=headers, timeout=5) as http:
        yield http


@pytest.fixture
def fake_time() -> FakeTime:
    return FakeTime()


def client_settings(sim: Simulator, **changes: object) -> ApiSettings:
    """Settings for tests: short timeout, tiny backoff."""
    base: dict[str, object] = {
        "api_key": Secret(sim.config.api_key),
        "base_url": sim.base_url,
        "timeout_s": 1.0,
        "backoff_initial_s": 0.01,
        "backoff_max_s": 0.05,
    }
    base.update(changes)
    return ApiSettings(**base)  # type: ignore[arg-type]


@pytest.fixture
def api_client(simulator: Simulator, fake_time: FakeTime) -> Iterator[FlipClient]:
    """A client of the running simulator whose waits go to ``fake_time``."""
    client = FlipClient(client_settings(simulator), sleep=fake_time.sleep, clock=fake_time.monotonic)
    with client:
        yield client
