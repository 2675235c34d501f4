"""Log formats: JSON lines with ts/level/event and fields; text as before; the key and the
API's free text never appear in either."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from engine.errors import ApiRetryableError
from engine.observe.logs import LogFormat, configure_logging, log_event

KEY = "fl_live_0123456789abcdef"
PERSONAL = "Jane Doe, 12 Main St"


@pytest.fixture
def logged() -> Iterator[tuple[io.StringIO, list[str]]]:
    """Configure logging onto a buffer; yield it; restore the root logger after."""
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    buffer = io.StringIO()
    yield buffer, []
    root.handlers[:] = saved[0]
    root.setLevel(saved[1])


def lines(buffer: io.StringIO) -> list[str]:
    return [line for line in buffer.getvalue().splitlines() if line]


def test_json_lines_carry_ts_level_event_and_the_fields(logged) -> None:
    buffer, _ = logged
    configure_logging(LogFormat.JSON, buffer)
    before = datetime.now(UTC)
    log_event(logging.getLogger("autoapprove.run"), "run_finished", program="prog-tx", run_id=3,
              counts={"update": 2}, duration_s=1.25)  # fmt: skip
    logging.getLogger("engine.flip.client").warning("GET /x failed; attempt %d of %d", 1, 4)
    first, second = (json.loads(line) for line in lines(buffer))
    assert first["event"] == "run_finished"
    assert first["level"] == "info"
    assert first["program"] == "prog-tx"
    assert first["run_id"] == 3
    assert first["counts"] == {"update": 2}
    assert first["ts"].endswith("Z")
    moment = datetime.fromisoformat(first["ts"].replace("Z", "+00:00"))
    assert moment.utcoffset() == timedelta(0)
    assert abs(moment - before) < timedelta(seconds=5)
    assert second["event"] == "log"  # a plain library warning still gets the three keys
    assert second["level"] == "warning"
    assert second["message"] == "GET /x failed; attempt 1 of 4"


def test_every_json_line_is_one_object_even_with_newlines_in_the_message(logged) -> None:
    buffer, _ = logged
    configure_logging(LogFormat.JSON, buffer)
    logging.getLogger("x").warning("two\nlines")
    assert len(lines(buffer)) == 1
    assert json.loads(lines(buffer)[0])["message"] == "two\nlines"


def test_fields_cannot_replace_the_three_keys(logged) -> None:
    buffer, _ = logged
    configure_logging(LogFormat.JSON, buffer)
    log_event(logging.getLogger("x"), "progress", ts="forged")
    data = json.loads(lines(buffer)[0])
    assert data["event"] == "progress"
    assert data["ts"] != "forged"
    assert data["level"] == "info"


@pytest.mark.parametrize("fmt", list(LogFormat))
def test_the_key_and_the_apis_text_never_reach_a_line(logged, fmt) -> None:
    buffer, _ = logged
    configure_logging(fmt, buffer, secrets=[KEY])
    error = ApiRetryableError(f"GET /v1/enrollments: server error 503 (E503: {PERSONAL})",
                              status_code=503, code="E503")  # fmt: skip
    log = logging.getLogger("engine.flip.client")
    log.warning("%s failed (%s); attempt %d of %d", "GET /v1/enrollments", error, 1, 4)
    log.warning("key was %s", KEY)
    log_event(log, "odd", detail=f"Bearer {KEY}")
    text = buffer.getvalue()
    assert KEY not in text
    assert PERSONAL not in text
    assert "HTTP 503 E503" in text


def test_text_lines_keep_the_old_shape_and_hide_info_events(logged) -> None:
    buffer, _ = logged
    configure_logging(LogFormat.TEXT, buffer)
    logging.getLogger("engine.flip.client").warning("retrying in %.2fs", 0.5)
    log_event(logging.getLogger("autoapprove.run"), "run_started", program="p")
    assert lines(buffer) == ["WARNING engine.flip.client: retrying in 0.50s"]


def test_configuring_twice_keeps_one_handler(logged) -> None:
    buffer, _ = logged
    configure_logging(LogFormat.TEXT, buffer)
    configure_logging(LogFormat.JSON, buffer)
    logging.getLogger("x").warning("once")
    assert len(lines(buffer)) == 1
