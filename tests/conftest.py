"""Shared fixtures: a fixed clock, the example policies, and writers for policy and input files.

Hypothesis profiles: ``dev`` (the default) keeps the unit tier under 10 s; CI sets
``HYPOTHESIS_PROFILE=ci`` for more examples per property; mutation testing uses ``mutmut``
(fewer: each of thousands of mutants runs the covering tests again). Tests that need a fixed number
of examples (the stateful safety machine) say so in their own ``settings``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings

from engine.policy.document import Policy, load_policy

REPO_ROOT = Path(__file__).resolve().parent.parent

settings.register_profile("dev", max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("ci", max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile(
    "mutmut", max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))


GENERATED_PROGRAMS = ("prog-tx-residential-battery", "prog-ca-ev-charging")
SAMPLE_POLICIES = (
    REPO_ROOT / "rules" / "tx_residential_battery.yaml",
    REPO_ROOT / "rules" / "ca_ev_charging.yaml",
    REPO_ROOT / "bench" / "policies" / "bench30.yaml",
)


@pytest.fixture(params=SAMPLE_POLICIES, ids=lambda p: p.stem)
def sample_policy_path(request: pytest.FixtureRequest) -> Path:
    """Each example policy and the 30-rule benchmark policy."""
    path: Path = request.param
    return path


@pytest.fixture(params=GENERATED_PROGRAMS)
def generated_program(request: pytest.FixtureRequest) -> str:
    """Each program kind the data generator knows."""
    program: str = request.param
    return program


@pytest.fixture
def rules_dir() -> Path:
    return REPO_ROOT / "rules"


@pytest.fixture
def now() -> datetime:
    """The evaluation time every example test file uses."""
    return datetime(2026, 11, 25, tzinfo=UTC)


@pytest.fixture(scope="session")
def tx_policy() -> Policy:
    return load_policy(REPO_ROOT / "rules" / "tx_residential_battery.yaml")


@pytest.fixture(scope="session")
def ca_policy() -> Policy:
    return load_policy(REPO_ROOT / "rules" / "ca_ev_charging.yaml")


@pytest.fixture
def policy_from_text(tmp_path: Path) -> Callable[..., Policy]:
    """Write policy YAML to a file under ``tmp_path`` and load it the way the CLI does."""

    def write_and_load(text: str, name: str = "policy.yaml") -> Policy:
        path = tmp_path / name
        path.write_text(text, encoding="utf-8")
        return load_policy(path)

    return write_and_load


@pytest.fixture
def write_json(tmp_path: Path) -> Callable[..., Path]:
    """Write a JSON document to a file under ``tmp_path`` and return its path."""

    def write(data: Any, name: str = "enrollments.json") -> Path:
        path = tmp_path / name
        path.write_text(json.dumps(data), encoding="utf-8")
        return path

    return write


@pytest.fixture
def tx_enrollment() -> Callable[..., dict[str, Any]]:
    """A SUBMITTED Houston enrollment that the Texas policy approves; keyword args override."""

    def build(**overrides: Any) -> dict[str, Any]:
        enrollment: dict[str, Any] = {
            "id": "enr-1",
            "status": "SUBMITTED",
            "site": {"state_code": "TX", "zip_code": "77002", "city": "Houston", "groups": []},
            "program_specific_attributes": [
                {"name": "utility_account_number", "type": "string", "value": "TX-0012345678"},
                {"name": "has_solar", "type": "boolean", "value": "no"},
                {"name": "tariff", "type": "string", "value": "RES-STD"},
            ],
            "devices": [
                {
                    "id": "dev-1",
                    "type": "BATTERY",
                    "serial_number": "SN-1",
                    "install_date": "2023-05-01T00:00:00Z",
                    "attributes": {"battery_capacity_wh": 13500, "battery_power_output_w": 5000},
                }
            ],
        }
        enrollment.update(overrides)
        return enrollment

    return build
