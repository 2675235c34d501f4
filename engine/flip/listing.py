"""The enrollment list, streamed: one answer parsed while it arrives, pages followed by cursor.

The answer is parsed with ijson (its C backend through a file-like reader: about 5x faster
than feeding coroutines), so the body is never held together with a parsed copy. Pages
are followed when the answer carries a top-level ``next_cursor`` (or ``next``); that key
lies outside the list, so it is read from the bytes kept before and after it. A truncated
or malformed answer raises ``ApiResponseError`` while iterating.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Generator, Iterator
from typing import Any

import httpx
import ijson

from engine.errors import ApiResponseError

PROBE_BYTES = 64 * 1024  # how much of a list answer is kept to check an empty one


def follow_pages(
    open_page: Callable[[str | None], httpx.Response],
    what: str,
    describe: Callable[[httpx.HTTPError], str],
) -> Iterator[dict[str, Any]]:
    """Every enrollment of every page: ``open_page(cursor)`` opens one (``None``: the first)."""
    cursor: str | None = None
    seen: set[str] = set()
    while True:
        response = open_page(cursor)
        cursor = yield from stream_list(response, what, describe)
        if cursor is None:
            return
        if cursor in seen:
            raise ApiResponseError(f"{what}: the next-page cursor repeats ({cursor!r})")
        seen.add(cursor)


def stream_list(
    response: httpx.Response, what: str, describe: Callable[[httpx.HTTPError], str]
) -> Generator[dict[str, Any], None, str | None]:
    """Yield the enrollments of one open list answer; return its next-page cursor.

    ``describe`` says what went wrong with the transport (without the API key).
    """
    reader = _BodyReader(response.iter_bytes())
    count = 0
    try:
        for item in ijson.items(reader, "enrollments.item", use_float=True):
            if not isinstance(item, dict):
                raise ApiResponseError(f"{what}: an enrollment is a {type(item).__name__}, not an object")
            count += 1
            yield item
    except httpx.HTTPError as exc:
        raise ApiResponseError(f"{what}: the answer was cut off ({describe(exc)})") from exc
    except ijson.JSONError as exc:
        first_line = str(exc).splitlines()[0] if str(exc) else "parse error"
        raise ApiResponseError(f"{what}: the answer is malformed JSON ({first_line})") from exc
    finally:
        response.close()
    if count == 0:
        _check_empty_list(bytes(reader.head), len(reader.head) <= PROBE_BYTES, what)
    return _cursor(_keys_outside_list(reader.head, reader.tail, what), what)


def _check_empty_list(head: bytes, complete: bool, what: str) -> None:
    """No enrollment came out: make sure the answer really was an (empty) list answer."""
    if not complete:
        raise ApiResponseError(f"{what}: the answer has no enrollments list")
    try:
        data = json.loads(head)
    except ValueError as exc:
        raise ApiResponseError(f"{what}: the answer is not JSON") from exc
    if not isinstance(data, dict) or not isinstance(data.get("enrollments"), list):
        raise ApiResponseError(f"{what}: the answer has no enrollments list")


class _BodyReader:
    """A streamed body as a file for ijson, keeping its first and last bytes."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks
        self.head = bytearray()
        self.tail = b""

    def read(self, size: int = -1) -> bytes:
        if size == 0:  # ijson probes with read(0) for the type
            return b""
        chunk = next(self._chunks, b"")
        if len(self.head) <= PROBE_BYTES:
            self.head += chunk[: PROBE_BYTES + 1 - len(self.head)]
        self.tail = (self.tail + chunk)[-PROBE_BYTES:]
        return chunk


def _keys_outside_list(head: bytes | bytearray, tail: bytes, what: str) -> list[Any]:
    """Cursor values among the top-level keys written before or after the enrollments list."""
    before = bytes(head).split(b'"enrollments"', 1)[0].strip().rstrip(b",")
    after = tail[tail.rfind(b"]") + 1 :].strip().lstrip(b",")
    found: list[Any] = []
    for fragment in (before + b"}", b"{" + after):
        try:
            keys = json.loads(fragment) if fragment not in (b"{}", b"}", b"{") else {}
        except ValueError as exc:
            raise ApiResponseError(f"{what}: cannot read the answer's top-level keys") from exc
        if isinstance(keys, dict):
            found.extend(keys[name] for name in ("next_cursor", "next") if name in keys)
    return found


def _cursor(cursors: list[Any], what: str) -> str | None:
    for value in cursors:
        if value is None or value == "":
            continue
        if isinstance(value, str | int) and not isinstance(value, bool):
            return str(value)
        raise ApiResponseError(f"{what}: the next-page cursor is a {type(value).__name__}")
    return None
