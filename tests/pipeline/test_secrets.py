"""The API key and the personal data of the site block never leave the process: not in the
CLI's output, not in logs, not in any column of the store, even when a live run meets faults
("safe unattended runs", section 6.16)."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from cli_process import run_cli
from sqlalchemy import Engine, MetaData, create_engine, select

from engine.errors import ApiAuthError, ApiError
from engine.flip.client import FlipClient, Secret
from engine.policy.document import Policy
from engine.sandbox.generator import TX_BATTERY_PROGRAM
from engine.sandbox.simulator import Simulator
from engine.store import Store

from .conftest import BOTH_STORES, NOW_ARG, Pipeline, cli_env, tx_document

CANARY_KEY = "fl_CANARY_KEY_123"
WRONG_CANARY_KEY = "fl_CANARY_WRONG_456"
CANARY_PERSON = "CANARYPERSON"
CANARIES = (CANARY_KEY, WRONG_CANARY_KEY, CANARY_PERSON.lower())
FAULTS: dict[str, Any] = {"error_rate": 0.12, "rate_limit": 0.08, "retry_after_s": 0, "drop": 0.05, "seed": 4}


def plant_canaries(simulator: Simulator) -> list[str]:
    """Accept only the canary key; give every Texas site a canary person. Returns the ids."""
    simulator.set_api_key(CANARY_KEY)
    ids = simulator.enrollment_ids(TX_BATTERY_PROGRAM)
    for index, enrollment_id in enumerate(ids):
        site = dict(simulator.enrollment(enrollment_id).get("site") or {})
        site.update(
            first_name=f"{CANARY_PERSON}First{index}",
            last_name=f"{CANARY_PERSON}Last{index}",
            email=f"{CANARY_PERSON.lower()}{index}@mail.example",
            street_address=f"{index} {CANARY_PERSON} Road",
            street_address2=f"Apt {CANARY_PERSON}",
            company_name=f"{CANARY_PERSON} Inc",
        )
        simulator.edit_enrollment(enrollment_id, site=site)
    return ids


def policy_reading_personal_data(write_policy: Callable[..., Policy]) -> Policy:
    """The Texas policy plus a rule that reads the email: the facts a rule reads must not be
    stored either."""
    document = tx_document()
    document["rules"].insert(
        0,
        {
            "id": "needs-email",
            "when": {"!!": [{"missing": ["site.email"]}]},
            "status": "NEEDS_ACTION",
            "reason": "Please add an email address",
        },
    )
    return write_policy(document, name="reads_email.yaml")


def leaks(text: str) -> list[str]:
    lowered = text.lower()
    return [canary for canary in CANARIES if canary.lower() in lowered]


def database_text(engine: Engine) -> Iterator[str]:
    """Every value of every row of every table, as text."""
    metadata = MetaData()
    metadata.reflect(engine)
    with engine.connect() as connection:
        for table in metadata.sorted_tables:
            for row in connection.execute(select(table)):
                for value in row:
                    if isinstance(value, dict | list):
                        yield json.dumps(value, ensure_ascii=False)
                    elif value is not None:
                        yield str(value)


def database_leaks(url: str) -> list[str]:
    engine = create_engine(url)
    try:
        text = "\n".join(database_text(engine))
    finally:
        engine.dispose()
    assert "prog-tx-residential-battery" in text, "the dump must have read the stored runs"
    return leaks(text)


@BOTH_STORES
def test_a_faulty_live_run_keeps_key_and_personal_data_out_of_logs_and_the_store(
    simulator: Simulator,
    pipeline: Pipeline,
    store_url: str,
    make_client: Callable[..., FlipClient],
    write_policy: Callable[..., Policy],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    ids = plant_canaries(simulator)
    policy = policy_reading_personal_data(write_policy)
    client = make_client(api_key=Secret(CANARY_KEY), max_attempts=3)
    simulator.set_faults(**FAULTS)
    simulator.script("PATCH", f"^/v1/enrollments/{ids[5]}$", "500", times=3)
    simulator.script("GET", f"^/v1/enrollments/{ids[7]}$", "truncate")

    outcomes = []
    for _ in range(3):
        try:
            outcomes.append(pipeline.run(policy, live=True, client=client).outcome)
        except ApiError as exc:
            outcomes.append(type(exc).__name__)
    wrong = make_client(api_key=Secret(WRONG_CANARY_KEY))
    with pytest.raises(ApiAuthError) as refused:
        pipeline.run(policy, live=True, client=wrong)

    assert simulator.request_counts().get("PATCH", 0) > 0, f"nothing was applied: {outcomes}"
    assert leaks(json.dumps(simulator.enrollment(ids[0]))) != []  # the canaries are really there
    assert any("retrying" in r.getMessage() for r in caplog.records), "the faults must have been met"
    assert leaks(str(refused.value)) == []
    assert leaks(caplog.text) == []
    assert leaks("\n".join(str(r.args) for r in caplog.records)) == []
    assert database_leaks(store_url) == []


@pytest.mark.slow
def test_cli_output_of_a_faulty_live_run_has_no_key_and_no_personal_data(
    simulator: Simulator, tmp_path: Path, write_policy: Callable[..., Policy]
) -> None:
    plant_canaries(simulator)
    policy_reading_personal_data(write_policy)
    rules = str(tmp_path / "reads_email.yaml")
    db_url = f"sqlite:///{tmp_path / 'cli.db'}"
    env = cli_env(simulator, db_url, FLIP_API_KEY=CANARY_KEY)
    simulator.set_faults(**FAULTS)
    live = ["run", "--rules", rules, "--now", NOW_ARG, "--live", "--yes"]

    results = [
        run_cli([*live, "--format", "json"], env=env),
        run_cli([*live, "--format", "table", "--all"], env=env),
        run_cli(["run", "--rules", rules, "--now", NOW_ARG, "--format", "csv"], env=env),
        run_cli([*live], env={**env, "FLIP_API_KEY": WRONG_CANARY_KEY}),
    ]

    assert results[-1].code == 3
    assert simulator.request_counts().get("PATCH", 0) > 0
    for result in results:
        assert leaks(result.stdout) == [], result.stdout[:500]
        assert leaks(result.stderr) == [], result.stderr[:500]
    with Store.open(db_url) as store:
        assert len(store.list_runs()) == 4
    assert database_leaks(db_url) == []
