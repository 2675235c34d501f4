"""Fault injection: seeded random faults, the queue of scripted ones, and how each is answered."""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from random import Random

from engine.sandbox.config import FaultConfig
from engine.sandbox.replies import Reply, error_reply, rate_limited, unauthorized
from engine.sandbox.server import hang_up, write_reply

MALFORMED_BODY = b"<html><body><h1>502 Bad Gateway</h1></body></html>"
# Valid JSON nested 100,000 deep: what a hostile or broken server could send.
DEEP_BODY = b'{"id": "deep", "nested": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"


# --- faults ---------------------------------------------------------------------------------


@dataclass
class Scripted:
    method: str
    pattern: re.Pattern[str]
    fault: str
    remaining: int
    after_apply: bool
    retry_after: str | None


@dataclass(frozen=True, slots=True)
class Fault:
    kind: str
    after_apply: bool = False
    retry_after: str | None = None  # the Retry-After header value of a 429


class FaultPlan:
    """The random faults in force and the queue of scripted ones. Thread-safe."""

    def __init__(self, config: FaultConfig) -> None:
        self._lock = threading.Lock()
        self._config = config
        self._rng = Random(config.seed)
        self._scripts: list[Scripted] = []

    @property
    def config(self) -> FaultConfig:
        with self._lock:
            return self._config

    def set(self, config: FaultConfig) -> None:
        with self._lock:
            if config.seed != self._config.seed:
                self._rng = Random(config.seed)
            self._config = config

    def add_script(self, script: Scripted) -> None:
        with self._lock:
            self._scripts.append(script)

    def clear_scripts(self) -> None:
        with self._lock:
            self._scripts.clear()

    def pending(self) -> int:
        with self._lock:
            return sum(s.remaining for s in self._scripts)

    def take_script(self, method: str, path: str) -> Fault | None:
        """Use up one matching scripted fault (the oldest first)."""
        with self._lock:
            for script in self._scripts:
                if script.method in (method, "*") and script.pattern.search(path):
                    script.remaining -= 1
                    if script.remaining <= 0:
                        self._scripts.remove(script)
                    return Fault(script.fault, script.after_apply, script.retry_after)
            return None

    def roll(self) -> Fault | None:
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

    def _random_fault(self, kind: str, cfg: FaultConfig) -> Fault:
        if kind == "5xx":
            return Fault(self._rng.choice(("500", "503")))
        if kind != "429":
            return Fault(kind)
        form = cfg.retry_after
        if form == "mixed":
            form = self._rng.choice(("seconds", "http-date", "none"))
        return Fault("429", retry_after=retry_after_spec(form, cfg.retry_after_s))


def retry_after_spec(form: str, seconds: float | None) -> str | None:
    """How a 429's Retry-After is written: ``"3"``, ``"date:3"`` (an HTTP-date) or none."""
    if seconds is None or form == "none":
        return None
    if form == "http-date":
        return f"date:{int(seconds)}"
    return str(int(seconds)) if float(seconds).is_integer() else str(seconds)


def emit_fault(
    handler: BaseHTTPRequestHandler,
    fault: Fault,
    reply: Reply | None,
    *,
    plan: FaultPlan,
    stopping: threading.Event,
) -> None:
    """Answer with ``fault`` instead of (or, for ``truncate``, by cutting) ``reply``."""
    kind = fault.kind
    if kind == "truncate" and reply is not None:
        write_reply(handler, reply, cut=True)
    elif kind in ("drop", "truncate"):
        hang_up(handler)
    elif kind == "timeout":
        stopping.wait(plan.config.hang_s)
        hang_up(handler)
    elif kind == "malformed":
        write_reply(handler, Reply(200, [MALFORMED_BODY], content_type="text/html"))
    elif kind == "deep":
        write_reply(handler, Reply(200, [DEEP_BODY]))
    elif kind == "401":
        write_reply(handler, unauthorized())
    elif kind == "403":
        write_reply(handler, error_reply(403, "forbidden", "This key may not change this program"))
    elif kind == "429":
        write_reply(handler, rate_limited(fault.retry_after))
    else:
        status = int(kind)
        code = "service_unavailable" if status == 503 else "internal_error"
        write_reply(handler, error_reply(status, code, "The server could not handle the request"))
