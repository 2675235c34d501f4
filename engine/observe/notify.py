"""Notifications: a JSON summary POSTed to a webhook when a run needs a person.

The body is ``{"text": ..., "program": ..., "run_id": ..., "outcome": ..., "counts": {...}}``;
``text`` makes it a valid Slack or Mattermost incoming-webhook body. It carries ids and
counts only: no API key, no personal data, no API error text (see ``RunSummary``).

Sending never blocks or fails the run: each POST runs on a background thread with a
timeout and one retry, and :meth:`Notifier.close` waits a bounded time for the last ones at
the end of the process. The webhook URL is never logged: chat webhooks carry their token in
the path.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx

from engine.errors import InputError
from engine.observe.logs import log_event
from engine.runs.states import ChangeState, NotStarted, RunOutcome
from engine.runs.summary import RunSummary

__all__ = [
    "ATTENTION_STATES",
    "Notifier",
    "NotifySettings",
    "check_notify_url",
    "needs_attention",
    "notification_body",
]

_log = logging.getLogger("autoapprove.notify")

# Change states that need a person: kept back by a limit, failed, or waiting for approval.
ATTENTION_STATES = (
    ChangeState.HELD, ChangeState.FAILED_RETRYABLE, ChangeState.FAILED_PERMANENT, ChangeState.DEFERRED,
    ChangeState.AWAITING_APPROVAL,
)  # fmt: skip
ATTENTION_OUTCOMES = (RunOutcome.FAILED, RunOutcome.ABORTED, NotStarted.ERROR)


@dataclass(frozen=True)
class NotifySettings:
    url: str
    always: bool = False
    timeout_s: float = 5.0
    attempts: int = 2
    retry_pause_s: float = 1.0


def check_notify_url(url: str, where: str) -> str:
    """An http(s) URL with a host, or a clear error (the URL itself is not repeated)."""
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise InputError(f"{where}: not an http(s) URL with a host")
    return url.strip()


def needs_attention(summary: RunSummary) -> bool:
    """A failed run, a tripped circuit breaker, or changes held, failed or awaiting approval."""
    if summary.outcome in ATTENTION_OUTCOMES:
        return True
    return any(summary.changes.get(state, 0) for state in ATTENTION_STATES)


def notification_body(summary: RunSummary) -> dict[str, Any]:
    return {
        "text": f"autoapprove {summary.describe()}",
        "program": summary.program_id,
        "run_id": summary.run_id,
        "outcome": summary.outcome,
        "mode": summary.mode,
        "exit_code": summary.exit_code,
        "counts": summary.counts(),
    }


class Notifier:
    """POSTs summaries in the background; ``close`` waits at most ``wait_s`` for them."""

    def __init__(
        self,
        settings: NotifySettings,
        *,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.settings = settings
        self.sleep = sleep
        self._client = httpx.Client(
            transport=transport, timeout=settings.timeout_s, headers={"User-Agent": "flip-autoapprove"}
        )
        self._threads: list[threading.Thread] = []
        self.sent = 0
        self.failed = 0

    def notify(self, summary: RunSummary) -> bool:
        """Send ``summary`` if it needs a person (or always, when asked); True if queued."""
        if not (self.settings.always or needs_attention(summary)):
            return False
        body = notification_body(summary)
        thread = threading.Thread(target=self._send, args=(body,), name="notify", daemon=True)
        self._threads = [t for t in self._threads if t.is_alive()]
        self._threads.append(thread)
        thread.start()
        return True

    def _send(self, body: dict[str, Any]) -> None:
        program = body["program"]
        failure = "not sent"
        for attempt in range(1, self.settings.attempts + 1):
            failure, retryable = self._post(body)
            if not failure:
                self.sent += 1
                log_event(_log, "notification_sent", program=program, run_id=body["run_id"], attempt=attempt)
                return
            if not retryable:
                break
            if attempt < self.settings.attempts:
                self.sleep(self.settings.retry_pause_s)
        self.failed += 1
        log_event(
            _log, "notification_failed", f"the notification could not be sent ({failure})",
            level=logging.WARNING, program=program, run_id=body["run_id"], error=failure,
        )  # fmt: skip

    def _post(self, body: dict[str, Any]) -> tuple[str, bool]:
        """("", _) when the receiver took it; otherwise why not (never the URL) and whether
        another attempt may help (timeouts, connection errors, 429 and 5xx)."""
        try:
            response = self._client.post(self.settings.url, json=body)
        except httpx.TimeoutException:
            return f"timed out after {self.settings.timeout_s:g}s", True
        except httpx.HTTPError as exc:
            return type(exc).__name__, True
        if response.is_success:
            return "", False
        return f"HTTP {response.status_code}", response.status_code == 429 or response.status_code >= 500

    def close(self, wait_s: float | None = None) -> None:
        """Wait (bounded) for notifications under way, then release the connection pool."""
        budget = wait_s if wait_s is not None else self._worst_case_s()
        deadline = time.monotonic() + budget
        for thread in self._threads:
            thread.join(max(deadline - time.monotonic(), 0.0))
        if not any(t.is_alive() for t in self._threads):
            self._client.close()

    def _worst_case_s(self) -> float:
        s = self.settings
        return s.attempts * s.timeout_s + (s.attempts - 1) * s.retry_pause_s + 1.0
