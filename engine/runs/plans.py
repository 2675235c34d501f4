"""Saved plans: the exact changes a person reviewed, as a file with a checksum.

``autoapprove plan`` records a plan in the store and can write it as JSON (``--out``);
``autoapprove apply`` takes a plan id or such a file. The file is a review artifact, not a
second source of truth: applying a file looks the plan up in the store by its id and
refuses a file that differs from it. The checksum (sha256 over the canonical JSON of
everything else) catches a file edited by hand or damaged on the way; the comparison with
the store catches one whose checksum was recomputed after an edit.

No personal data goes into a plan: only ids, statuses, group ids, rule ids, reasons (the
text the policy writes), the facts fingerprint and ``updated_at``; never the API key.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from engine.errors import InputError

__all__ = [
    "PLAN_FORMAT",
    "PLAN_FORMAT_VERSION",
    "PlanChange",
    "PlanDocument",
    "PlanPolicy",
    "PlanTarget",
    "StatusAndGroups",
    "describe_drift",
    "parse_plan_argument",
    "plan_checksum",
    "read_plan_file",
    "utc_text",
]

PLAN_FORMAT = "autoapprove-plan"
PLAN_FORMAT_VERSION = 1
MAX_PLAN_BYTES = 512 * 1024 * 1024  # a plan of 1,000,000 changes fits easily


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PlanPolicy(_Frozen):
    """The policy a plan was made with, in full (so the plan can be replayed and explained)."""

    name: str
    version: str | None
    content_hash: str
    text: str


class StatusAndGroups(_Frozen):
    status: str | None
    group_ids: list[str]


class PlanChange(_Frozen):
    """One planned change: what it was planned from, and the exact PATCH body to send."""

    enrollment_id: str = Field(min_length=1)
    updated_at: str | None
    facts_fingerprint: str | None
    current: StatusAndGroups
    planned: StatusAndGroups
    rule_id: str | None
    reason: str | None
    requires_approval: bool = False
    patch: dict[str, Any]


class PlanDocument(_Frozen):
    """A plan as written to a file (``autoapprove plan --out FILE``)."""

    format: Literal["autoapprove-plan"]
    format_version: Literal[1]
    plan_id: int = Field(ge=1)
    program_id: str
    api_url: str
    policy: PlanPolicy
    evaluation_time: str
    created_at: str
    changes: list[PlanChange]
    checksum: str

    @classmethod
    def build(
        cls,
        *,
        plan_id: int,
        program_id: str,
        api_url: str,
        policy: PlanPolicy,
        evaluation_time: datetime,
        created_at: datetime,
        changes: Iterable[PlanChange],
    ) -> PlanDocument:
        """A plan document with its checksum computed."""
        body: dict[str, Any] = {
            "format": PLAN_FORMAT,
            "format_version": PLAN_FORMAT_VERSION,
            "plan_id": plan_id,
            "program_id": program_id,
            "api_url": api_url,
            "policy": policy.model_dump(),
            "evaluation_time": utc_text(evaluation_time),
            "created_at": utc_text(created_at),
            "changes": [change.model_dump() for change in changes],
        }
        return cls.model_validate({**body, "checksum": plan_checksum(body)})

    def to_json(self) -> str:
        """The file's text: keys in a fixed order, indented for people reading a diff."""
        return json.dumps(self.model_dump(), indent=2, ensure_ascii=False) + "\n"


def utc_text(moment: datetime) -> str:
    """``2026-11-25T00:00:00Z``: how a plan writes times."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def plan_checksum(document: Mapping[str, Any]) -> str:
    """``sha256:<hex>`` of the canonical JSON of a plan document without its checksum."""
    content = {key: value for key, value in document.items() if key != "checksum"}
    canonical = json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return "sha256:" + hashlib.sha256(canonical.encode("utf-8")).hexdigest()


# --- reading a plan file ----------------------------------------------------------------


class PlanTarget(_Frozen):
    """What ``apply PLAN`` names: a plan id, or a file (read and checked)."""

    plan_id: int
    document: PlanDocument | None = None
    source: str | None = None


def parse_plan_argument(text: str) -> PlanTarget:
    """``12`` is plan 12; anything else is a plan file, read and checked here."""
    stripped = text.strip()
    if stripped.isdigit():
        plan_id = int(stripped)
        if plan_id < 1:
            raise InputError(f"{text!r} is not a plan id (plan ids start at 1)")
        return PlanTarget(plan_id=plan_id)
    path = Path(text)
    if not path.exists():
        raise InputError(f"{text}: neither a plan id nor an existing plan file")
    document = read_plan_file(path)
    return PlanTarget(plan_id=document.plan_id, document=document, source=str(path))


def read_plan_file(path: Path) -> PlanDocument:
    """A plan file, checked: JSON, a plan, every key valid, and its checksum right."""
    data = _read_json(path)
    if not isinstance(data, dict) or data.get("format") != PLAN_FORMAT:
        raise InputError(f'{path}: not an autoapprove plan file (no "format": "{PLAN_FORMAT}")')
    if data.get("format_version") != PLAN_FORMAT_VERSION:
        raise InputError(
            f"{path}: plan format version {data.get('format_version')!r} is not one this version "
            f"reads ({PLAN_FORMAT_VERSION})"
        )
    if not isinstance(data.get("checksum"), str):
        raise InputError(f"{path}: the plan has no checksum")
    if plan_checksum(data) != data["checksum"]:
        raise InputError(f"{path}: the plan was edited after it was saved (its checksum does not match)")
    try:
        return PlanDocument.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "plan"
        raise InputError(f"{path}: not a valid plan: {where}: {first['msg']}") from exc


def _read_json(path: Path) -> Any:
    try:
        with path.open("rb") as handle:
            raw = handle.read(MAX_PLAN_BYTES + 1)
    except OSError as exc:
        raise InputError(f"{path}: cannot read the file: {exc.strerror or exc}") from exc
    if len(raw) > MAX_PLAN_BYTES:
        raise InputError(f"{path}: larger than {MAX_PLAN_BYTES} bytes: not a plan file")
    try:
        return json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise InputError(f"{path}: not a plan file (not UTF-8 text)") from exc
    except json.JSONDecodeError as exc:
        raise InputError(f"{path}:{exc.lineno}:{exc.colno}: not a plan file (not JSON: {exc.msg})") from exc
    except RecursionError as exc:
        raise InputError(f"{path}: not a plan file (nested too deep)") from exc


# --- what changed since planning ---------------------------------------------------------


def describe_drift(
    *,
    planned_status: str | None,
    planned_groups: Sequence[str],
    fresh_status: str | None,
    fresh_groups: Sequence[str],
    planned_reads: Mapping[str, Any],
    fresh_reads: Mapping[str, Any],
) -> str:
    """What changed on an enrollment since a change was planned, in our own words.

    Statuses and group ids are the API's enumerations and our ids; facts are named by path
    only, never by value (a policy may read a fact that is personal data).
    """
    parts = []
    if fresh_status != planned_status:
        parts.append(f"status {planned_status} -> {fresh_status}")
    added = [g for g in fresh_groups if g not in planned_groups]
    removed = [g for g in planned_groups if g not in fresh_groups]
    if added or removed:
        parts.append("groups " + " ".join([*(f"+{g}" for g in added), *(f"-{g}" for g in removed)]))
    facts = sorted(
        path for path in {*planned_reads, *fresh_reads} if planned_reads.get(path) != fresh_reads.get(path)
    )
    if facts:
        parts.append("facts changed: " + ", ".join(facts))
    return "; ".join(parts) or "updated since planning (no status, group or fact the policy reads changed)"
