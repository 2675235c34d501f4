"""The simulator's in-memory state: its clock, the programs' enrollments and groups, and the
counts of every received request.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections import Counter, deque
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any, cast
from urllib.parse import unquote

from engine.sandbox.config import RequestRecord, SimulatorConfig
from engine.sandbox.generator import generate_enrollments, program_groups
from engine.sandbox.replies import dumps

# --- the clock ------------------------------------------------------------------------------


def _iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


class SimClock:
    """Simulated wall time: starts after ``start`` and strictly increases on every tick."""

    def __init__(self, start: datetime) -> None:
        self._start = start
        self._t0 = time.monotonic()
        self._last = start
        self._lock = threading.Lock()

    def tick(self) -> str:
        with self._lock:
            elapsed = timedelta(seconds=int(time.monotonic() - self._t0) + 1)
            self._last = max(self._start + elapsed, self._last + timedelta(seconds=1))
            return _iso(self._last)

    def last(self) -> str:
        with self._lock:
            return _iso(self._last)


# --- the data -------------------------------------------------------------------------------


class EnrollmentStore:
    """Programs, their enrollments (as compact JSON bytes) and groups. Thread-safe."""

    def __init__(self, config: SimulatorConfig, now: datetime) -> None:
        self._lock = threading.RLock()
        self._docs: dict[str, bytes] = {}
        self._program_of: dict[str, str] = {}
        self._ids: dict[str, list[str]] = {}
        self._status: dict[str, str | None] = {}
        self._groups: dict[str, dict[str, str]] = {}
        self.clock = SimClock(now)
        for program_id, count in config.programs.items():
            self._load(program_id, generate_enrollments(program_id, count, config.seed, now))

    def _load(self, program_id: str, records: Iterator[dict[str, Any]]) -> None:
        self._groups[program_id] = {g["id"]: g["name"] for g in program_groups(program_id)}
        ids = self._ids.setdefault(program_id, [])
        for record in records:
            enrollment_id = str(record["id"])
            ids.append(enrollment_id)
            self._program_of[enrollment_id] = program_id
            self._put(enrollment_id, record)

    def _put(self, enrollment_id: str, record: dict[str, Any]) -> None:
        self._docs[enrollment_id] = dumps(record)
        status = record.get("status")
        self._status[enrollment_id] = status if isinstance(status, str) else None

    # reads

    def has_program(self, program_id: str) -> bool:
        return program_id in self._ids

    def program_ids(self) -> list[str]:
        return list(self._ids)

    def program_of(self, enrollment_id: str) -> str | None:
        return self._program_of.get(enrollment_id)

    def doc(self, enrollment_id: str) -> bytes | None:
        with self._lock:
            return self._docs.get(enrollment_id)

    def enrollment(self, enrollment_id: str) -> dict[str, Any] | None:
        doc = self.doc(enrollment_id)
        return None if doc is None else cast(dict[str, Any], json.loads(doc))

    def ids(self, program_id: str) -> list[str]:
        with self._lock:
            return list(self._ids[program_id])

    def docs(self, program_id: str, start: int = 0, stop: int | None = None) -> list[bytes]:
        with self._lock:
            ids = self._ids[program_id][start:stop]
            return [self._docs[i] for i in ids]

    def count(self, program_id: str) -> int:
        return len(self._ids[program_id])

    def groups(self, program_id: str) -> list[dict[str, str]]:
        with self._lock:
            return [{"id": k, "name": v} for k, v in self._groups[program_id].items()]

    def group_names(self, program_id: str) -> dict[str, str]:
        with self._lock:
            return dict(self._groups[program_id])

    def status_counts(self, program_id: str) -> dict[str, int]:
        with self._lock:
            counts = Counter(str(self._status[i]) for i in self._ids[program_id])
        return dict(sorted(counts.items()))

    # writes

    def apply_patch(self, enrollment_id: str, body: dict[str, Any]) -> dict[str, Any]:
        """Apply a validated PATCH body; return the enrollment as it is now."""
        with self._lock:
            record = cast(dict[str, Any], json.loads(self._docs[enrollment_id]))
            now = self.clock.tick()
            status = body.get("status")
            if status is not None:
                record["status"] = status
                if status == "ACTIVE" and not record.get("enrolled_at"):
                    record["enrolled_at"] = now
                if status == "UNENROLLED":
                    record["unenrolled_at"] = now
            if "status_reason" in body:
                record["status_reason"] = body["status_reason"]
            if body.get("group_ids") is not None:
                self._set_groups(record, body["group_ids"], now)
            record["updated_at"] = now
            self._put(enrollment_id, record)
            return record

    def edit(self, enrollment_id: str, fields: dict[str, Any]) -> dict[str, Any]:
        """Replace top-level fields as a person in the dashboard would; bump ``updated_at``."""
        with self._lock:
            record = cast(dict[str, Any], json.loads(self._docs[enrollment_id]))
            now = self.clock.tick()
            group_ids = fields.pop("group_ids", None)
            record.update(fields)
            if group_ids is not None:
                self._set_groups(record, group_ids, now)
            if "updated_at" not in fields:
                record["updated_at"] = now
            self._put(enrollment_id, record)
            return record

    def _set_groups(self, record: dict[str, Any], group_ids: list[str], now: str) -> None:
        names = self._groups[self._program_of[str(record["id"])]]
        unique = list(dict.fromkeys(group_ids))
        site = record.get("site")
        if not isinstance(site, dict):
            site = record["site"] = {}
        site["groups"] = [{"id": g, "name": names.get(g, g)} for g in unique]
        site["updated_at"] = now

    def add_group(self, program_id: str, group_id: str, name: str) -> bool:
        """Create a group; ``False`` when the id is taken."""
        with self._lock:
            groups = self._groups[program_id]
            if group_id in groups:
                return False
            groups[group_id] = name
            return True

    def change_group(self, program_id: str, group_id: str, new_id: str, name: str) -> None:
        """Rename a group and/or change its id, everywhere it is used."""
        with self._lock:
            groups = self._groups[program_id]
            self._groups[program_id] = {
                (new_id if k == group_id else k): (name if k == group_id else v) for k, v in groups.items()
            }
            needle = dumps(group_id)
            for enrollment_id in self._ids[program_id]:
                if needle in self._docs[enrollment_id]:
                    self._rewrite_site_group(enrollment_id, group_id, new_id, name)

    def _rewrite_site_group(self, enrollment_id: str, old: str, new: str, name: str) -> None:
        record = cast(dict[str, Any], json.loads(self._docs[enrollment_id]))
        site = record.get("site")
        groups = site.get("groups") if isinstance(site, dict) else None
        if not isinstance(groups, list):
            return
        for group in groups:
            if isinstance(group, dict) and group.get("id") == old:
                group["id"], group["name"] = new, name
        self._put(enrollment_id, record)


# --- counting -------------------------------------------------------------------------------

ENROLLMENT_PATH = re.compile(r"^/v1/enrollments/([^/]+)$")


class Recorder:
    """Counts every received request, by method and by enrollment. Thread-safe."""

    def __init__(self, log_size: int = 100_000) -> None:
        self._lock = threading.Lock()
        self._by_method: Counter[str] = Counter()
        self._by_enrollment: dict[str, Counter[str]] = {}
        self._log: deque[RequestRecord] = deque(maxlen=log_size)
        self._applied: Counter[str] = Counter()

    def record(self, method: str, path: str, query: str) -> None:
        match = ENROLLMENT_PATH.match(path)
        with self._lock:
            self._by_method[method] += 1
            if match:
                self._by_enrollment.setdefault(unquote(match[1]), Counter())[method] += 1
            self._log.append(RequestRecord(method, path, query, time.monotonic()))

    def record_applied(self, path: str) -> None:
        """A PATCH of an enrollment that the API applied (whatever answer the client got)."""
        match = ENROLLMENT_PATH.match(path)
        if match:
            with self._lock:
                self._applied[unquote(match[1])] += 1

    def applied(self) -> dict[str, int]:
        with self._lock:
            return dict(self._applied)

    def by_method(self) -> dict[str, int]:
        with self._lock:
            return dict(self._by_method)

    def for_enrollment(self, enrollment_id: str) -> dict[str, int]:
        with self._lock:
            return dict(self._by_enrollment.get(enrollment_id, {}))

    def log(self) -> list[RequestRecord]:
        with self._lock:
            return list(self._log)

    def reset(self) -> None:
        with self._lock:
            self._by_method.clear()
            self._by_enrollment.clear()
            self._log.clear()
            self._applied.clear()
