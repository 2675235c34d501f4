"""The identity of a stored decision: what must differ for a run to record a new row.

A run records a decision only when it differs from the enrollment's latest stored one in
anything the decision says (statuses, rule, reason, groups, action, warnings, error), the
facts fingerprint, or the policy version; otherwise the enrollment counts as ``unchanged``
and the latest row keeps answering for it ("what run N decided" is the latest row at or
before run N). The enrollment's ``updated_at`` is left out on purpose: an edit to something
the policy does not read changes nothing that was decided.

The digest is 64 bits of blake2b over ``marshal`` (format 0) of those fields, as a signed integer (a
``BIGINT`` column); a collision between two different decisions of one enrollment has odds
of about 1 in 10^19.
"""

from __future__ import annotations

import hashlib
import marshal
from collections.abc import Sequence
from typing import Any

from engine.policy.decision import Decision

__all__ = ["decision_digest", "digest_of_fields"]


def digest_of_fields(
    *,
    current_status: str | None,
    status: str | None,
    reason: str | None,
    rule_id: str | None,
    group_ids: Sequence[str],
    current_group_ids: Sequence[str],
    action: str,
    warnings: Sequence[str],
    error: str | None,
    facts_fingerprint: str | None,
    policy_version_id: int | None,
) -> int:
    """The digest from plain values (a stored row's columns, or a new decision's fields)."""
    values: tuple[Any, ...] = (
        current_status, status, reason, rule_id, tuple(group_ids), tuple(current_group_ids),
        action, tuple(warnings), error, facts_fingerprint, policy_version_id,
    )  # fmt: skip
    try:
        data = marshal.dumps(values, 0)  # format 0: no references, so equal values give equal bytes
    except ValueError:  # a caller's own objects in a list: fall back to repr
        data = repr(values).encode("utf-8", "backslashreplace")
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "big", signed=True)


def decision_digest(decision: Decision, policy_version_id: int | None) -> int:
    return digest_of_fields(
        current_status=decision.current_status,
        status=decision.status,
        reason=decision.reason,
        rule_id=decision.rule_id,
        group_ids=decision.group_ids,
        current_group_ids=decision.current_group_ids,
        action=str(decision.action.value),
        warnings=decision.warnings,
        error=decision.error,
        facts_fingerprint=decision.facts_fingerprint,
        policy_version_id=policy_version_id,
    )
