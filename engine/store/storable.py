"""What the databases can hold: text and JSON made storable before they are written.

PostgreSQL refuses NUL characters in text and JSON, and no driver can encode a lone
surrogate (which a lenient JSON parser lets through from the API). Such characters become
U+FFFD on every backend, so one odd value never fails a batch and both behave the same.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from operator import attrgetter
from typing import Any

from engine.policy.decision import Decision, RuleTrace
from engine.policy.text import joined_surrogates


def clean_locations(locations: Sequence[Any] | None) -> list[Any] | None:
    if locations is None:
        return None
    cleaned: list[Any] = []
    for location in locations:
        if isinstance(location, str):
            cleaned.append(storable_text(location))
        elif isinstance(location, Sequence):
            cleaned.append([part if isinstance(part, int) else storable_text(str(part)) for part in location])
        else:
            cleaned.append(storable_text(str(location)))
    return cleaned


_TEXT_FIELDS = (
    "enrollment_id",
    "current_status",
    "status",
    "reason",
    "rule_id",
    "error",
    "updated_at",
    "facts_fingerprint",
)
_LIST_FIELDS = ("group_ids", "current_group_ids", "groups_added", "groups_removed", "warnings")


def _is_storable(text: str) -> bool:
    if "\x00" in text:
        return False
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def storable_text(text: str) -> str:
    if _is_storable(text):
        return text
    return joined_surrogates(text.replace("\x00", "\ufffd"))


def storable_or_none(text: str | None) -> str | None:
    return None if text is None else storable_text(text)


def storable_json(value: Any) -> Any:
    """``value`` as JSON the databases accept: finite numbers, storable text, lists, objects."""
    if value is None or isinstance(value, bool | int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, str):
        return storable_text(value)
    if isinstance(value, Mapping):
        return {storable_text(str(key)): storable_json(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [storable_json(item) for item in value]
    return storable_text(str(value))


_texts_of = attrgetter(*_TEXT_FIELDS)
_lists_of = attrgetter(*_LIST_FIELDS)
# A JSON encode tells whether a trace needs the (slower) cleaning: it fails on non-finite
# numbers and non-JSON values, escapes NUL as \u0000, and leaves a lone surrogate in its
# output, where encoding to UTF-8 then fails.
_CHECKER = json.JSONEncoder(ensure_ascii=False, allow_nan=False)


def _texts_are_storable(decision: Decision) -> bool:
    """One check over all of a decision's text at once (the fast path for 100,000 rows)."""
    texts = [text for text in _texts_of(decision) if text is not None]
    for items in _lists_of(decision):
        texts.extend(items)
    try:
        return _is_storable("".join(texts))
    except TypeError:  # something that is not text: let the slow path look at it
        return False


def _json_is_storable(value: Any) -> bool:
    try:
        encoded = _CHECKER.encode(value)
    except (TypeError, ValueError):
        return False
    return "\\u0000" not in encoded and (encoded.isascii() or _is_storable(encoded))


def _storable_decision(decision: Decision) -> Decision:
    """``decision`` with every text made storable (``decision`` itself when nothing changes)."""
    changes: dict[str, Any] = {}
    for name in _TEXT_FIELDS:
        text = getattr(decision, name)
        if isinstance(text, str) and not _is_storable(text):
            changes[name] = storable_text(text)
    for name in _LIST_FIELDS:
        items = getattr(decision, name)
        if not all(_is_storable(item) for item in items if isinstance(item, str)):
            changes[name] = [storable_json(item) for item in items]
    return replace(decision, **changes) if changes else decision


def _trace_to_json(trace: Iterable[RuleTrace]) -> list[dict[str, Any]]:
    return [{"rule_id": t.rule_id, "kind": t.kind, "matched": t.matched, "reads": t.reads} for t in trace]


def storable_parts(decision: Decision) -> tuple[Decision, list[dict[str, Any]]]:
    """The decision and its JSON trace, cleaned only when something in them needs it."""
    trace = _trace_to_json(decision.trace)
    if trace and not _json_is_storable(trace):
        trace = storable_json(trace)
    if not _texts_are_storable(decision):
        decision = _storable_decision(decision)
    return decision, trace
