"""pydantic models of what the Flip Utility API sends and what we send to it.

Tolerant where the vendor is loose (every field optional, nulls accepted, unknown keys
kept, open ``attributes``/``configuration``, any device type); strict where we send
(the status enum and the group id pattern).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

# The statuses and group ids are the policy core's words; the wire models use them as they are.
from engine.policy.statuses import GROUP_ID_PATTERN, EnrollmentStatus, GroupId

__all__ = [
    "GROUP_ID_PATTERN",
    "ApiErrorBody",
    "ApiErrorItem",
    "ApiErrorLocation",
    "Device",
    "Enrollment",
    "EnrollmentList",
    "EnrollmentPatch",
    "EnrollmentStatus",
    "Group",
    "GroupCreate",
    "GroupId",
    "ProgramSpecificAttribute",
    "Site",
]


class _Lenient(BaseModel):
    """Base for what the vendor sends: unknown keys are kept, everything may be missing."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)


class Device(_Lenient):
    id: str | None = None
    site_id: str | None = None
    type: str | None = None  # BATTERY, EV_CHARGER, ... and types we do not know yet
    manufacturer_name: str | None = None
    product_name: str | None = None
    serial_number: str | None = None
    install_date: str | None = None
    attributes: dict[str, Any] | None = None
    configuration: dict[str, Any] | None = None
    created_at: str | None = None
    updated_at: str | None = None


class ProgramSpecificAttribute(_Lenient):
    name: str | None = None
    type: str | None = None
    value: Any = None  # documented as a string; anything may arrive


class Group(_Lenient):
    id: str | None = None
    name: str | None = None


class Site(_Lenient):
    id: str | None = None
    first_name: str | None = None
    last_name: str | None = None
    company_name: str | None = None
    email: str | None = None
    street_address: str | None = None
    street_address2: str | None = None
    city: str | None = None
    state_code: str | None = None
    zip_code: str | None = None
    service_account_id: str | None = None
    groups: list[Group] | None = None
    created_at: str | None = None
    updated_at: str | None = None


class Enrollment(_Lenient):
    id: str | None = None
    status: str | None = None  # lenient on read: an unknown status must not crash a run
    status_reason: str | None = None
    created_at: str | None = None
    updated_at: str | None = None
    enrolled_at: str | None = None
    unenrolled_at: str | None = None
    devices: list[Device] | None = None
    program_specific_attributes: list[ProgramSpecificAttribute] | None = None
    site: Site | None = None


class EnrollmentList(_Lenient):
    enrollments: list[Enrollment] = Field(default_factory=list)


class EnrollmentPatch(BaseModel):
    """The PATCH body: strict, because we send it. Omitted fields are left unchanged."""

    model_config = ConfigDict(extra="forbid")

    status: EnrollmentStatus | None = None
    status_reason: str | None = None
    group_ids: list[GroupId] | None = None

    def body(self) -> dict[str, Any]:
        """The JSON body to send: only the fields that are set."""
        return self.model_dump(mode="json", exclude_none=True)


class GroupCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: GroupId
    name: str


class ApiErrorLocation(_Lenient):
    loc: list[str | int] | None = None
    msg: str | None = None
    type: str | None = None


class ApiErrorItem(_Lenient):
    message: str | None = None
    path: str | None = None


class ApiErrorBody(_Lenient):
    """The documented error body of a failed request."""

    code: str | None = None
    message: str | None = None
    status_code: int | None = None
    detail: list[ApiErrorLocation] | None = None
    errors: list[ApiErrorItem] | None = None
