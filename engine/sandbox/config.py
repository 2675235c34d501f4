"""What the simulator serves and where, the faults it injects, and what it reports."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from engine.errors import InputError
from engine.sandbox.generator import CA_EV_PROGRAM, TX_BATTERY_PROGRAM

DEFAULT_API_KEY = "fl_sim_local_key"
FAULT_KINDS = frozenset(
    {"429", "500", "503", "timeout", "drop", "truncate", "401", "403", "malformed", "deep"}
)
_RETRY_AFTER_FORMS = frozenset({"seconds", "http-date", "none", "mixed"})
_LOOPBACK = "127.0.0.1"


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
