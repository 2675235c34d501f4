"""The run service's small pure rules: which state a failure leaves, what is said about it,
which limit stops a run, whether an enrollment already shows a change, and the HTTP
attempts recorded."""

from __future__ import annotations

from typing import Any

import pytest

from engine.errors import ApiError, ApiResponseError, ApiRetryableError
from engine.policy.document import PolicyLimits
from engine.runs.patch import patch_is_applied
from engine.runs.sending import CircuitBreakers, failure_state, safe_message
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


LIVE_RATIO = "the policy would reject 2 of 3 evaluated enrollments (67%), above its max_reject_ratio of 50%"
PLAN_RATIO = "the plan rejects 2 of 3 evaluated enrollments (67%), above the policy's max_reject_ratio of 50%"


@pytest.mark.parametrize(
    ("limits", "flag", "counts", "plan", "reason"),
    [
        ({"max_changes": 2}, None, (2, 0, 10), False, None),
        ({"max_changes": 2}, None, (3, 0, 10), False, "3 changes planned, more than the limit of 2"),
        ({"max_changes": 2}, 5, (3, 0, 10), False, None),  # --max-changes wins over the policy
        ({"max_changes": 9}, 0, (1, 0, 10), False, "1 changes planned, more than the limit of 0"),
        ({}, None, (1000, 0, 1000), False, None),
        ({"max_reject_ratio": 0.5}, None, (3, 2, 3), False, LIVE_RATIO),
        ({"max_reject_ratio": 0.5}, None, (3, 2, 3), True, PLAN_RATIO),
        ({"max_reject_ratio": 0.5}, None, (2, 1, 2), False, None),  # at the limit is not above it
        ({"max_reject_ratio": 0.0}, None, (1, 1, 0), False, None),  # nothing evaluated
        (  # the number of changes is checked first
            {"max_changes": 1, "max_reject_ratio": 0.5}, None, (3, 2, 3), False,
            "3 changes planned, more than the limit of 1",
        ),
    ],
)  # fmt: skip
def test_which_limit_stops_a_run(
    limits: dict[str, Any], flag: int | None, counts: tuple[int, int, int], plan: bool, reason: str | None
) -> None:
    changes, rejects, evaluated = counts
    breakers = CircuitBreakers(PolicyLimits(**limits), flag)

    assert breakers.tripped(changes, rejects, evaluated, plan=plan) == reason


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
