"""How a live run sends its changes (``engine.runs.sending``), through fakes of the ports:
the groups it creates, what the re-read trusts, how many changes are in flight at once, when
outcomes are recorded, the lease while a request is slow, and the attempts a failure took.

Some tests hold a worker in a PATCH (real time, well under a second) so that the sending
loop runs while a request is in progress, as it does against the real API."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest

from engine.errors import ApiAuthError, ApiError, ApiRetryableError
from engine.runs.sending import _PatchPool
from engine.runs.states import ChangeState, RunOutcome

from .fakes import Fakes
from .test_run_service import APPROVE, approvals, policy

IN_FLIGHT = ChangeState.IN_FLIGHT
PATIENCE_S = 3.0  # the longest a held PATCH waits for what the test expects to happen meanwhile


def until(condition: Callable[[], bool]) -> bool:
    """Whether ``condition`` comes true within PATIENCE_S (polled)."""
    deadline = time.monotonic() + PATIENCE_S
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.005)
    return True


def in_state(fakes: Fakes, state: ChangeState) -> int:
    return sum(1 for change in list(fakes.store.changes.values()) if change.change_state == state)


# --- groups -----------------------------------------------------------------------------------


def test_groups_are_created_in_the_runs_program_named_by_their_id() -> None:
    fakes = Fakes.of(approvals(2))

    report = fakes.service(policy(), live=True).run()

    assert fakes.api.groups == {"prog-unit": ["PILOT"]}
    assert fakes.api.group_names == {("prog-unit", "PILOT"): "PILOT"}
    assert report.created_groups == ["PILOT"]


def test_a_group_the_program_has_is_neither_missing_nor_created() -> None:
    fakes = Fakes.of(approvals(2))
    fakes.api.groups["prog-unit"] = ["PILOT"]

    dry = fakes.service(policy()).run()
    live = fakes.service(policy(), live=True).run()

    assert (dry.missing_groups, live.missing_groups, live.created_groups) == ([], [], [])
    assert fakes.world.keys("list_groups") == ["prog-unit", "prog-unit"]
    assert fakes.world.count("ensure_group") == 0
    assert fakes.api.patches == [("enr-1", APPROVE), ("enr-2", APPROVE)]


# --- the re-read ------------------------------------------------------------------------------


def test_an_enrollment_the_api_reports_unchanged_is_sent_as_planned() -> None:
    """The re-read trusts ``updated_at``: the same version of the enrollment is not decided
    again (here its facts differ without a new ``updated_at``, which the API never does)."""
    fakes = Fakes.of(approvals(1))

    def same_version(call: str, key: str) -> None:
        if call == "get":
            fakes.api.enrollments[key]["site"]["state_code"] = "OK"

    fakes.api.hooks.append(same_version)

    fakes.service(policy(), live=True).run()

    assert fakes.api.patches == [("enr-1", APPROVE)]
    assert fakes.store.states() == {"enr-1": ChangeState.APPLIED}


# --- changes in flight ------------------------------------------------------------------------


def test_concurrency_one_sends_one_change_at_a_time() -> None:
    fakes = Fakes.of(approvals(2))
    second_started = threading.Event()
    overlapped: list[bool] = []

    def hold_the_first(call: str, key: str) -> None:
        if (call, key) in (("get", "enr-2"), ("patch", "enr-2")):
            second_started.set()
        if (call, key) == ("patch", "enr-1"):
            overlapped.append(second_started.wait(0.3))  # another worker would start enr-2 meanwhile

    fakes.api.hooks.append(hold_the_first)

    fakes.service(policy(), live=True, concurrency=1).run()

    assert overlapped == [False]
    assert fakes.world.calls.index(("patch", "enr-1")) < fakes.world.calls.index(("get", "enr-2"))


def test_at_most_four_changes_per_worker_are_in_flight_and_every_one_is_sent() -> None:
    """A bounded look-ahead: a change is marked in flight shortly before its PATCH, not the
    whole run at once (and memory stays flat however many changes there are)."""
    fakes = Fakes.of(approvals(14))
    in_flight: list[int] = []  # at each PATCH: the changes marked in flight and not sent yet

    def slow_patch(call: str, _key: str) -> None:
        if call == "patch":
            sent = {enrollment_id for enrollment_id, _body in fakes.api.patches}
            changes = list(fakes.store.changes.values())
            marked = [c.enrollment_id for c in changes if c.change_state == IN_FLIGHT]
            in_flight.append(len(set(marked) - sent))
            time.sleep(0.01)  # the sending loop refills the look-ahead while this one is out

    fakes.api.hooks.append(slow_patch)

    report = fakes.service(policy(), live=True, concurrency=1).run()

    assert len(in_flight) == 14
    assert max(in_flight) <= 4
    assert set(fakes.store.states().values()) == {ChangeState.APPLIED}
    assert (report.outcome, dict(report.change_states)) == (RunOutcome.COMPLETED, {ChangeState.APPLIED: 14})


def test_no_change_is_marked_in_flight_after_a_stop_request() -> None:
    fakes = Fakes.of(approvals(8))
    stop = threading.Event()
    calls_at_stop: list[int] = []

    def stop_after_first(call: str, key: str) -> None:
        if (call, key) == ("patch", "enr-1"):
            stop.set()
            calls_at_stop.append(len(fakes.world.calls))

    fakes.api.hooks.append(stop_after_first)

    report = fakes.service(policy(), live=True, concurrency=1, stop=stop).run()

    (at_stop,) = calls_at_stop
    assert ("mark_in_flight", "prog-unit") not in fakes.world.calls[at_stop:]
    assert report.outcome == RunOutcome.INTERRUPTED
    assert [fakes.store.change_of(f"enr-{i}").attempts for i in range(5, 9)] == [0, 0, 0, 0]
    assert in_state(fakes, ChangeState.PLANNED) == 7


# --- recording outcomes -----------------------------------------------------------------------


def test_outcomes_are_recorded_as_the_run_goes_not_only_at_its_end() -> None:
    total = _PatchPool.FLUSH_EVERY + 8
    fakes = Fakes.of(approvals(total))
    applied_before_last: list[int] = []

    def last_patch(call: str, key: str) -> None:
        if (call, key) == ("patch", f"enr-{total}"):
            applied_before_last.append(in_state(fakes, ChangeState.APPLIED))

    fakes.api.hooks.append(last_patch)

    fakes.service(policy(), live=True, concurrency=1).run()

    assert applied_before_last[0] >= _PatchPool.FLUSH_EVERY
    assert in_state(fakes, ChangeState.APPLIED) == total


def test_a_slow_request_does_not_hold_back_the_outcomes_before_it() -> None:
    fakes = Fakes.of(approvals(2))
    seen: list[bool] = []

    def slow_second(call: str, key: str) -> None:
        if (call, key) == ("patch", "enr-2"):
            seen.append(until(lambda: fakes.store.change_of("enr-1").change_state == ChangeState.APPLIED))

    fakes.api.hooks.append(slow_second)

    fakes.service(policy(), live=True, concurrency=1).run()

    assert seen == [True]  # enr-1's outcome was recorded while enr-2's PATCH was still out


# --- the lease --------------------------------------------------------------------------------


def test_the_lease_is_renewed_while_a_slow_request_holds_every_worker() -> None:
    fakes = Fakes.of(approvals(1))
    renewed: list[bool] = []

    def slow_patch(call: str, _key: str) -> None:
        if call == "patch":
            before = fakes.world.count("renew")
            fakes.world.clock.advance(120.0)  # well past a renewal, well within the 300 s lease
            renewed.append(until(lambda: fakes.world.count("renew") > before))

    fakes.api.hooks.append(slow_patch)

    report = fakes.service(policy(), live=True, concurrency=1).run()

    assert renewed == [True]
    assert report.outcome == RunOutcome.COMPLETED


# --- failures ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("error", "state"),
    [
        (ApiRetryableError("503 after 4 attempts", status_code=503), ChangeState.FAILED_RETRYABLE),
        (ApiError("refused", status_code=422), ChangeState.FAILED_PERMANENT),
    ],
)
def test_a_failed_patch_records_the_http_attempts_it_took(error: ApiError, state: ChangeState) -> None:
    fakes = Fakes.of(approvals(1))
    fakes.api.attempts = {"enr-1": 4}
    fakes.api.fail("patch", "enr-1", error)

    fakes.service(policy(), live=True).run()

    change = fakes.store.change_of("enr-1")
    assert (change.change_state, change.attempts) == (state, 4)


def test_a_patch_refused_for_the_api_key_records_its_attempts_and_stops() -> None:
    fakes = Fakes.of(approvals(1))
    fakes.api.attempts = {"enr-1": 2}
    fakes.api.fail("patch", "enr-1", ApiAuthError("unauthorized", status_code=401))

    with pytest.raises(ApiAuthError):
        fakes.service(policy(), live=True).run()

    change = fakes.store.change_of("enr-1")
    assert (change.change_state, change.attempts, change.http_status) == (
        ChangeState.FAILED_RETRYABLE,
        2,
        401,
    )
