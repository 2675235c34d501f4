"""The run service's small pure rules: which state a failure leaves, what is said about it,
whether an enrollment already shows a change, and the HTTP attempts recorded."""

from __future__ import annotations

from typing import Any

import pytest

from engine.errors import ApiError, ApiResponseError, ApiRetryableError
from engine.runs.patch import patch_is_applied
from engine.runs.sending import failure_state, safe_message
from engine.runs.states import ChangeState

from .fakes import Fakes
from .test_run_service import approvals, policy


@pytest.mark.parametrize(
    ("error", "state"),
    [
        (ApiRetryableError("rate limited", status_code=429, retry_after=300.0), ChangeState.DEFERRED),
        (ApiRetryableError("rate limited", status_code=429, retry_after=0.0), ChangeState.DEFERRED),
        (ApiRetryableError("503 after retries", status_code=503), ChangeState.FAILED_RETRYABLE),
        (ApiError("no answer"), ChangeState.FAILED_RETRYABLE),
        (ApiResponseError("cut off"), ChangeState.FAILED_RETRYABLE),
        (ApiError("server", status_code=500), ChangeState.FAILED_RETRYABLE),
        (ApiError("bad gateway", status_code=502), ChangeState.FAILED_RETRYABLE),
        (ApiError("too many", status_code=429), ChangeState.FAILED_RETRYABLE),
        (ApiError("refused", status_code=422), ChangeState.FAILED_PERMANENT),
        (ApiError("gone", status_code=404), ChangeState.FAILED_PERMANENT),
        (ApiError("conflict", status_code=409), ChangeState.FAILED_PERMANENT),
        (ApiError("edge", status_code=499), ChangeState.FAILED_PERMANENT),
    ],
)
def test_which_state_a_failure_leaves(error: ApiError, state: ChangeState) -> None:
    assert failure_state(error) is state


def test_what_is_said_about_a_failure() -> None:
    assert safe_message(ApiError("connection refused by 127.0.0.1")) == "connection refused by 127.0.0.1"
    assert (
        safe_message(ApiError("Jane Doe is not allowed", status_code=422, code="invalid"))
        == "HTTP 422 invalid"
    )
    assert safe_message(ApiError("Jane Doe", status_code=500)) == "HTTP 500"


def enrollment(status: str = "ACTIVE", groups: Any = (("A",),)) -> dict[str, Any]:
    return {"status": status, "site": {"groups": [{"id": g[0]} for g in groups]}}


@pytest.mark.parametrize(
    ("body", "current", "applied"),
    [
        ({"status": "ACTIVE"}, enrollment(), True),
        ({"status": "REJECTED"}, enrollment(), False),
        ({"group_ids": ["A"]}, enrollment(status="PENDING"), True),
        ({"group_ids": ["A", "B"]}, enrollment(), False),
        ({"group_ids": []}, enrollment(), False),
        ({"group_ids": []}, {"status": "ACTIVE", "site": {"groups": []}}, True),
        ({"group_ids": []}, {"status": "ACTIVE"}, True),
        ({"group_ids": ["A"]}, {"status": "ACTIVE", "site": "not an object"}, False),
        ({"group_ids": ["A"]}, {"status": "ACTIVE", "site": {"groups": ["A", {"id": "A"}]}}, True),
        # groups are read as the evaluator reads them: one without a text id is not a group
        ({"group_ids": ["A"]}, {"status": "ACTIVE", "site": {"groups": [{"id": "A"}, {"id": None}]}}, True),
        ({"status": "ACTIVE", "group_ids": ["A"]}, enrollment(), True),
        ({"status": "ACTIVE", "group_ids": ["B"]}, enrollment(), False),
        ({}, enrollment(), True),
    ],
)
def test_whether_an_enrollment_already_shows_a_change(
    body: dict[str, Any], current: dict[str, Any], applied: bool
) -> None:
    assert patch_is_applied(body, current) is applied


def test_the_http_attempts_of_each_change_are_recorded() -> None:
    fakes = Fakes.of(approvals(2))
    fakes.api.attempts = {"enr-1": 3, "enr-2": 0}  # three tries; a client that does not count

    fakes.service(policy(), live=True).run()

    assert (fakes.store.change_of("enr-1").attempts, fakes.store.change_of("enr-2").attempts) == (3, 1)
