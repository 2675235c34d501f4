"""The run vocabulary: how a run is made, how it ended, where each change and plan stands.

Defined once here, in the application layer; the run service, the applier, the store (its
CHECK constraints are made from these), the renderers, logs and metrics all use the members,
never the bare strings, so a misspelt state is a type error. Each is a ``StrEnum``: a member
is its value wherever a string is expected (a database column, a JSON key, a log field, a
metric label), so what is stored and printed is unchanged.

The sets below are the outbox's rules: which changes may still need sending, which states a
change can still leave, and what an outcome may record.
"""

from __future__ import annotations

from enum import StrEnum

__all__ = [
    "AMBIGUOUS_STATES",
    "APPLIED_STATES",
    "FAILED_STATES",
    "FINAL_STATES",
    "MOVABLE_STATES",
    "OPEN_STATES",
    "OUTCOME_STATES",
    "ChangeState",
    "NotStarted",
    "PlanState",
    "RunMode",
    "RunOutcome",
    "Stage",
]


class RunMode(StrEnum):
    """Whether a run only reports (``dry_run``) or sends changes to the API (``live``)."""

    DRY_RUN = "dry_run"
    LIVE = "live"
    PLAN = "plan"  # a dry run whose changes are saved as a plan (``autoapprove plan``)
    APPLY = "apply"  # sends a saved plan's changes exactly (``autoapprove apply``)
    APPROVE = "approve"  # sends changes a person approved (``autoapprove review approve``)


class RunOutcome(StrEnum):
    """How a run ended; ``running`` until it does."""

    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    ABORTED = "aborted"  # a safety limit refused to apply anything
    INTERRUPTED = "interrupted"  # the process died or was stopped; found by the next run


class NotStarted(StrEnum):
    """How a run ended that never got a run row (summaries, logs and metrics only)."""

    LOCKED = "locked"  # another run held the program's lock
    ERROR = "error"  # it failed before the service recorded it


class ChangeState(StrEnum):
    """Where a decision's change stands in the outbox."""

    NONE = "none"  # nothing to send (skip, unchanged, error)
    PLANNED = "planned"
    IN_FLIGHT = "in_flight"  # the PATCH may have reached the API; the answer is not known
    APPLIED = "applied"
    RECOVERED = "recovered"  # found already applied when an earlier attempt was re-checked
    FAILED_RETRYABLE = "failed_retryable"
    FAILED_PERMANENT = "failed_permanent"
    SUPERSEDED = "superseded"  # a newer decision or fresh data replaced it
    HELD = "held"  # kept back on purpose (a safety limit, a review)
    DEFERRED = "deferred"  # left for a later run (time budget, rate limit)
    AWAITING_APPROVAL = "awaiting_approval"  # waits in the review queue; nothing is sent
    REFUSED = "refused"  # a person refused it in the review queue
    STALE = "stale"  # the enrollment drifted since it was planned or approved; not sent


class PlanState(StrEnum):
    """Where a saved plan stands: ``applying`` from its first apply until every change settled."""

    SAVED = "saved"
    APPLYING = "applying"  # an apply run claimed it (a killed one is resumed by the next apply)
    APPLIED = "applied"


class Stage(StrEnum):
    """The stages a run reports progress for."""

    EVALUATING = "evaluating"  # the list streams in; each enrollment is evaluated as it arrives
    STORING = "storing"
    APPLYING = "applying"


# Changes that may still need sending; ``held`` waits for a person and is not among them.
OPEN_STATES = frozenset(
    {ChangeState.PLANNED, ChangeState.IN_FLIGHT, ChangeState.FAILED_RETRYABLE, ChangeState.DEFERRED}
)
# States a change can still leave; the others are final.
MOVABLE_STATES = frozenset({*OPEN_STATES, ChangeState.HELD, ChangeState.AWAITING_APPROVAL})
FINAL_STATES = frozenset(
    {
        ChangeState.APPLIED,
        ChangeState.RECOVERED,
        ChangeState.FAILED_PERMANENT,
        ChangeState.SUPERSEDED,
        ChangeState.REFUSED,
        ChangeState.STALE,
    }
)
# What an outcome may record: anything but planned, in_flight and none (and refused, which
# only a person's refusal sets).
OUTCOME_STATES = frozenset(
    {
        *(FINAL_STATES - {ChangeState.REFUSED}),
        ChangeState.FAILED_RETRYABLE,
        ChangeState.DEFERRED,
        ChangeState.HELD,
        ChangeState.AWAITING_APPROVAL,
    }
)
# The change took effect (sent by this tool, or found already applied).
APPLIED_STATES = frozenset({ChangeState.APPLIED, ChangeState.RECOVERED})
# A change that may have taken effect although its answer was lost: re-check before re-planning.
AMBIGUOUS_STATES = frozenset({ChangeState.IN_FLIGHT, ChangeState.FAILED_RETRYABLE})
# What a run's exit code counts as failed: not applied, and left for a later run or a person.
FAILED_STATES = (ChangeState.FAILED_RETRYABLE, ChangeState.FAILED_PERMANENT, ChangeState.DEFERRED)
