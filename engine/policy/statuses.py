"""The words a policy decides in: enrollment statuses and group ids.

The core owns them; the Flip API adapter (``engine.flip.models``) takes them from here for
its wire models, so the policy never depends on the API client.
"""

from __future__ import annotations

import re
from enum import StrEnum
from functools import cache
from typing import Annotated

from pydantic import StringConstraints, TypeAdapter, ValidationError


class EnrollmentStatus(StrEnum):
    """The statuses the API documents for an enrollment."""

    CREATED = "CREATED"
    ACTIVE = "ACTIVE"
    NEEDS_ACTION = "NEEDS_ACTION"
    PENDING = "PENDING"
    REJECTED = "REJECTED"
    UNENROLLED = "UNENROLLED"
    SUBMITTED = "SUBMITTED"
    PAUSED = "PAUSED"


STATUS_VALUES = frozenset(status.value for status in EnrollmentStatus)


def not_a_status(value: object) -> str:
    """The message for a value that is not a Flip status."""
    allowed = ", ".join(status.value for status in EnrollmentStatus)
    return f"{value!r} is not a Flip status (one of {allowed})"


GROUP_ID_PATTERN = r"^[\w-]+$"
GroupId = Annotated[str, StringConstraints(pattern=GROUP_ID_PATTERN, min_length=1)]

# A subset of GROUP_ID_PATTERN that needs no pydantic check: ASCII word characters.
_PLAIN_GROUP_ID = re.compile(r"[A-Za-z0-9_-]+")


@cache
def _group_id_adapter() -> TypeAdapter[str]:
    return TypeAdapter(GroupId)


def group_id_problem(value: object) -> str | None:
    """Why ``value`` is not a group id the API accepts, or ``None`` when it is one.

    Checked with the same pydantic constraint as the wire model's ``group_ids`` (its regex
    engine decides what ``\\w`` means), after a fast path for plain ASCII ids.
    """
    if type(value) is str and _PLAIN_GROUP_ID.fullmatch(value):
        return None
    try:
        _group_id_adapter().validate_python(value)
    except ValidationError as exc:
        return "; ".join(error["msg"] for error in exc.errors())
    return None
