"""What the engine decides for one enrollment."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any


class Action(StrEnum):
    """What a decision asks of the API."""

    SKIP = "skip"  # status not in the policy's applies_to: never touched
    NONE = "none"  # evaluated; the enrollment already has the decided state
    UPDATE = "update"  # evaluated; status and/or groups must change
    ERROR = "error"  # could not be evaluated; nothing is sent


DEFAULT_RULE_ID = "default"


@dataclass(frozen=True, slots=True)
class RuleTrace:
    """What one evaluated status or group rule saw: whether it matched and the facts it read."""

    rule_id: str
    kind: str  # "rule" | "group"
    matched: bool
    reads: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Decision:
    """The outcome of evaluating one enrollment against one policy.

    ``status`` is the decided status, or ``None`` when no rule and no default decided (the
    status is then left as it is). ``group_ids`` is the full list to send: the API replaces
    the whole list.
    """

    enrollment_id: str | None
    current_status: str | None
    status: str | None
    reason: str | None
    rule_id: str | None
    group_ids: list[str]
    current_group_ids: list[str]
    groups_added: list[str]
    groups_removed: list[str]
    action: Action
    warnings: list[str] = field(default_factory=list)
    trace: list[RuleTrace] = field(default_factory=list)
    error: str | None = None
    updated_at: str | None = None
    facts_fingerprint: str | None = None

    @property
    def status_changes(self) -> bool:
        return self.status is not None and self.status != self.current_status

    @property
    def groups_change(self) -> bool:
        return set(self.group_ids) != set(self.current_group_ids)

    @property
    def transition(self) -> str:
        """A label for summaries: ``SUBMITTED -> ACTIVE``, ``skip``, ``error``, ``unchanged``."""
        if self.action in (Action.SKIP, Action.ERROR):
            return self.action.value
        if self.status_changes:
            return f"{self.current_status} -> {self.status}"
        if self.groups_change:
            return f"{self.current_status} (groups only)"
        return f"{self.current_status} (unchanged)"

    def outcome(self) -> dict[str, Any]:
        """What was decided, the fields diffs compare and test cases expect."""
        return {
            "status": self.status,
            "rule_id": self.rule_id,
            "group_ids": list(self.group_ids),
            "action": self.action.value,
            "reason": self.reason,
        }

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (the ``--format json`` shape and what the store keeps)."""
        data = asdict(self)
        data["action"] = self.action.value
        return data
