"""Argument types and the options several commands share."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TypeAlias

# What ``add_subparsers`` returns: each command module adds its parsers to it.
Commands: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"


def add_db_option(cmd: argparse.ArgumentParser) -> None:
    cmd.add_argument("--db", metavar="URL",
                     help="SQLAlchemy URL of the store (default: $AUTOAPPROVE_DB, else "
                     "sqlite:///autoapprove.db in the working directory)")  # fmt: skip


def add_now(cmd: argparse.ArgumentParser) -> None:
    cmd.add_argument("--now", type=parse_now, metavar="TS",
                     help="evaluation time, ISO 8601 (default: the current UTC time)")  # fmt: skip


def parse_now(text: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an ISO 8601 time (e.g. 2026-11-25T00:00:00Z)"
        ) from exc
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def parse_interval(text: str) -> float:
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    value, unit = text.strip()[:-1], text.strip()[-1:].lower()
    if unit not in units or not value.replace(".", "", 1).isdigit() or float(value) <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not an interval like 30s, 15m, 1h")
    return float(value) * units[unit]


def _number(kind: Callable[[str], Any], check: Callable[[Any], bool], what: str) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            value = None
        if value is None or not check(value):
            raise argparse.ArgumentTypeError(f"{text!r} is not {what}")
        return value

    return parse


positive_int = _number(int, lambda v: v > 0, "a whole number above 0")
non_negative_int = _number(int, lambda v: v >= 0, "a whole number, 0 or more")
positive_float = _number(float, lambda v: v > 0, "a number above 0")
non_negative_float = _number(float, lambda v: v >= 0, "a number, 0 or more")
share = _number(float, lambda v: 0 <= v <= 1, "a share between 0 and 1")
port = _number(int, lambda v: 0 <= v <= 65535, "a port number (0-65535)")


def flip_statuses(text: str, *, option: str = "--decided") -> tuple[str, ...]:
    """``ACTIVE,REJECTED`` as Flip statuses (an argparse type via a lambda or ``flip_status``)."""
    from engine.errors import InputError
    from engine.runs.backtest import parse_statuses

    try:
        return parse_statuses(text, option)
    except InputError as exc:
        raise argparse.ArgumentTypeError(str(exc).split(": ", 1)[1]) from exc


def flip_status(text: str) -> str:
    found = flip_statuses(text, option="--as-status")
    if len(found) != 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not one status")
    return found[0]
