"""The answers the simulator sends: JSON bodies and the API's documented error shape."""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from email.utils import formatdate
from typing import Any

# --- replies --------------------------------------------------------------------------------


@dataclass
class Reply:
    status: int
    parts: list[bytes]
    headers: list[tuple[str, str]] = field(default_factory=list)
    content_type: str = "application/json"
    date: float = field(default_factory=time.time)


@dataclass(frozen=True, slots=True)
class Issue:
    """One validation finding: where (``loc``), what (``msg``) and its kind (``type``)."""

    loc: tuple[str | int, ...]
    msg: str
    type: str


def dumps(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def json_reply(status: int, value: Any) -> Reply:
    return Reply(status, [dumps(value)])


def error_reply(status: int, code: str, message: str, issues: Iterable[Issue] = ()) -> Reply:
    found = list(issues)
    body = {
        "code": code,
        "message": message,
        "status_code": status,
        "detail": [{"loc": list(i.loc), "msg": i.msg, "type": i.type} for i in found],
        "errors": [{"message": i.msg, "path": ".".join(str(p) for p in i.loc)} for i in found],
    }
    return json_reply(status, body)


def unprocessable(issues: list[Issue], code: str = "validation_error") -> Reply:
    return error_reply(422, code, "; ".join(i.msg for i in issues), issues)


def not_found(what: str) -> Reply:
    return error_reply(404, "not_found", f"{what} not found")


def unauthorized() -> Reply:
    reply = error_reply(401, "unauthorized", "Missing or invalid API key")
    reply.headers.append(("WWW-Authenticate", "Bearer"))
    return reply


def rate_limited(retry_after: str | None) -> Reply:
    reply = error_reply(429, "rate_limited", "Too many requests")
    if retry_after is not None and retry_after.startswith("date:"):
        seconds = int(retry_after.removeprefix("date:"))
        reply.date = float(int(reply.date))
        reply.headers.append(("Retry-After", formatdate(reply.date + seconds, usegmt=True)))
    elif retry_after is not None:
        reply.headers.append(("Retry-After", retry_after))
    return reply
