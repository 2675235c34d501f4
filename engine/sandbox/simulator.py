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

Layout: ``config`` (configuration and reports), ``state`` (the data, clock and request
counts), ``faults`` (fault injection), ``routes`` (routing and endpoints), ``replies``
(answer bodies), ``server`` (HTTP plumbing and lifecycle); this module is the
:class:`Simulator` that ties them together.
"""

from __future__ import annotations

import hmac
import json
import re
import threading
from collections.abc import Callable
from dataclasses import asdict, replace
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler
from typing import Any, cast
from urllib.parse import parse_qs, urlsplit

from engine.errors import InputError
from engine.sandbox.config import (
    DEFAULT_API_KEY,
    FAULT_KINDS,
    FaultConfig,
    RequestRecord,
    SimulatorConfig,
    SimulatorInfo,
)
from engine.sandbox.faults import FaultPlan, Scripted, emit_fault, retry_after_spec
from engine.sandbox.replies import Reply, error_reply, unauthorized
from engine.sandbox.routes import Request, Router
from engine.sandbox.server import LoopbackServer, read_body, write_reply
from engine.sandbox.state import EnrollmentStore, Recorder

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
        self._store = EnrollmentStore(self.config, now)
        self._faults = FaultPlan(self.config.faults)
        self._recorder = Recorder()
        self._api_key = self.config.api_key
        self._key_lock = threading.Lock()
        self._http = LoopbackServer(self.config.host, self.config.port, self._serve_request)
        self._router = Router(self._store, self.config.page_size, self.state)

    # lifecycle

    def start(self) -> Simulator:
        """Bind the port and serve from a background thread."""
        self._http.start()
        return self

    def run(self, on_ready: Callable[[SimulatorInfo], None] | None = None) -> None:
        """Bind and serve in the calling thread until :meth:`stop` or KeyboardInterrupt."""
        self._http.run(None if on_ready is None else lambda: on_ready(self.info()))

    def stop(self) -> None:
        """Stop serving, cut open connections and wake hanging requests."""
        self._http.stop()

    def __enter__(self) -> Simulator:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        return self._http.base_url

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
        spec = retry_after_spec(retry_after_form, retry_after)
        pattern = re.compile(path_regex)
        self._faults.add_script(Scripted(method.upper(), pattern, fault, times, after_apply, spec))

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

    def applied_patch_counts(self) -> dict[str, int]:
        """PATCHes of each enrollment the API applied, answered with a fault after applying
        included (the client saw an error, the change was made)."""
        return self._recorder.applied()

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
        body = read_body(handler)
        latency = self._faults.config.latency_s
        if latency:
            self._http.stopping.wait(latency)
        fault = self._faults.take_script(method, url.path)
        if fault is None:
            fault = self._faults.roll()
        if body is None:
            write_reply(handler, error_reply(413, "payload_too_large", "Request body too large"))
            return
        request = Request(method, url.path, parse_qs(url.query), body)
        if fault is not None and not fault.after_apply and fault.kind != "truncate":
            emit_fault(handler, fault, None, plan=self._faults, stopping=self._http.stopping)
            return
        reply = self._authorize(handler) or self._router.route(request)
        if method == "PATCH" and reply.status == 200:
            self._recorder.record_applied(url.path)
        if fault is not None:
            emit_fault(handler, fault, reply, plan=self._faults, stopping=self._http.stopping)
            return
        write_reply(handler, reply)

    def _authorize(self, handler: BaseHTTPRequestHandler) -> Reply | None:
        given = (handler.headers.get("Authorization") or "").encode()
        expected = f"Bearer {self._key()}".encode()
        return None if hmac.compare_digest(given, expected) else unauthorized()


def serve(config: SimulatorConfig, on_ready: Callable[[SimulatorInfo], None] | None = None) -> None:
    """Run a simulator in the calling thread until KeyboardInterrupt (for ``autoapprove sandbox``).

    ``on_ready`` gets the :class:`SimulatorInfo` once the port is bound, so the CLI can
    print the base URL and key; this function itself never prints.
    """
    Simulator(config).run(on_ready)
