"""Checkpoints: the named steps of long commands, where a caller may act.

The run service, the applier of plans and approvals, and ``db prune`` call the
:data:`Checkpoint` they were given at each :class:`Step`; the default,
:func:`no_checkpoint`, does nothing. The composition root passes one in: the product
passes the default, and the crash tests (``tests/crashing_cli.py``) one that kills the
process at a chosen step, so that a crash can be made to happen exactly there.
"""

from __future__ import annotations

from collections.abc import Callable
from enum import StrEnum

from engine.runs.states import ChangeState

__all__ = ["Checkpoint", "Step", "no_checkpoint"]


class Step(StrEnum):
    """The steps at which a checkpoint is called, a live run's in the order it reaches them."""

    AFTER_PLANNING = "after_planning"  # a run's decisions and planned changes are stored
    AFTER_QUEUEING = "after_queueing"  # a live run's changes are queued, none sent yet
    AFTER_GROUP_CREATE = "after_group_create"  # each group created, before the next one
    IN_FLIGHT = ChangeState.IN_FLIGHT.value  # a change is marked so; its PATCH is next (every change)
    AFTER_PATCH = "after_patch"  # a PATCH was answered; its outcome is not recorded yet
    AFTER_CLAIM = "after_claim"  # ``apply``: the plan is claimed, nothing sent
    AFTER_APPROVAL = "after_approval"  # ``review approve``: the approvals are recorded, nothing sent
    PRUNE_BATCH = "prune_batch"  # ``db prune``: a batch of decision rows is deleted (every batch)
    PRUNE_RUNS = "prune_runs"  # ``db prune``: the empty runs are deleted, the space not reclaimed


Checkpoint = Callable[[Step], None]
"""Called at each step; may be called from several threads at once (``in_flight``,
``after_patch``)."""


def no_checkpoint(step: Step) -> None:
    """The default: every step goes on."""
