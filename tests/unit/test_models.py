"""API models: tolerant of what the vendor sends, strict about what we send."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from engine.flip.models import (
    ApiErrorBody,
    Device,
    Enrollment,
    EnrollmentList,
    EnrollmentPatch,
    EnrollmentStatus,
    Group,
    GroupCreate,
    ProgramSpecificAttribute,
    Site,
)

DOC_EXAMPLE = {
    "id": "497f6eca-6276-4993-bfeb-53cbbbba6f08",
    "status": "SUBMITTED",
    "status_reason": "string",
    "created_at": "2019-08-24T14:15:22Z",
    "devices": [
        {
            "id": "xyz-123",
            "type": "BATTERY",
            "attributes": {"battery_capacity_wh": 15000},
            "configuration": {"reserve_percentage": 20},
        }
    ],
    "program_specific_attributes": [{"name": "has_solar", "type": "boolean", "value": "true"}],
    "site": {"id": "abc-789", "state_code": "CA", "groups": [{"id": "my-group", "name": "My Group"}]},
}


def test_the_documented_enrollment_parses() -> None:
    enrollment = Enrollment.model_validate(DOC_EXAMPLE)
    assert enrollment.devices is not None
    assert enrollment.devices[0].attributes == {"battery_capacity_wh": 15000}
    assert enrollment.site is not None
    assert enrollment.site.groups == [Group(id="my-group", name="My Group")]
    assert enrollment.program_specific_attributes == [
        ProgramSpecificAttribute(name="has_solar", type="boolean", value="true")
    ]


def test_loose_vendor_data_is_accepted_and_unknown_keys_are_kept() -> None:
    enrollment = Enrollment.model_validate(
        {"status": "SOMETHING_NEW", "site": None, "devices": [{"type": "HEAT_PUMP", "extra": 1}], "new": [1]}
    )
    assert enrollment.status == "SOMETHING_NEW"
    assert enrollment.site is None
    assert enrollment.devices == [Device(type="HEAT_PUMP", extra=1)]
    assert enrollment.model_extra == {"new": [1]}
    assert Enrollment.model_validate({}).id is None
    assert EnrollmentList.model_validate({}).enrollments == []
    assert Site.model_validate({"zip_code": None}).zip_code is None


@given(st.dictionaries(st.sampled_from(["id", "status", "x", "updated_at"]), st.none() | st.text(max_size=5)))
def test_any_partial_enrollment_of_text_and_nulls_parses(data: dict[str, str | None]) -> None:
    assert Enrollment.model_validate(data).model_dump(exclude_unset=True).keys() == data.keys()


def test_patch_body_has_only_what_is_set() -> None:
    patch = EnrollmentPatch(status=EnrollmentStatus.ACTIVE, status_reason="ok")
    assert patch.body() == {"status": "ACTIVE", "status_reason": "ok"}
    assert EnrollmentPatch(group_ids=[]).body() == {"group_ids": []}


@pytest.mark.parametrize(
    "body",
    [
        {"status": "APPROVED"},
        {"group_ids": ["has space"]},
        {"group_ids": [""]},
        {"group_ids": ["a/b"]},
        {"unknown": 1},
    ],
)
def test_what_we_send_is_strict(body: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        EnrollmentPatch.model_validate(body)


def test_group_create_is_strict() -> None:
    assert GroupCreate(id="LZ_HOUSTON-2", name="Houston").id == "LZ_HOUSTON-2"
    with pytest.raises(ValidationError):
        GroupCreate(id="bad id", name="x")


def test_error_body_parses_the_documented_shape_and_tolerates_junk() -> None:
    body = ApiErrorBody.model_validate(
        {
            "code": "validation_error",
            "message": "bad",
            "status_code": 422,
            "detail": [{"loc": ["body", "status"], "msg": "bad status", "type": "enum"}],
            "errors": [{"message": "bad", "path": "status"}],
        }
    )
    assert body.detail is not None
    assert body.detail[0].loc == ["body", "status"]
    assert body.errors is not None
    assert body.errors[0].path == "status"
    assert ApiErrorBody.model_validate({"weird": True}).code is None
