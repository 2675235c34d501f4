"""Log lines for people (``text``) or for log pipelines (``json``: one object per line).

Library code logs on its own ``logging`` loggers and never configures logging; the entry
point calls :func:`configure_logging` once. Structured events go through :func:`log_event`,
whose fields become keys of the JSON object (and ``key=value`` pairs in text).

Two guards apply to every line in both formats: the API key (and any other secret handed
to :func:`configure_logging`) is replaced by ``***``, and an API error passed as a logging
argument is shown as its HTTP status and code only, never the API's message, which may quote
personal data.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, TextIO

from engine.errors import ApiError
from engine.runs.summary import safe_error_text

__all__ = [
    "LOGGER_NAME",
    "JsonFormatter",
    "LogFormat",
    "TextFormatter",
    "configure_logging",
    "log_event",
]

LOGGER_NAME = "autoapprove"
_RESERVED = ("ts", "level", "event")
_DEFAULT_EVENT = "log"
_HANDLER_NAME = "autoapprove-stderr"


class LogFormat(StrEnum):
    TEXT = "text"
    JSON = "json"


def log_event(
    logger: logging.Logger,
    event: str,
    message: str | None = None,
    *,
    level: int = logging.INFO,
    **fields: Any,
) -> None:
    """Log one structured event: ``event`` names it, ``fields`` are ids, counts, durations."""
    logger.log(level, message or event, extra={"event": event, "fields": fields})


def _safe_args(args: tuple[Any, ...] | Mapping[str, Any]) -> tuple[Any, ...] | Mapping[str, Any]:
    if isinstance(args, tuple):
        return tuple(safe_error_text(a) if isinstance(a, ApiError) else a for a in args)
    return args


def _message(record: logging.LogRecord) -> str:
    """The record's message with API errors among its arguments shown safely."""
    if not record.args:
        return str(record.msg)
    try:
        return str(record.msg) % _safe_args(record.args)
    except (TypeError, ValueError):
        return str(record.msg)


def _fields(record: logging.LogRecord) -> Mapping[str, Any]:
    fields = getattr(record, "fields", None)
    return fields if isinstance(fields, Mapping) else {}


class _Redacting(logging.Formatter):
    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        self.secrets = [s for s in secrets if s]

    def redact(self, line: str) -> str:
        for secret in self.secrets:
            line = line.replace(secret, "***")
        return line


class JsonFormatter(_Redacting):
    """One JSON object per line: ``ts`` (ISO 8601 UTC), ``level``, ``event``, then the fields."""

    def format(self, record: logging.LogRecord) -> str:
        moment = datetime.fromtimestamp(record.created, UTC)
        data: dict[str, Any] = {
            "ts": moment.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "event": str(getattr(record, "event", None) or _DEFAULT_EVENT),
        }
        for key, value in _fields(record).items():
            if key not in _RESERVED:
                data[key] = value
        message = _message(record)
        if message != data["event"]:
            data["message"] = message
        data["logger"] = record.name
        if record.exc_info and record.exc_info[1] is not None:
            # The type only: a traceback's text can quote data.
            data["error_type"] = type(record.exc_info[1]).__name__
        return self.redact(json.dumps(data, default=str, ensure_ascii=False, separators=(",", ":")))


class TextFormatter(_Redacting):
    """``LEVEL logger: message key=value ...``; the CLI's own lines stay as they were."""

    def format(self, record: logging.LogRecord) -> str:
        message = _message(record)
        pairs = " ".join(f"{k}={_text_value(v)}" for k, v in _fields(record).items())
        line = f"{record.levelname} {record.name}: {message}" + (f" ({pairs})" if pairs else "")
        return self.redact(line)


def _text_value(value: Any) -> str:
    if isinstance(value, Mapping):
        return ",".join(f"{k}:{v}" for k, v in value.items()) or "-"
    return str(value)


def configure_logging(
    log_format: LogFormat, stream: TextIO, *, secrets: Iterable[str] = (), level: int | None = None
) -> logging.Handler:
    """Send every log record to ``stream`` in ``log_format``; returns the handler.

    Text logs warnings and above (events at INFO are for machines); JSON logs INFO and
    above, so a pipeline sees every event. Calling it again replaces the handler.
    """
    root = logging.getLogger()
    for handler in list(root.handlers):
        if handler.get_name() == _HANDLER_NAME:
            root.removeHandler(handler)
    handler = logging.StreamHandler(stream)
    handler.set_name(_HANDLER_NAME)
    formatter = JsonFormatter(secrets) if log_format is LogFormat.JSON else TextFormatter(secrets)
    handler.setFormatter(formatter)
    root.addHandler(handler)
    default = logging.INFO if log_format is LogFormat.JSON else logging.WARNING
    root.setLevel(level if level is not None else default)
    # Alembic announces each of its plugins at INFO when a store is opened: nothing about
    # the store (its "Running upgrade" lines stay).
    logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)
    return handler
