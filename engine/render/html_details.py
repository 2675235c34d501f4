"""What a row of a report opens into (``Detail``: a summary, notes, sections of rule steps),
and the table that interns them for the page.

``DetailTable`` stores equal strings, rule steps and whole details once. Without a window it
remembers every one (a page built in memory: ``payload()`` is everything). With a window it
remembers only the recent ones and hands out what is new in chunks (``drain()``), so a page
written as a run goes keeps bounded memory: a detail last seen more than a window ago is
stored again under a new id, which the page shows the same (the file grows a little).
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

Verdict = Literal["match", "no match", "error", "skipped"]

__all__ = ["Detail", "DetailSection", "DetailTable", "RecentIds", "RuleStep", "Verdict"]


@dataclass(frozen=True, slots=True)
class RuleStep:
    """One evaluated rule in an explanation."""

    rule_id: str
    kind: str  # "rule" | "group" | anything the caller means
    verdict: Verdict
    reads: Sequence[tuple[str, str, bool]] = ()  # (path, value as JSON text, missing)
    decided_by: Sequence[tuple[str, str]] = ()  # (sub-condition as JSON text, its value), outermost first
    error: str | None = None


@dataclass(frozen=True, slots=True)
class DetailSection:
    title: str | None
    steps: Sequence[RuleStep]
    note: str | None = None  # a line above the steps (or in their place when there are none)


@dataclass(frozen=True, slots=True)
class Detail:
    """What a row expands into."""

    summary: str | None = None
    notes: Sequence[str] = ()
    sections: Sequence[DetailSection] = ()


class RecentIds:
    """Ids of equal keys, counted from 0 in the order keys are first added.

    Without a window every key is remembered. With one, only the keys used in about the last
    ``window`` to ``2 * window`` additions (two generations of a dict: a key found in the
    older one moves to the newer; when the newer is full, the older is dropped), so memory
    stays bounded however many keys go by; a key seen again after that gets a new id.
    """

    __slots__ = ("_current", "_previous", "_window", "count")

    def __init__(self, window: int | None = None) -> None:
        if window is not None and window < 1:
            raise ValueError("window must be at least 1")
        self._current: dict[Hashable, int] = {}
        self._previous: dict[Hashable, int] = {}
        self._window = window
        self.count = 0

    def get(self, key: Hashable) -> int | None:
        found = self._current.get(key)
        if found is None and self._previous:
            found = self._previous.pop(key, None)
            if found is not None:
                self._keep(key, found)
        return found

    def add(self, key: Hashable) -> int:
        """A new id for ``key`` (call after ``get`` found none)."""
        index = self.count
        self.count += 1
        self._keep(key, index)
        return index

    def _keep(self, key: Hashable, index: int) -> None:
        self._current[key] = index
        if self._window is not None and len(self._current) >= self._window:
            self._previous, self._current = self._current, {}


_VERDICTS: tuple[Verdict, ...] = ("no match", "match", "error", "skipped")


class DetailTable:
    """Row explanations, interned as they are added: equal strings, rule steps and whole
    details are stored once, so memory and file size grow with what differs between rows.

    ``window``: remember only the recent ones (see the module's docstring) and take what is
    new with ``drain()``; without, ``payload()`` is every detail added.
    """

    def __init__(self, window: int | None = None) -> None:
        self._string_ids = RecentIds(window)
        self._step_ids = RecentIds(window)
        self._detail_ids = RecentIds(window)
        self._strings: list[str] = []  # added since the last drain(), each list in id order
        self._steps: list[tuple[Any, ...]] = []
        self._details: list[tuple[Any, ...]] = []

    def __len__(self) -> int:
        """How many details have ids (with a window, one seen again long after counts again)."""
        return self._detail_ids.count

    def add(self, detail: Detail) -> int:
        """Store ``detail``; the id to put in ``Row.detail``."""
        text = self._text
        sections = tuple(
            (text(section.title), tuple(self._step(step) for step in section.steps), text(section.note))
            for section in detail.sections
        )
        key = (text(detail.summary), tuple(text(note) for note in detail.notes), sections)
        found = self._detail_ids.get(key)
        if found is None:
            found = self._detail_ids.add(key)
            self._details.append(key)
        return found

    def _text(self, text: str | None) -> int:
        if text is None:
            return -1
        found = self._string_ids.get(text)
        if found is None:
            found = self._string_ids.add(text)
            self._strings.append(text)
        return found

    def _step(self, step: RuleStep) -> int:
        text = self._text
        reads = tuple(
            x for path, value, missing in step.reads for x in (text(path), text(value), int(missing))
        )
        decided = tuple(x for expression, value in step.decided_by for x in (text(expression), text(value)))
        verdict = _VERDICTS.index(step.verdict)
        key = (text(step.rule_id), text(step.kind), verdict, reads, decided, text(step.error))
        found = self._step_ids.get(key)
        if found is None:
            found = self._step_ids.add(key)
            self._steps.append(key)
        return found

    def payload(self) -> dict[str, Any]:
        """The JSON the page's script reads (lazily, on the first expanded row): everything
        added since the last ``drain()`` (everything, when never drained). The page joins
        the payloads of its chunks in order; ids count across them."""
        return {
            "strings": list(self._strings),
            "steps": [
                [rule, kind, verdict, list(reads), list(decided), error]
                for rule, kind, verdict, reads, decided, error in self._steps
            ],
            "details": [
                [summary, list(notes), [[title, list(steps), note] for title, steps, note in sections]]
                for summary, notes, sections in self._details
            ],
        }

    @property
    def pending(self) -> int:
        """Details added since the last ``drain()``."""
        return len(self._details)

    def drain(self) -> dict[str, Any] | None:
        """The next chunk: ``payload()``, then forget it (None when nothing was added)."""
        if not (self._strings or self._steps or self._details):
            return None
        chunk = self.payload()
        self._strings.clear()
        self._steps.clear()
        self._details.clear()
        return chunk
