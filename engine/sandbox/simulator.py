"""A local simulator of the Flip Utility API (our "stripe-mock").

A real HTTP/1.1 server (stdlib ``ThreadingHTTPServer``, keep-alive, exact ``Content-Length``)
bound to 127.0.0.1 only, serving the endpoints of ``flip-utility-api.md`` from seeded data
made by :mod:`engine.sandbox.generator`. It runs in a background thread in-process
(:meth:`Simulator.start`) or blocking for the CLI (:func:`serve`).

Behaviour follows the vendor where the vendor documents it; where it is silent we assumed:

* every request needs ``Authorization: Bearer <key>`` (401 otherwise), including the
  simulator's own ``GET /_sim/state`` report;
* an unknown enrollment, program or group answers 404; validation failures answer 422 in
  the documented error shape, with ``code`` ``validation_error``, ``group_not_found`` or
  ``group_already_exists``;
* ``PATCH /v1/enrollments/{id}`` bumps ``updated_at`` on every applied PATCH (also when
  the values did not change), and ``site.updated_at`` when ``group_ids`` was sent; setting
  ``ACTIVE`` fills a missing ``enrolled_at``, setting ``UNENROLLED`` sets ``unenrolled_at``;
  only the fields sent change (``status_reason`` is kept when only ``status`` is sent);
* renaming a group or changing its id rewrites it in every site but does not bump
  ``updated_at`` (the enrollment itself did not change);
* ``POST .../groups`` answers 201;
* timestamps come from a simulator clock that starts one second after ``now`` and strictly
  increases (whole seconds, running ahead of the wall clock under load).

Faults, for testing clients: a :class:`FaultConfig` of seeded random faults that can be
changed at runtime (:meth:`Simulator.set_faults`), and a queue of scripted one-shot faults
(:meth:`Simulator.script`). Every received request is counted, faulted or not. A
"truncate" fault always handles the request first (a cut answer is a complete answer cut
in transit); the other faults answer instead of the API unless scripted with
``after_apply=True``.

Enrollments are kept as compact JSON bytes (the cache *is* the store), so a list of
100,000 enrollments is sent without serializing anything and costs ~1.4 kB each in memory.
"""

from __future__ import annotations

import hmac
import json
import logging
import re
import socket
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime, timedelta
from email.utils import formatdate
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from random import Random
from typing import Any, cast
from urllib.parse import parse_qs, unquote, urlsplit

from engine.errors import InputError
from engine.flip.models import GROUP_ID_PATTERN, EnrollmentStatus
from engine.sandbox.generator import (
    CA_EV_PROGRAM,
    TX_BATTERY_PROGRAM,
    generate_enrollments,
    program_groups,
)

__all__ = [
    "DEFAULT_API_KEY",
    "FAULT_KINDS",
    "FaultConfig",
    "RequestRecord",
    "Simulator",
    "SimulatorConfig",
    "SimulatorInfo",
    "serve",
]

_log = logging.getLogger("engine.sandbox.simulator")

DEFAULT_API_KEY = "fl_sim_local_key"
FAULT_KINDS = frozenset({"429", "500", "503", "timeout", "drop", "truncate", "401", "403", "malformed"})
_RETRY_AFTER_FORMS = frozenset({"seconds", "http-date", "none", "mixed"})
_LOOPBACK = "127.0.0.1"
_MAX_BODY = 1 << 20
_WRITE_BATCH = 1 << 18
_GROUP_ID = re.compile(GROUP_ID_PATTERN)
_STATUSES = frozenset(s.value for s in EnrollmentStatus)
_MALFORMED_BODY = b"<html><body><h1>502 Bad Gateway</h1></body></html>"


# --- configuration --------------------------------------------------------------------------


