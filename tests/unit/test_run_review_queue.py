"""A live run and the review queue, through fakes of the ports: the changes a policy wants a
person to confirm wait (``awaiting_approval``) and are never sent by a run, a waiting change is
not queued twice, one that no longer stands is superseded, and a refused one stays held."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from engine.errors import RunAborted
from engine.policy.document import Policy, load_policy_text
from engine.runs.states import ChangeState, RunOutcome

from .fakes import Fakes
from .test_run_service import APPROVE, REJECT, approvals, enrollment, policy

REFUSED_AT = datetime(2026, 11, 26, 9, 5, tzinfo=UTC)
NOT_AGAIN = "not proposed again until the enrollment's facts or the policy change"


def review_policy(limits: str = "  max_changes: 100\n") -> Policy:
    """The unit policy, rejections waiting for a person."""
    return policy(limits + "review:\n  require_approval: [REJECTED]\n")


def rejections_and_approvals() -> Fakes:
    return Fakes.of([enrollment("enr-r1", state="OK"), *approvals(1), enrollment("enr-r2", state="OK")])


def waiting(fakes: Fakes) -> dict[str, int]:
    """enrollment id -> the id of its change waiting for approval."""
    return {r.enrollment_id: r.decision_id for r in fakes.store.review_queue("prog-unit")}


def test_a_change_that_needs_approval_waits_and_is_never_sent_or_reread() -> None:
    fakes = rejections_and_approvals()

    report = fakes.service(review_policy(), live=True).run()

    assert fakes.api.patches == [("enr-1", APPROVE)]
    assert fakes.world.keys("get") == ["enr-1"]
    assert fakes.store.states() == {
        "enr-r1": ChangeState.AWAITING_APPROVAL,
        "enr-1": ChangeState.APPLIED,
        "enr-r2": ChangeState.AWAITING_APPROVAL,
    }
    assert (report.outcome, report.awaiting_approval, report.failed) == (RunOutcome.COMPLETED, 2, 0)
    assert dict(report.change_states) == {ChangeState.APPLIED: 1, ChangeState.AWAITING_APPROVAL: 2}
    assert fakes.store.runs[report.run_id].counts["changes"] == {
        ChangeState.APPLIED: 1,
        ChangeState.AWAITING_APPROVAL: 2,
    }


def test_a_waiting_change_is_kept_not_queued_twice() -> None:
    fakes = rejections_and_approvals()
    first = fakes.service(review_policy(), live=True).run()
    queued = waiting(fakes)

    again = fakes.service(review_policy(), live=True).run()

    assert waiting(fakes) == queued  # the same changes keep waiting, under their first ids
    assert fakes.store.states(first.run_id)["enr-r1"] == ChangeState.AWAITING_APPROVAL
    for enrollment_id in ("enr-r1", "enr-r2"):
        duplicate = fakes.store.change_of(enrollment_id, again.run_id)
        assert (duplicate.change_state, duplicate.error_message) == (
            ChangeState.SUPERSEDED,
            f"the same change already waits for approval as change {queued[enrollment_id]}",
        )
    assert fakes.api.patches == [("enr-1", APPROVE)]
    assert again.awaiting_approval == 2
    assert dict(again.change_states) == {ChangeState.AWAITING_APPROVAL: 2}


def test_a_waiting_change_that_no_longer_stands_is_superseded_and_queued_anew() -> None:
    fakes = rejections_and_approvals()
    first = fakes.service(review_policy(), live=True).run()
    fakes.api.apply("enr-r1", {"status": "SUBMITTED"})  # someone touched it: a new updated_at

    again = fakes.service(review_policy(), live=True).run()

    old = fakes.store.change_of("enr-r1", first.run_id)
    assert (old.change_state, old.error_message) == (
        ChangeState.SUPERSEDED,
        f"the enrollment or the decision changed since it was queued (run {again.run_id})",
    )
    assert fakes.store.states(first.run_id)["enr-r2"] == ChangeState.AWAITING_APPROVAL  # unchanged: kept
    new = fakes.store.change_of("enr-r1", again.run_id)
    assert waiting(fakes) == {"enr-r2": waiting(fakes)["enr-r2"], "enr-r1": new.decision_id}
    assert again.awaiting_approval == 2
    assert fakes.api.patches == [("enr-1", APPROVE)]


def test_a_waiting_change_the_policy_no_longer_asks_about_is_superseded_and_sent() -> None:
    fakes = rejections_and_approvals()
    first = fakes.service(review_policy(), live=True).run()

    again = fakes.service(policy(), live=True).run()

    assert fakes.store.states(first.run_id)["enr-r1"] == ChangeState.SUPERSEDED
    assert waiting(fakes) == {}
    assert sorted(e for e, _body in fakes.api.patches) == ["enr-1", "enr-r1", "enr-r2"]
    assert again.awaiting_approval == 0
    assert ChangeState.AWAITING_APPROVAL not in again.change_states


@pytest.mark.parametrize(
    ("reviewed_at", "when"), [(REFUSED_AT, "2026-11-26 09:05"), (None, "earlier")]
)  # fmt: skip
def test_a_refused_change_is_held_and_not_proposed_again(reviewed_at: datetime | None, when: str) -> None:
    fakes = rejections_and_approvals()
    first = fakes.service(review_policy(), live=True).run()
    refused = waiting(fakes)["enr-r1"]
    fakes.store.refuse([refused], "carol", reviewed_at)

    again = fakes.service(review_policy(), live=True).run()

    held = fakes.store.change_of("enr-r1", again.run_id)
    assert (held.change_state, held.error_message) == (
        ChangeState.HELD,
        f"refused by carol on {when} (change {refused}); {NOT_AGAIN}",
    )
    assert fakes.store.states(first.run_id)["enr-r1"] == ChangeState.REFUSED
    assert set(waiting(fakes)) == {"enr-r2"}
    assert fakes.api.patches == [("enr-1", APPROVE)]
    assert (again.awaiting_approval, dict(again.change_states)) == (
        1,
        {ChangeState.HELD: 1, ChangeState.AWAITING_APPROVAL: 1},
    )
    assert again.held == []  # not a move out of ACTIVE
    assert again.failed == 0


def test_a_refusal_and_a_move_out_of_active_are_both_counted_held() -> None:
    fakes = Fakes.of([enrollment("enr-r1", state="OK"), enrollment("enr-active", status="ACTIVE", wh=100)])
    fakes.service(review_policy(), live=True).run()
    fakes.store.refuse([waiting(fakes)["enr-r1"]], "carol", REFUSED_AT)

    report = fakes.service(review_policy(), live=True).run()

    assert fakes.store.states(report.run_id) == {"enr-r1": ChangeState.HELD, "enr-active": ChangeState.HELD}
    assert dict(report.change_states) == {ChangeState.HELD: 2}
    assert fakes.api.patches == []


def test_changes_left_for_a_person_do_not_count_against_the_reject_ratio() -> None:
    fakes = rejections_and_approvals()

    report = fakes.service(review_policy("  max_reject_ratio: 0.5\n"), live=True).run()

    assert report.outcome == RunOutcome.COMPLETED
    assert fakes.api.patches == [("enr-1", APPROVE)]


def test_refused_rejections_do_not_count_against_the_reject_ratio() -> None:
    fakes = rejections_and_approvals()
    strict = review_policy("  max_reject_ratio: 0.1\n")
    fakes.service(strict, live=True).run()
    fakes.store.refuse(waiting(fakes).values(), "carol", REFUSED_AT)

    report = fakes.service(strict, live=True).run()

    assert report.outcome == RunOutcome.COMPLETED
    assert fakes.store.states(report.run_id) == {
        "enr-r1": ChangeState.HELD,
        "enr-1": ChangeState.NONE,  # applied by the first run
        "enr-r2": ChangeState.HELD,
    }


def test_the_reject_ratio_still_counts_rejections_that_are_sent() -> None:
    fakes = rejections_and_approvals()

    with pytest.raises(RunAborted):
        fakes.service(policy("  max_reject_ratio: 0.5\n"), live=True).run()

    assert fakes.api.patches == []


def test_another_programs_queue_is_left_alone() -> None:
    fakes = rejections_and_approvals()  # the fake API lists the same enrollments for any program
    other = load_policy_text(review_policy().source_text.replace("prog-unit", "prog-other"))
    fakes.service(other, live=True).run()
    theirs = {r.enrollment_id: r.decision_id for r in fakes.store.review_queue("prog-other")}
    fakes.store.approve([theirs.pop("enr-r1")], "bob", REFUSED_AT)  # ... and left unsent

    report = fakes.service(review_policy(), live=True).run()

    assert {r.enrollment_id: r.decision_id for r in fakes.store.review_queue("prog-other")} == theirs
    (their_approval,) = [c for c in fakes.store.changes.values() if c.reviewed_by == "bob"]
    assert (their_approval.program_id, their_approval.change_state) == ("prog-other", ChangeState.PLANNED)
    assert set(waiting(fakes)) == {"enr-r1", "enr-r2"}
    assert fakes.store.states(report.run_id)["enr-r1"] == ChangeState.AWAITING_APPROVAL
    assert report.awaiting_approval == 2


# --- approvals a killed ``review approve`` left unsent ----------------------------------------


def approved_but_unsent(fakes: Fakes) -> int:
    """A first run queues the rejections; a person approves enr-r1's, and the ``review
    approve`` that was to send it is killed before its PATCH: the change stays planned."""
    fakes.service(review_policy(), live=True).run()
    approved = waiting(fakes)["enr-r1"]
    fakes.store.approve([approved], "bob", REFUSED_AT)
    return approved


def test_an_approved_change_left_unsent_is_sent_by_the_next_run_under_its_approval() -> None:
    fakes = rejections_and_approvals()
    approved = approved_but_unsent(fakes)

    report = fakes.service(review_policy(), live=True).run()

    assert fakes.api.patches[-1] == ("enr-r1", REJECT)
    sent = fakes.store.change_of("enr-r1", report.run_id)
    assert (sent.change_state, sent.reviewed_by, sent.reviewed_at) == (ChangeState.APPLIED, "bob", REFUSED_AT)
    old = fakes.store.changes[approved]
    assert (old.change_state, old.error_message) == (
        ChangeState.SUPERSEDED,
        f"re-planned by run {report.run_id}, which sends it under this approval",
    )
    assert set(waiting(fakes)) == {"enr-r2"}  # the other rejection still waits for a person
    assert dict(report.change_states) == {ChangeState.APPLIED: 1, ChangeState.AWAITING_APPROVAL: 1}


def test_an_approval_whose_change_no_longer_stands_is_withdrawn() -> None:
    fakes = rejections_and_approvals()
    approved = approved_but_unsent(fakes)
    fakes.api.apply("enr-r1", {"status": "SUBMITTED"})  # someone touched it: a new updated_at

    report = fakes.service(review_policy(), live=True).run()

    old = fakes.store.changes[approved]
    assert (old.change_state, old.error_message) == (
        ChangeState.SUPERSEDED,
        f"the enrollment or the decision changed since it was approved (run {report.run_id})",
    )
    assert fakes.store.change_of("enr-r1", report.run_id).change_state == ChangeState.AWAITING_APPROVAL
    assert set(waiting(fakes)) == {"enr-r1", "enr-r2"}
    assert ("enr-r1", REJECT) not in fakes.api.patches
