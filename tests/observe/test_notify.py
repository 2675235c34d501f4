"""Notifications against a real webhook receiver on loopback: shape, triggers, retry,
timeouts, and that a dead or slow receiver never holds up or fails anything."""

from __future__ import annotations

import json
import logging
import socket
import time
from datetime import UTC, datetime

import pytest

from engine.errors import InputError
from engine.observe.notify import Notifier, NotifySettings, check_notify_url, notification_body
from engine.runs.summary import RunSummary

T0 = datetime(2026, 11, 25, 8, 0, tzinfo=UTC)


def summary(**overrides: object) -> RunSummary:
    fields: dict[str, object] = {
        "program_id": "prog-tx", "outcome": "completed", "exit_code": 0, "live": True, "run_id": 7,
        "started_at": T0, "duration_s": 2.5, "decisions": {"update": 3, "none": 5, "skip": 2},
        "changes": {"applied": 3},
    }  # fmt: skip
    fields.update(overrides)
    return RunSummary(**fields)  # type: ignore[arg-type]


def fast(url: str, **overrides: object) -> NotifySettings:
    values: dict[str, object] = {"url": url, "timeout_s": 0.5, "retry_pause_s": 0.05}
    values.update(overrides)
    return NotifySettings(**values)  # type: ignore[arg-type]


def test_a_failed_run_posts_the_summary_in_the_webhook_shape(receiver) -> None:
    notifier = Notifier(fast(receiver.url))
    failed = summary(
        outcome="failed", exit_code=6, changes={"applied": 1}, message="Flip API error: HTTP 503"
    )
    assert notifier.notify(failed)
    notifier.close()
    assert len(receiver.bodies) == 1
    body = receiver.bodies[0]
    assert body["program"] == "prog-tx"
    assert body["run_id"] == 7
    assert body["outcome"] == "failed"
    assert body["counts"] == {
        "enrollments": 10, "decisions": {"none": 5, "skip": 2, "update": 3},
        "changes": {"applied": 1}, "unchanged": 0,
    }  # fmt: skip
    assert isinstance(body["text"], str)
    assert "prog-tx" in body["text"]
    assert "failed" in body["text"]
    assert "HTTP 503" in body["text"]
    assert notifier.sent == 1


@pytest.mark.parametrize(
    ("overrides", "sent"),
    [
        ({}, False),  # a clean run needs nobody
        ({"outcome": "failed", "exit_code": 6}, True),
        ({"outcome": "aborted", "exit_code": 5}, True),  # a circuit breaker tripped
        ({"changes": {"applied": 2, "held": 1}}, True),  # held out of ACTIVE
        ({"changes": {"failed_permanent": 1}, "exit_code": 1}, True),
        ({"changes": {"awaiting_approval": 4}}, True),
        ({"outcome": "locked", "exit_code": 4}, False),  # another run is working
    ],
)
def test_only_runs_that_need_a_person_are_sent(receiver, overrides, sent) -> None:
    notifier = Notifier(fast(receiver.url))
    assert notifier.notify(summary(**overrides)) is sent
    notifier.close()
    assert len(receiver.bodies) == (1 if sent else 0)


def test_notify_always_sends_every_run(receiver) -> None:
    notifier = Notifier(fast(receiver.url, always=True))
    assert notifier.notify(summary())
    notifier.close()
    assert [b["outcome"] for b in receiver.bodies] == ["completed"]


def test_one_retry_after_a_server_error(receiver) -> None:
    receiver.script = [503]
    notifier = Notifier(fast(receiver.url, always=True))
    notifier.notify(summary())
    notifier.close()
    assert len(receiver.bodies) == 2  # the 503 and the retry that got through
    assert notifier.sent == 1
    assert notifier.failed == 0


def test_a_client_error_is_not_retried_and_is_logged_without_the_url(receiver, caplog) -> None:
    receiver.script = [404]
    notifier = Notifier(fast(receiver.url, always=True))
    with caplog.at_level(logging.WARNING):
        notifier.notify(summary())
        notifier.close()
    assert len(receiver.bodies) == 1
    assert notifier.failed == 1
    logged = caplog.text + json.dumps([r.__dict__.get("fields") for r in caplog.records])
    assert "HTTP 404" in logged
    assert "secret-token" not in logged  # chat webhooks carry their token in the URL


def test_a_hanging_receiver_is_given_up_on_within_the_bound(receiver) -> None:
    receiver.script = ["hang", "hang"]
    receiver.hang_s = 2.0
    notifier = Notifier(fast(receiver.url, always=True, timeout_s=0.3))
    started = time.monotonic()
    notifier.notify(summary())
    queued_in = time.monotonic() - started
    notifier.close()
    assert queued_in < 0.2  # the run never waits for the POST
    assert time.monotonic() - started < 2.0  # timeout + retry, not the receiver's 4 s
    assert notifier.failed == 1


def test_an_unreachable_receiver_never_raises() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    notifier = Notifier(fast(f"http://127.0.0.1:{port}/hook", always=True))
    notifier.notify(summary())
    notifier.close()
    assert notifier.failed == 1


def test_the_body_holds_ids_and_counts_only() -> None:
    body = notification_body(
        summary(outcome="aborted", message="3 changes planned, more than the limit of 2")
    )
    assert set(body) == {"text", "program", "run_id", "outcome", "mode", "exit_code", "counts"}
    assert json.loads(json.dumps(body)) == body


@pytest.mark.parametrize("url", ["ftp://example.test/x", "hooks.slack.test/x", "http://", ""])
def test_a_bad_url_is_refused_without_repeating_it(url) -> None:
    with pytest.raises(InputError) as caught:
        check_notify_url(url, "--notify-url")
    assert "--notify-url" in str(caught.value)
    if url:
        assert url not in str(caught.value)