def _check_share(name: str, value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise InputError(f"fault {name} must be a share between 0 and 1, not {value!r}")


@dataclass(frozen=True)
class FaultConfig:
    """Seeded random faults. Shares are per request and tried in this order; their sum <= 1.

    ``retry_after`` is the form of the 429's Retry-After header: ``seconds``, ``http-date``,
    ``none`` (no header) or ``mixed`` (a random one of those per answer).
    """

    latency_s: float = 0.0  # added to every request
    rate_limit: float = 0.0  # share answered 429
    retry_after: str = "seconds"
    retry_after_s: int = 1
    error_rate: float = 0.0  # share answered 500 or 503
    timeout: float = 0.0  # share that hangs for hang_s, then closes without answering
    hang_s: float = 15.0
    drop: float = 0.0  # share whose connection is closed without an answer
    truncate: float = 0.0  # share whose body is cut after half its Content-Length
    seed: int = 0

    def __post_init__(self) -> None:
        shares = {
            "rate_limit": self.rate_limit,
            "error_rate": self.error_rate,
            "timeout": self.timeout,
            "drop": self.drop,
            "truncate": self.truncate,
        }
        for name, value in shares.items():
            _check_share(name, value)
        if sum(shares.values()) > 1.0:
            raise InputError("fault shares add up to more than 1")
        if self.retry_after not in _RETRY_AFTER_FORMS:
            raise InputError(f"retry_after must be one of {sorted(_RETRY_AFTER_FORMS)}")
        if self.latency_s < 0 or self.hang_s < 0 or self.retry_after_s < 0:
            raise InputError("latency_s, hang_s and retry_after_s must not be negative")


def _default_programs() -> dict[str, int]:
    return {TX_BATTERY_PROGRAM: 200, CA_EV_PROGRAM: 200}


@dataclass(frozen=True)
class SimulatorConfig:
    """What the simulator serves and where. ``port=0`` picks a free port.

    ``now`` is when the generated data was "taken" (default: the current time).
    ``page_size`` (not a vendor feature) splits list answers into pages linked by a
    top-level ``next_cursor``, to exercise cursor-following clients.
    """

    host: str = _LOOPBACK
    port: int = 0
    api_key: str = DEFAULT_API_KEY
    programs: Mapping[str, int] = field(default_factory=_default_programs)
    seed: int = 0
    now: datetime | None = None
    faults: FaultConfig = field(default_factory=FaultConfig)
    page_size: int | None = None

    def __post_init__(self) -> None:
        if self.host != _LOOPBACK:
            raise InputError(f"the simulator listens on {_LOOPBACK} only, not {self.host!r}")
        if not 0 <= self.port <= 65535:
            raise InputError(f"port {self.port} is out of range")
        if not self.api_key:
            raise InputError("the simulator needs a non-empty api_key")
        if any(count < 0 for count in self.programs.values()):
            raise InputError("enrollment counts must not be negative")
        if self.page_size is not None and self.page_size < 1:
            raise InputError("page_size must be at least 1")


@dataclass(frozen=True)
class SimulatorInfo:
    """What a person needs to point a client at a running simulator."""

    base_url: str
    api_key: str
    programs: dict[str, int]

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class RequestRecord:
    """One received request, as counted (``at`` is ``time.monotonic()``)."""

    method: str
    path: str
    query: str
    at: float


# --- replies --------------------------------------------------------------------------------


@dataclass
class _Reply:
    status: int
    parts: list[bytes]
    headers: list[tuple[str, str]] = field(default_factory=list)
    content_type: str = "application/json"
    date: float = field(default_factory=time.time)


@dataclass(frozen=True, slots=True)
class _Issue:
    """One validation finding: where (``loc``), what (``msg``) and its kind (``type``)."""

    loc: tuple[str | int, ...]
    msg: str
    type: str


def _dumps(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def _json_reply(status: int, value: Any) -> _Reply:
    return _Reply(status, [_dumps(value)])


def _error(status: int, code: str, message: str, issues: Iterable[_Issue] = ()) -> _Reply:
    found = list(issues)
    body = {
        "code": code,
        "message": message,
        "status_code": status,
        "detail": [{"loc": list(i.loc), "msg": i.msg, "type": i.type} for i in found],
        "errors": [{"message": i.msg, "path": ".".join(str(p) for p in i.loc)} for i in found],
    }
    return _json_reply(status, body)


def _unprocessable(issues: list[_Issue], code: str = "validation_error") -> _Reply:
    return _error(422, code, "; ".join(i.msg for i in issues), issues)


def _not_found(what: str) -> _Reply:
    return _error(404, "not_found", f"{what} not found")


def _unauthorized() -> _Reply:
    reply = _error(401, "unauthorized", "Missing or invalid API key")
    reply.headers.append(("WWW-Authenticate", "Bearer"))
    return reply


# --- the clock ------------------------------------------------------------------------------


def _iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


class _SimClock:
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


# --- validation -----------------------------------------------------------------------------


def _unknown_keys(body: dict[str, Any], allowed: frozenset[str]) -> list[_Issue]:
    return [
        _Issue(("body", key), f"Extra inputs are not permitted: {key!r}", "extra_forbidden")
        for key in body
        if key not in allowed
    ]


def _group_id_issues(value: Any, loc: tuple[str | int, ...]) -> list[_Issue]:
    if not isinstance(value, str):
        return [_Issue(loc, "Input should be a valid string", "string_type")]
    if not _GROUP_ID.match(value):
        msg = f"Group id {value!r} should match pattern '{GROUP_ID_PATTERN}'"
        return [_Issue(loc, msg, "string_pattern_mismatch")]
    return []


def _group_ids_issues(value: Any, known: Mapping[str, str], program_id: str) -> list[_Issue]:
    if value is None:
        return []
    if not isinstance(value, list):
        return [_Issue(("body", "group_ids"), "Input should be a valid list", "list_type")]
    issues = []
    for index, group_id in enumerate(value):
        loc: tuple[str | int, ...] = ("body", "group_ids", index)
        found = _group_id_issues(group_id, loc)
        if not found and group_id not in known:
            msg = f"Group {group_id!r} does not exist in program {program_id!r}"
            found = [_Issue(loc, msg, "group_not_found")]
        issues.extend(found)
    return issues


def _enrollment_patch_issues(body: dict[str, Any], known: Mapping[str, str], program_id: str) -> list[_Issue]:
    issues = _unknown_keys(body, frozenset({"status", "status_reason", "group_ids"}))
    status = body.get("status")
    if status is not None and status not in _STATUSES:
        msg = f"Input should be one of {', '.join(sorted(_STATUSES))}"
        issues.append(_Issue(("body", "status"), msg, "enum"))
    reason = body.get("status_reason")
    if reason is not None and not isinstance(reason, str):
        issues.append(_Issue(("body", "status_reason"), "Input should be a valid string", "string_type"))
    issues.extend(_group_ids_issues(body.get("group_ids"), known, program_id))
    return issues


def _issues_code(issues: list[_Issue]) -> str:
    if all(i.type == "group_not_found" for i in issues):
        return "group_not_found"
    return "validation_error"


def _parse_object(raw: bytes) -> tuple[dict[str, Any] | None, _Reply | None]:
    """The request body as a JSON object, or the 422 to answer instead."""
    try:
        body = json.loads(raw or b"null")
    except ValueError:
        return None, _unprocessable([_Issue(("body",), "Body is not valid JSON", "json_invalid")])
    if not isinstance(body, dict):
        issue = _Issue(("body",), "Body should be a JSON object", "dict_type")
        return None, _unprocessable([issue])
    return body, None


# --- the data -------------------------------------------------------------------------------


class _Store:
    """Programs, their enrollments (as compact JSON bytes) and groups. Thread-safe."""

    def __init__(self, config: SimulatorConfig, now: datetime) -> None:
        self._lock = threading.RLock()
        self._docs: dict[str, bytes] = {}
        self._program_of: dict[str, str] = {}
        self._ids: dict[str, list[str]] = {}
        self._status: dict[str, str | None] = {}
        self._groups: dict[str, dict[str, str]] = {}
        self.clock = _SimClock(now)
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
        self._docs[enrollment_id] = _dumps(record)
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
            needle = _dumps(group_id)
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


# --- faults ---------------------------------------------------------------------------------


@dataclass
class _Scripted:
    method: str
    pattern: re.Pattern[str]
    fault: str
    remaining: int
    after_apply: bool
    retry_after: str | None


@dataclass(frozen=True, slots=True)
class _Fault:
    kind: str
    after_apply: bool = False
    retry_after: str | None = None  # the Retry-After header value of a 429


class _FaultPlan:
    """The random faults in force and the queue of scripted ones. Thread-safe."""

    def __init__(self, config: FaultConfig) -> None:
        self._lock = threading.Lock()
        self._config = config
        self._rng = Random(config.seed)
        self._scripts: list[_Scripted] = []

    @property
    def config(self) -> FaultConfig:
        with self._lock:
            return self._config

    def set(self, config: FaultConfig) -> None:
        with self._lock:
            if config.seed != self._config.seed:
                self._rng = Random(config.seed)
            self._config = config

    def add_script(self, script: _Scripted) -> None:
        with self._lock:
            self._scripts.append(script)

    def clear_scripts(self) -> None:
        with self._lock:
            self._scripts.clear()

    def pending(self) -> int:
        with self._lock:
            return sum(s.remaining for s in self._scripts)

    def take_script(self, method: str, path: str) -> _Fault | None:
        """Use up one matching scripted fault (the oldest first)."""
        with self._lock:
            for script in self._scripts:
                if script.method in (method, "*") and script.pattern.search(path):
                    script.remaining -= 1
                    if script.remaining <= 0:
                        self._scripts.remove(script)
                    return _Fault(script.fault, script.after_apply, script.retry_after)
            return None

    def roll(self) -> _Fault | None:
        """Draw this request's random fault, if any."""
        with self._lock:
            cfg = self._config
            if not (cfg.rate_limit or cfg.error_rate or cfg.timeout or cfg.drop or cfg.truncate):
                return None
            draw = self._rng.random()
            for kind, share in (
                ("429", cfg.rate_limit),
                ("5xx", cfg.error_rate),
                ("timeout", cfg.timeout),
                ("drop", cfg.drop),
                ("truncate", cfg.truncate),
            ):
                if draw < share:
                    return self._random_fault(kind, cfg)
                draw -= share
            return None

    def _random_fault(self, kind: str, cfg: FaultConfig) -> _Fault:
        if kind == "5xx":
            return _Fault(self._rng.choice(("500", "503")))
        if kind != "429":
            return _Fault(kind)
        form = cfg.retry_after
        if form == "mixed":
            form = self._rng.choice(("seconds", "http-date", "none"))
        return _Fault("429", retry_after=_retry_after_spec(form, cfg.retry_after_s))


def _retry_after_spec(form: str, seconds: float | None) -> str | None:
    """How a 429's Retry-After is written: ``"3"``, ``"date:3"`` (an HTTP-date) or none."""
    if seconds is None or form == "none":
        return None
    if form == "http-date":
        return f"date:{int(seconds)}"
    return str(int(seconds)) if float(seconds).is_integer() else str(seconds)


# --- counting -------------------------------------------------------------------------------

_ENROLLMENT_PATH = re.compile(r"^/v1/enrollments/([^/]+)$")


class _Recorder:
    """Counts every received request, by method and by enrollment. Thread-safe."""

    def __init__(self, log_size: int = 100_000) -> None:
        self._lock = threading.Lock()
        self._by_method: Counter[str] = Counter()
        self._by_enrollment: dict[str, Counter[str]] = {}
        self._log: deque[RequestRecord] = deque(maxlen=log_size)

    def record(self, method: str, path: str, query: str) -> None:
        match = _ENROLLMENT_PATH.match(path)
        with self._lock:
            self._by_method[method] += 1
            if match:
                self._by_enrollment.setdefault(unquote(match[1]), Counter())[method] += 1
            self._log.append(RequestRecord(method, path, query, time.monotonic()))

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


# --- HTTP plumbing --------------------------------------------------------------------------


class _Server(ThreadingHTTPServer):
    """Threading server that knows its simulator and can cut its open connections."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], simulator: Simulator) -> None:
        self.simulator = simulator
        self._open: set[socket.socket] = set()
        self._open_lock = threading.Lock()
        super().__init__(address, _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._open_lock:
            self._open.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._open_lock:
            self._open.discard(request)
        super().shutdown_request(request)

    def cut_connections(self) -> None:
        with self._open_lock:
            sockets = list(self._open)
        for sock in sockets:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                _log.debug("connection already closed")

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that went away mid-answer is normal here (timeouts, drops).
        _log.debug("error while serving %s", client_address, exc_info=True)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "flip-sim/1"
    timeout = 30  # seconds an idle keep-alive connection is kept

    def setup(self) -> None:
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def do_GET(self) -> None:
        cast(_Server, self.server).simulator._serve_request(self)

    do_POST = do_PATCH = do_PUT = do_DELETE = do_GET

    def log_message(self, format: str, *args: Any) -> None:
        _log.debug("%s " + format, self.address_string(), *args)


def _read_body(handler: BaseHTTPRequestHandler) -> bytes | None:
    """The request body, or ``None`` when it is too large to accept."""
    length = int(handler.headers.get("Content-Length") or 0)
    if length > _MAX_BODY:
        return None
    return handler.rfile.read(length) if length > 0 else b""


def _write_reply(handler: BaseHTTPRequestHandler, reply: _Reply, *, cut: bool = False) -> None:
    """Send ``reply``; with ``cut`` promise the whole body but send half, then hang up.

    The head goes out in the same write as the first body bytes: a separate small write
    would meet Nagle's algorithm and the peer's delayed ACK (40 ms per answer).
    """
    total = sum(len(p) for p in reply.parts)
    headers = [
        ("Server", handler.version_string()),
        ("Date", formatdate(reply.date, usegmt=True)),
        ("Content-Type", reply.content_type),
        ("Content-Length", str(total)),
        *reply.headers,
    ]
    if cut:
        headers.append(("Connection", "close"))
        handler.close_connection = True
    status = HTTPStatus(reply.status)
    lines = [f"{handler.protocol_version} {status.value} {status.phrase}"]
    lines.extend(f"{name}: {value}" for name, value in headers)
    head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    budget = total // 2 if cut else total
    for chunk in _batches(reply.parts, budget, head):
        handler.wfile.write(chunk)


def _batches(parts: list[bytes], budget: int, head: bytes) -> Iterator[bytes]:
    """``head`` then the parts, joined into writes of ~256 kB, stopping after ``budget``
    body bytes."""
    batch: list[bytes] = [head]
    size = len(head)
    for part in parts:
        if budget <= 0:
            break
        piece = part[:budget]
        budget -= len(piece)
        batch.append(piece)
        size += len(piece)
        if size >= _WRITE_BATCH:
            yield b"".join(batch)
            batch, size = [], 0
    if batch:
        yield b"".join(batch)


def _hang_up(handler: BaseHTTPRequestHandler) -> None:
    handler.close_connection = True
    try:
        handler.connection.shutdown(socket.SHUT_RDWR)
    except OSError:
        _log.debug("connection already closed")


# --- the simulator --------------------------------------------------------------------------


_ROUTES: tuple[tuple[re.Pattern[str], frozenset[str], str], ...] = (
    (re.compile(r"^/v1/enrollments$"), frozenset({"GET"}), "_list_enrollments"),
    (_ENROLLMENT_PATH, frozenset({"GET", "PATCH"}), "_one_enrollment"),
    (re.compile(r"^/v1/programs/([^/]+)/groups$"), frozenset({"GET", "POST"}), "_program_groups"),
    (re.compile(r"^/v1/programs/([^/]+)/groups/([^/]+)$"), frozenset({"PATCH"}), "_one_group"),
    (re.compile(r"^/_sim/state$"), frozenset({"GET"}), "_state_route"),
)


@dataclass(frozen=True, slots=True)
class _Request:
    method: str
    path: str
    query: dict[str, list[str]]
    body: bytes
    args: tuple[str, ...] = ()


class Simulator:
    """A running (or ready to run) Flip API simulator. Thread-safe.

    Use as a context manager, or :meth:`start` / :meth:`stop`. The Python methods read
    and change the same state the HTTP API serves; they raise ``InputError`` for unknown
    ids.
    """

    def __init__(self, config: SimulatorConfig | None = None) -> None:
        self.config = config or SimulatorConfig()
        now = self.config.now or datetime.now(UTC)
        now = now.astimezone(UTC).replace(tzinfo=None, microsecond=0)
        self._store = _Store(self.config, now)
        self._faults = _FaultPlan(self.config.faults)
        self._recorder = _Recorder()
        self._api_key = self.config.api_key
        self._key_lock = threading.Lock()
        self._stopping = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # lifecycle

    def start(self) -> Simulator:
        """Bind the port and serve from a background thread."""
        server = self._bind()
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True
        )
        self._thread.start()
        return self

    def run(self, on_ready: Callable[[SimulatorInfo], None] | None = None) -> None:
        """Bind and serve in the calling thread until :meth:`stop` or KeyboardInterrupt."""
        server = self._bind()
        try:
            if on_ready is not None:
                on_ready(self.info())
            server.serve_forever(poll_interval=0.2)
        finally:
            self._close()

    def stop(self) -> None:
        """Stop serving, cut open connections and wake hanging requests."""
        server, thread = self._server, self._thread
        if server is None:
            return
        self._stopping.set()
        server.shutdown()
        if thread is not None:
            thread.join()
        self._close()

    def _bind(self) -> _Server:
        if self._server is not None:
            raise InputError("the simulator is already running")
        self._stopping.clear()
        try:
            self._server = _Server((self.config.host, self.config.port), self)
        except OSError as exc:
            raise InputError(f"cannot listen on {self.config.host}:{self.config.port}") from exc
        return self._server

    def _close(self) -> None:
        server, self._server, self._thread = self._server, None, None
        self._stopping.set()
        if server is not None:
            server.cut_connections()
            server.server_close()

    def __enter__(self) -> Simulator:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        if self._server is None:
            raise InputError("the simulator is not running")
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def info(self) -> SimulatorInfo:
        """The base URL, key and programs, for the CLI to print."""
        programs = {p: self._store.count(p) for p in self._store.program_ids()}
        return SimulatorInfo(self.base_url, self._key(), programs)

    # state, for tests and the dashboard "person"

    def enrollment(self, enrollment_id: str) -> dict[str, Any]:
        """A fresh copy of one enrollment as the API would send it."""
        record = self._store.enrollment(enrollment_id)
        if record is None:
            raise InputError(f"no enrollment {enrollment_id!r} in the simulator")
        return record

    def enrollments(self, program_id: str) -> list[dict[str, Any]]:
        """Fresh copies of every enrollment of a program, in list order."""
        docs = self._store.docs(self._program(program_id))
        return [cast(dict[str, Any], json.loads(doc)) for doc in docs]

    def enrollment_ids(self, program_id: str) -> list[str]:
        return self._store.ids(self._program(program_id))

    def groups(self, program_id: str) -> list[dict[str, str]]:
        return self._store.groups(self._program(program_id))

    def edit_enrollment(self, enrollment_id: str, **fields: Any) -> dict[str, Any]:
        """Change an enrollment the way a person in the vendor's dashboard would.

        Each keyword replaces that top-level field; ``group_ids`` sets the site's groups.
        ``updated_at`` moves forward (unless given). Returns the enrollment after the edit.
        """
        self.enrollment(enrollment_id)
        return self._store.edit(enrollment_id, dict(fields))

    def set_api_key(self, api_key: str) -> None:
        """Accept only ``api_key`` from now on (a key rotation)."""
        if not api_key:
            raise InputError("api_key must not be empty")
        with self._key_lock:
            self._api_key = api_key

    def _key(self) -> str:
        with self._key_lock:
            return self._api_key

    def _program(self, program_id: str) -> str:
        if not self._store.has_program(program_id):
            raise InputError(f"no program {program_id!r} in the simulator")
        return program_id

    # faults

    @property
    def faults(self) -> FaultConfig:
        return self._faults.config

    def set_faults(self, faults: FaultConfig | None = None, **changes: Any) -> FaultConfig:
        """Replace the random faults (``faults``) and/or change some of their fields."""
        updated = replace(faults or self._faults.config, **changes)
        self._faults.set(updated)
        return updated

    def clear_faults(self) -> None:
        """No random faults and no scripted ones from now on."""
        self._faults.set(FaultConfig(seed=self._faults.config.seed))
        self._faults.clear_scripts()

    def script(
        self,
        method: str,
        path_regex: str,
        fault: str,
        times: int = 1,
        after_apply: bool = False,
        *,
        retry_after: float | None = 1,
        retry_after_form: str = "seconds",
    ) -> None:
        """Answer the next ``times`` matching requests with ``fault`` (one of FAULT_KINDS).

        ``method`` is an HTTP method or ``*``; ``path_regex`` is searched in the path
        (no query). With ``after_apply`` the request is handled first (a PATCH or POST
        takes effect) and then the fault answers. A scripted ``429`` carries
        ``Retry-After: retry_after`` in ``retry_after_form`` (``seconds`` or
        ``http-date``; ``retry_after=None`` sends no header).
        """
        if fault not in FAULT_KINDS:
            raise InputError(f"unknown fault {fault!r}; known: {sorted(FAULT_KINDS)}")
        if times < 1:
            raise InputError("times must be at least 1")
        if retry_after_form not in ("seconds", "http-date"):
            raise InputError("retry_after_form must be 'seconds' or 'http-date'")
        spec = _retry_after_spec(retry_after_form, retry_after)
        pattern = re.compile(path_regex)
        self._faults.add_script(_Scripted(method.upper(), pattern, fault, times, after_apply, spec))

    def pending_scripts(self) -> int:
        """How many scripted faults have not fired yet."""
        return self._faults.pending()

    # counters

    def request_counts(self) -> dict[str, int]:
        """Every received request so far, by method (faulted ones included)."""
        return self._recorder.by_method()

    def requests_for(self, enrollment_id: str) -> dict[str, int]:
        """Requests to ``/v1/enrollments/{enrollment_id}``, by method."""
        return self._recorder.for_enrollment(enrollment_id)

    def patch_count(self, enrollment_id: str) -> int:
        return self.requests_for(enrollment_id).get("PATCH", 0)

    def request_log(self) -> list[RequestRecord]:
        """The most recent received requests (up to 100,000), oldest first."""
        return self._recorder.log()

    def reset_counters(self) -> None:
        self._recorder.reset()

    def state(self) -> dict[str, Any]:
        """The report ``GET /_sim/state`` answers."""
        programs = {
            p: {
                "enrollments": self._store.count(p),
                "statuses": self._store.status_counts(p),
                "groups": self._store.groups(p),
            }
            for p in self._store.program_ids()
        }
        return {
            "programs": programs,
            "requests": self.request_counts(),
            "faults": asdict(self.faults),
            "scripted_pending": self.pending_scripts(),
            "clock": self._store.clock.last(),
        }

    # serving one request

    def _serve_request(self, handler: BaseHTTPRequestHandler) -> None:
        url = urlsplit(handler.path)
        method = handler.command
        self._recorder.record(method, url.path, url.query)
        body = _read_body(handler)
        latency = self._faults.config.latency_s
        if latency:
            self._stopping.wait(latency)
        fault = self._faults.take_script(method, url.path)
        if fault is None:
            fault = self._faults.roll()
        if body is None:
            _write_reply(handler, _error(413, "payload_too_large", "Request body too large"))
            return
        request = _Request(method, url.path, parse_qs(url.query), body)
        if fault is not None and not fault.after_apply and fault.kind != "truncate":
            self._emit_fault(handler, fault, None)
            return
        reply = self._authorize(handler) or self._route(request)
        if fault is not None:
            self._emit_fault(handler, fault, reply)
            return
        _write_reply(handler, reply)

    def _authorize(self, handler: BaseHTTPRequestHandler) -> _Reply | None:
        given = (handler.headers.get("Authorization") or "").encode()
        expected = f"Bearer {self._key()}".encode()
        return None if hmac.compare_digest(given, expected) else _unauthorized()

    def _emit_fault(self, handler: BaseHTTPRequestHandler, fault: _Fault, reply: _Reply | None) -> None:
        kind = fault.kind
        if kind == "truncate" and reply is not None:
            _write_reply(handler, reply, cut=True)
        elif kind in ("drop", "truncate"):
            _hang_up(handler)
        elif kind == "timeout":
            self._stopping.wait(self._faults.config.hang_s)
            _hang_up(handler)
        elif kind == "malformed":
            _write_reply(handler, _Reply(200, [_MALFORMED_BODY], content_type="text/html"))
        elif kind == "401":
            _write_reply(handler, _unauthorized())
        elif kind == "403":
            _write_reply(handler, _error(403, "forbidden", "This key may not change this program"))
        elif kind == "429":
            _write_reply(handler, _rate_limited(fault.retry_after))
        else:
            status = int(kind)
            code = "service_unavailable" if status == 503 else "internal_error"
            _write_reply(handler, _error(status, code, "The server could not handle the request"))

    def _route(self, request: _Request) -> _Reply:
        for pattern, methods, name in _ROUTES:
            match = pattern.match(request.path)
            if match is None:
                continue
            if request.method not in methods:
                reply = _error(405, "method_not_allowed", f"{request.method} is not allowed here")
                reply.headers.append(("Allow", ", ".join(sorted(methods))))
                return reply
            args = tuple(unquote(g) for g in match.groups())
            handler = cast(Callable[[_Request], _Reply], getattr(self, name))
            return handler(replace(request, args=args))
        return _not_found("Path")

    # endpoints

    def _list_enrollments(self, request: _Request) -> _Reply:
        program_id = (request.query.get("program_id") or [""])[0]
        if not program_id:
            issue = _Issue(("query", "program_id"), "Field required", "missing")
            return _unprocessable([issue])
        if not self._store.has_program(program_id):
            return _error(404, "program_not_found", f"Program {program_id!r} not found")
        return self._list_page(program_id, (request.query.get("cursor") or ["0"])[0])

    def _list_page(self, program_id: str, cursor: str) -> _Reply:
        page_size = self.config.page_size
        start = int(cursor) if cursor.isdigit() else 0
        stop = None if page_size is None else start + page_size
        docs = self._store.docs(program_id, start, stop)
        tail = b"]}"
        if stop is not None and stop < self._store.count(program_id):
            tail = b'],"next_cursor":' + _dumps(str(stop)) + b"}"
        parts = [b'{"enrollments":[']
        for index, doc in enumerate(docs):
            parts.append(b"," + doc if index else doc)
        parts.append(tail)
        return _Reply(200, parts)

    def _one_enrollment(self, request: _Request) -> _Reply:
        enrollment_id = request.args[0]
        doc = self._store.doc(enrollment_id)
        if doc is None:
            return _not_found(f"Enrollment {enrollment_id!r}")
        if request.method == "GET":
            return _Reply(200, [doc])
        body, problem = _parse_object(request.body)
        if body is None:
            return cast(_Reply, problem)
        program_id = cast(str, self._store.program_of(enrollment_id))
        issues = _enrollment_patch_issues(body, self._store.group_names(program_id), program_id)
        if issues:
            return _unprocessable(issues, _issues_code(issues))
        return _json_reply(200, self._store.apply_patch(enrollment_id, body))

    def _program_groups(self, request: _Request) -> _Reply:
        program_id = request.args[0]
        if not self._store.has_program(program_id):
            return _error(404, "program_not_found", f"Program {program_id!r} not found")
        if request.method == "GET":
            return _json_reply(200, self._store.groups(program_id))
        body, problem = _parse_object(request.body)
        if body is None:
            return cast(_Reply, problem)
        issues = _new_group_issues(body)
        if issues:
            return _unprocessable(issues)
        if not self._store.add_group(program_id, body["id"], body["name"]):
            return _group_exists(body["id"])
        return _json_reply(201, {"id": body["id"], "name": body["name"]})

    def _one_group(self, request: _Request) -> _Reply:
        program_id, group_id = request.args
        if not self._store.has_program(program_id):
            return _error(404, "program_not_found", f"Program {program_id!r} not found")
        names = self._store.group_names(program_id)
        if group_id not in names:
            return _not_found(f"Group {group_id!r}")
        body, problem = _parse_object(request.body)
        if body is None:
            return cast(_Reply, problem)
        issues = _group_change_issues(body)
        if issues:
            return _unprocessable(issues)
        new_id = body.get("id") or group_id
        name = body.get("name") or names[group_id]
        if new_id != group_id and new_id in names:
            return _group_exists(new_id)
        self._store.change_group(program_id, group_id, new_id, name)
        return _json_reply(200, {"id": new_id, "name": name})

    def _state_route(self, request: _Request) -> _Reply:
        return _json_reply(200, self.state())


def _rate_limited(retry_after: str | None) -> _Reply:
    reply = _error(429, "rate_limited", "Too many requests")
    if retry_after is not None and retry_after.startswith("date:"):
        seconds = int(retry_after.removeprefix("date:"))
        reply.date = float(int(reply.date))
        reply.headers.append(("Retry-After", formatdate(reply.date + seconds, usegmt=True)))
    elif retry_after is not None:
        reply.headers.append(("Retry-After", retry_after))
    return reply


def _group_exists(group_id: str) -> _Reply:
    issue = _Issue(("body", "id"), f"Group {group_id!r} already exists", "group_already_exists")
    return _unprocessable([issue], "group_already_exists")


def _new_group_issues(body: dict[str, Any]) -> list[_Issue]:
    issues = _unknown_keys(body, frozenset({"id", "name"}))
    if "id" not in body:
        issues.append(_Issue(("body", "id"), "Field required", "missing"))
    else:
        issues.extend(_group_id_issues(body["id"], ("body", "id")))
    if not isinstance(body.get("name"), str) or not body["name"]:
        issues.append(_Issue(("body", "name"), "A non-empty string is required", "string_type"))
    return issues


def _group_change_issues(body: dict[str, Any]) -> list[_Issue]:
    issues = _unknown_keys(body, frozenset({"id", "name"}))
    if body.get("id") is not None:
        issues.extend(_group_id_issues(body["id"], ("body", "id")))
    name = body.get("name")
    if name is not None and (not isinstance(name, str) or not name):
        issues.append(_Issue(("body", "name"), "A non-empty string is required", "string_type"))
    return issues


def serve(config: SimulatorConfig, on_ready: Callable[[SimulatorInfo], None] | None = None) -> None:
    """Run a simulator in the calling thread until KeyboardInterrupt (for ``autoapprove sandbox``).

    ``on_ready`` gets the :class:`SimulatorInfo` once the port is bound, so the CLI can
    print the base URL and key; this function itself never prints.
    """
    Simulator(config).run(on_ready)
