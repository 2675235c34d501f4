"""Reading enrollments from a JSON file (offline runs, explain, tests)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from engine.errors import InputError


def read_enrollments_file(path: Path) -> list[Any]:
    """Enrollments from a JSON file: a list, or the API's ``{"enrollments": [...]}`` answer.

    Items are returned as they are; the evaluator turns items that are not objects into
    ``error`` decisions, so one bad record does not stop a run.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise InputError(f"{path}: no such file") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: cannot read the file: {exc}") from exc
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(f"{path}:{exc.lineno}:{exc.colno}: invalid JSON: {exc.msg}") from exc
    except RecursionError as exc:
        raise InputError(f"{path}: JSON nested too deeply") from exc
    return enrollments_from_json(data, str(path))


def enrollments_from_json(data: Any, source: str) -> list[Any]:
    if isinstance(data, dict) and "enrollments" in data:
        data = data["enrollments"]
    if not isinstance(data, list):
        raise InputError(
            f'{source}: expected a list of enrollments or {{"enrollments": [...]}}, '
            f"found {type(data).__name__}"
        )
    return data
