"""Routing and the endpoints: validation of request bodies and the answers of each path."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any, cast
from urllib.parse import unquote

from engine.flip.models import GROUP_ID_PATTERN, EnrollmentStatus
from engine.sandbox.replies import Issue, Reply, dumps, error_reply, json_reply, not_found, unprocessable
from engine.sandbox.state import ENROLLMENT_PATH, EnrollmentStore

_GROUP_ID = re.compile(GROUP_ID_PATTERN)
_STATUSES = frozenset(s.value for s in EnrollmentStatus)


# --- validation -----------------------------------------------------------------------------


def _unknown_keys(body: dict[str, Any], allowed: frozenset[str]) -> list[Issue]:
    return [
        Issue(("body", key), f"Extra inputs are not permitted: {key!r}", "extra_forbidden")
        for key in body
        if key not in allowed
    ]


def _group_id_issues(value: Any, loc: tuple[str | int, ...]) -> list[Issue]:
    if not isinstance(value, str):
        return [Issue(loc, "Input should be a valid string", "string_type")]
    if not _GROUP_ID.match(value):
        msg = f"Group id {value!r} should match pattern '{GROUP_ID_PATTERN}'"
        return [Issue(loc, msg, "string_pattern_mismatch")]
    return []


def _group_ids_issues(value: Any, known: Mapping[str, str], program_id: str) -> list[Issue]:
    if value is None:
        return []
    if not isinstance(value, list):
        return [Issue(("body", "group_ids"), "Input should be a valid list", "list_type")]
    issues = []
    for index, group_id in enumerate(value):
        loc: tuple[str | int, ...] = ("body", "group_ids", index)
        found = _group_id_issues(group_id, loc)
        if not found and group_id not in known:
            msg = f"Group {group_id!r} does not exist in program {program_id!r}"
            found = [Issue(loc, msg, "group_not_found")]
        issues.extend(found)
    return issues


def _enrollment_patch_issues(body: dict[str, Any], known: Mapping[str, str], program_id: str) -> list[Issue]:
    issues = _unknown_keys(body, frozenset({"status", "status_reason", "group_ids"}))
    status = body.get("status")
    if status is not None and status not in _STATUSES:
        msg = f"Input should be one of {', '.join(sorted(_STATUSES))}"
        issues.append(Issue(("body", "status"), msg, "enum"))
    reason = body.get("status_reason")
    if reason is not None and not isinstance(reason, str):
        issues.append(Issue(("body", "status_reason"), "Input should be a valid string", "string_type"))
    issues.extend(_group_ids_issues(body.get("group_ids"), known, program_id))
    return issues


def _issues_code(issues: list[Issue]) -> str:
    if all(i.type == "group_not_found" for i in issues):
        return "group_not_found"
    return "validation_error"


def _parse_object(raw: bytes) -> tuple[dict[str, Any] | None, Reply | None]:
    """The request body as a JSON object, or the 422 to answer instead."""
    try:
        body = json.loads(raw or b"null")
    except ValueError:
        return None, unprocessable([Issue(("body",), "Body is not valid JSON", "json_invalid")])
    if not isinstance(body, dict):
        issue = Issue(("body",), "Body should be a JSON object", "dict_type")
        return None, unprocessable([issue])
    return body, None


_ROUTES: tuple[tuple[re.Pattern[str], frozenset[str], str], ...] = (
    (re.compile(r"^/v1/enrollments$"), frozenset({"GET"}), "_list_enrollments"),
    (ENROLLMENT_PATH, frozenset({"GET", "PATCH"}), "_one_enrollment"),
    (re.compile(r"^/v1/programs/([^/]+)/groups$"), frozenset({"GET", "POST"}), "_program_groups"),
    (re.compile(r"^/v1/programs/([^/]+)/groups/([^/]+)$"), frozenset({"PATCH"}), "_one_group"),
    (re.compile(r"^/_sim/state$"), frozenset({"GET"}), "_state_route"),
)


@dataclass(frozen=True, slots=True)
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    body: bytes
    args: tuple[str, ...] = ()


class Router:
    """Answers an authorized request from the data: the endpoints of ``flip-utility-api.md``."""

    def __init__(
        self, store: EnrollmentStore, page_size: int | None, state: Callable[[], dict[str, Any]]
    ) -> None:
        self._store = store
        self._page_size = page_size
        self._state = state

    def route(self, request: Request) -> Reply:
        for pattern, methods, name in _ROUTES:
            match = pattern.match(request.path)
            if match is None:
                continue
            if request.method not in methods:
                reply = error_reply(405, "method_not_allowed", f"{request.method} is not allowed here")
                reply.headers.append(("Allow", ", ".join(sorted(methods))))
                return reply
            args = tuple(unquote(g) for g in match.groups())
            handler = cast(Callable[[Request], Reply], getattr(self, name))
            return handler(replace(request, args=args))
        return not_found("Path")

    # endpoints

    def _list_enrollments(self, request: Request) -> Reply:
        program_id = (request.query.get("program_id") or [""])[0]
        if not program_id:
            issue = Issue(("query", "program_id"), "Field required", "missing")
            return unprocessable([issue])
        if not self._store.has_program(program_id):
            return error_reply(404, "program_not_found", f"Program {program_id!r} not found")
        return self._list_page(program_id, (request.query.get("cursor") or ["0"])[0])

    def _list_page(self, program_id: str, cursor: str) -> Reply:
        page_size = self._page_size
        start = int(cursor) if cursor.isdigit() else 0
        stop = None if page_size is None else start + page_size
        docs = self._store.docs(program_id, start, stop)
        tail = b"]}"
        if stop is not None and stop < self._store.count(program_id):
            tail = b'],"next_cursor":' + dumps(str(stop)) + b"}"
        parts = [b'{"enrollments":[']
        for index, doc in enumerate(docs):
            parts.append(b"," + doc if index else doc)
        parts.append(tail)
        return Reply(200, parts)

    def _one_enrollment(self, request: Request) -> Reply:
        enrollment_id = request.args[0]
        doc = self._store.doc(enrollment_id)
        if doc is None:
            return not_found(f"Enrollment {enrollment_id!r}")
        if request.method == "GET":
            return Reply(200, [doc])
        body, problem = _parse_object(request.body)
        if body is None:
            return cast(Reply, problem)
        program_id = cast(str, self._store.program_of(enrollment_id))
        issues = _enrollment_patch_issues(body, self._store.group_names(program_id), program_id)
        if issues:
            return unprocessable(issues, _issues_code(issues))
        return json_reply(200, self._store.apply_patch(enrollment_id, body))

    def _program_groups(self, request: Request) -> Reply:
        program_id = request.args[0]
        if not self._store.has_program(program_id):
            return error_reply(404, "program_not_found", f"Program {program_id!r} not found")
        if request.method == "GET":
            return json_reply(200, self._store.groups(program_id))
        body, problem = _parse_object(request.body)
        if body is None:
            return cast(Reply, problem)
        issues = _new_group_issues(body)
        if issues:
            return unprocessable(issues)
        if not self._store.add_group(program_id, body["id"], body["name"]):
            return _group_exists(body["id"])
        return json_reply(201, {"id": body["id"], "name": body["name"]})

    def _one_group(self, request: Request) -> Reply:
        program_id, group_id = request.args
        if not self._store.has_program(program_id):
            return error_reply(404, "program_not_found", f"Program {program_id!r} not found")
        names = self._store.group_names(program_id)
        if group_id not in names:
            return not_found(f"Group {group_id!r}")
        body, problem = _parse_object(request.body)
        if body is None:
            return cast(Reply, problem)
        issues = _group_change_issues(body)
        if issues:
            return unprocessable(issues)
        new_id = body.get("id") or group_id
        name = body.get("name") or names[group_id]
        if new_id != group_id and new_id in names:
            return _group_exists(new_id)
        self._store.change_group(program_id, group_id, new_id, name)
        return json_reply(200, {"id": new_id, "name": name})

    def _state_route(self, request: Request) -> Reply:
        return json_reply(200, self._state())


def _group_exists(group_id: str) -> Reply:
    issue = Issue(("body", "id"), f"Group {group_id!r} already exists", "group_already_exists")
    return unprocessable([issue], "group_already_exists")


def _new_group_issues(body: dict[str, Any]) -> list[Issue]:
    issues = _unknown_keys(body, frozenset({"id", "name"}))
    if "id" not in body:
        issues.append(Issue(("body", "id"), "Field required", "missing"))
    else:
        issues.extend(_group_id_issues(body["id"], ("body", "id")))
    if not isinstance(body.get("name"), str) or not body["name"]:
        issues.append(Issue(("body", "name"), "A non-empty string is required", "string_type"))
    return issues


def _group_change_issues(body: dict[str, Any]) -> list[Issue]:
    issues = _unknown_keys(body, frozenset({"id", "name"}))
    if body.get("id") is not None:
        issues.extend(_group_id_issues(body["id"], ("body", "id")))
    name = body.get("name")
    if name is not None and (not isinstance(name, str) or not name):
        issues.append(Issue(("body", "name"), "A non-empty string is required", "string_type"))
    return issues
