"""Self-contained HTML reports: a header, summary cards, then a table of decision-like rows.

One file, no network: the CSS and JavaScript are inline, the data the scripts need is JSON in
``<script type="application/json">`` blocks, and the table renders only the rows in view, so a
report of 100,000 rows opens in a second or two and filters at typing speed. Everything that
came from the API (enrollment fields, reasons, rule ids, values) is untrusted: the template is
rendered by Jinja2 with autoescaping, the embedded JSON has ``<``, ``>`` and ``&`` written as
``\\u003c`` etc. (so ``</script>`` or ``<!--`` in a value cannot end the block), and the page's
script writes data into the DOM with ``textContent`` only, never as markup.

Building a page (every command's report is one of these; plain data in, a string out)::

    from engine.render.html import (
        Bar, BarsCard, Column, Detail, DetailSection, DetailTable, ListCard, Page, Row,
        StatCard, Table, render_page,
    )

    details = DetailTable()  # explanations, interned: 100,000 of them stay small
    rows = [Row({"enrollment_id": "e-1", "status": "ACTIVE", "reason": "ok"},
                detail=details.add(Detail(summary="ACTIVE by approve", sections=[...])))]
    page = Page(
        title="Dry-run preview",
        facts=[("Policy", "Texas battery"), ("Program", "prog-tx"), ("Mode", "dry run")],
        cards=[StatCard("Enrollments", 1), BarsCard("By transition", [Bar("SUBMITTED -> ACTIVE", 1)],
               filter_key="transition")],
        table=Table(columns=[Column("enrollment_id", "Enrollment", mono=True),
                             Column("status", "Status", filter=True, badge=True),
                             Column("reason", "Reason", width="minmax(14em, 3fr)")],
                    rows=rows, details=details, noun="enrollments"),
    )
    html_text = render_page(page)

- ``Column(filter=True)`` adds a drop-down of that column's values; ``hidden=True`` makes a
  filter-only column; ``sort="number"`` sorts numerically (cells are then numbers); every
  visible text column is searched. A ``BarsCard`` or ``ListCard`` with ``filter_key`` turns its
  entries into buttons that set that column's filter. ``Column(split=", ")`` is a cell that
  lists several values ("status, reason"): its filter offers each value and keeps the rows
  that list it. ``Bar(of=N)`` draws a share of N ("3 of 7 · 42.9%") instead of a count.
- ``TableCard`` is a small table among the cards (a confusion matrix, rule hits before and
  after); a ``Mark`` cell has a tone, and with ``filter_value`` (and the card's ``filter_key``)
  it is a button that filters the table. ``Table(hint=...)`` says what an opened row shows.
- ``Detail`` is what a row expands into: a summary line, notes (data warnings), and sections of
  ``RuleStep`` (rule id, kind, verdict, the values it read, the sub-conditions that decided it).
  ``explanation_section`` in ``engine.render.decisions_html`` makes a section from an engine
  ``Explanation``; a diff shows two sections (before/after) in one ``Detail``.
- ``engine.render.decisions_html`` has the pieces for decisions (``run``, ``plan``, ``diff``,
  ``backtest``): ``ExplainedDecisions(policy, now)`` is called with ``(raw, decision)`` for each
  enrollment (pass it as ``on_evaluated=`` to ``RunService``/``run_policy``, or call it in an
  offline loop) and keeps a compact explanation of each; ``.page(ReportContext.for_policy(
  policy, title=..., mode=..., program_id=..., evaluated_at=now), decisions, notes=[...],
  extra_cards=[...])`` gives the whole ``Page``. ``DECISION_COLUMNS``, ``decision_cells``,
  ``summary_cards``, ``explanation_detail`` and ``explanation_section`` are there to reuse for a
  page of a different shape (a review queue: its own columns, the same badges and cards; a
  diff: one ``Detail`` with a "before" and an "after" section). Personal data: use
  ``explanation_detail``/``rule_step`` (they withhold names, email and street address) rather
  than building ``RuleStep`` reads by hand.
"""

from __future__ import annotations

import base64
import gc
import hashlib
import json
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from typing import Any, Literal

import jinja2
from markupsafe import Markup

Cell = str | int | float | None
Tone = Literal["good", "bad", "warn", "info", "neutral", "muted"]
Verdict = Literal["match", "no match", "error", "skipped"]

__all__ = [
    "Bar",
    "BarsCard",
    "Card",
    "Cell",
    "Column",
    "Detail",
    "DetailSection",
    "DetailTable",
    "ListCard",
    "Mark",
    "Page",
    "Row",
    "RuleStep",
    "StatCard",
    "Table",
    "TableCard",
    "Tone",
    "Verdict",
    "render_page",
    "script_json",
]


# --- the page model -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StatCard:
    """One number (or short text) with a label and an optional note under it."""

    label: str
    value: int | str
    note: str | None = None
    tone: Tone = "neutral"


@dataclass(frozen=True, slots=True)
class Bar:
    """One bar. With ``of``, a share of that total (``3 of 7 · 42.9%``, the fill 3/7 of the
    track); without, a count drawn against the card's longest bar."""

    label: str
    value: int
    tone: Tone = "neutral"
    of: int | None = None


@dataclass(frozen=True, slots=True)
class BarsCard:
    """A horizontal bar chart drawn with CSS; ``filter_key`` makes each bar filter the table."""

    label: str
    bars: Sequence[Bar]
    filter_key: str | None = None
    empty: str = "nothing to show"


@dataclass(frozen=True, slots=True)
class ListCard:
    """Label/value lines (data warnings, change states); ``filter_key`` as for ``BarsCard``."""

    label: str
    items: Sequence[tuple[str, int | str]]
    filter_key: str | None = None
    empty: str = "none"
    tone: Tone = "neutral"


@dataclass(frozen=True, slots=True)
class Mark:
    """A cell of a ``TableCard`` drawn in a tone; with ``filter_value`` a button that sets the
    card's ``filter_key`` filter of the table to it."""

    value: int | str
    tone: Tone = "neutral"
    filter_value: str | None = None


@dataclass(frozen=True, slots=True)
class TableCard:
    """A small table among the cards (a confusion matrix, rule hits before and after): a header
    row, then rows whose first cell names them. Numbers are right-aligned."""

    label: str
    columns: Sequence[str]
    rows: Sequence[Sequence[int | str | Mark]]
    note: str | None = None
    filter_key: str | None = None
    empty: str = "nothing to show"
    row_span: int = 1  # as tall as this many rows of cards (the charts beside it stack up)


Card = StatCard | BarsCard | ListCard | TableCard


@dataclass(frozen=True, slots=True)
class Column:
    """A table column. ``key`` names the cell in each ``Row``."""

    key: str
    label: str
    filter: bool = False
    hidden: bool = False  # filter-only (e.g. the transition a bar chart filters by)
    sort: Literal["text", "number"] = "text"
    width: str = "minmax(8em, 1fr)"  # a CSS grid track
    mono: bool = False
    badge: bool = False  # statuses and actions: drawn as coloured pills
    split: str | None = None  # the cell lists values ("status, reason"): the filter offers each one


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


@dataclass(frozen=True, slots=True)
class Row:
    cells: Mapping[str, Cell]
    detail: int | None = None  # an id from the table's DetailTable


class DetailTable:
    """Row explanations, interned as they are added: equal strings, rule steps and whole
    details are stored once, so memory and file size grow with what differs between rows."""

    def __init__(self) -> None:
        self._strings = _Interner()
        self._steps: dict[tuple[Any, ...], int] = {}
        self._details: dict[tuple[Any, ...], int] = {}

    def __len__(self) -> int:
        return len(self._details)

    def add(self, detail: Detail) -> int:
        """Store ``detail``; the id to put in ``Row.detail``."""
        text = self._strings.id
        sections = tuple(
            (text(section.title), tuple(self._step(step) for step in section.steps), text(section.note))
            for section in detail.sections
        )
        key = (text(detail.summary), tuple(text(note) for note in detail.notes), sections)
        return self._details.setdefault(key, len(self._details))

    def _step(self, step: RuleStep) -> int:
        text = self._strings.id
        reads = tuple(
            x for path, value, missing in step.reads for x in (text(path), text(value), int(missing))
        )
        decided = tuple(x for expression, value in step.decided_by for x in (text(expression), text(value)))
        verdict = _VERDICTS.index(step.verdict)
        key = (text(step.rule_id), text(step.kind), verdict, reads, decided, text(step.error))
        return self._steps.setdefault(key, len(self._steps))

    def payload(self) -> dict[str, Any]:
        """The JSON the page's script reads (lazily, on the first expanded row)."""
        return {
            "strings": self._strings.values,
            "steps": [
                [rule, kind, verdict, list(reads), list(decided), error]
                for rule, kind, verdict, reads, decided, error in self._steps
            ],
            "details": [
                [summary, list(notes), [[title, list(steps), note] for title, steps, note in sections]]
                for summary, notes, sections in self._details
            ],
        }


_VERDICTS: tuple[Verdict, ...] = ("no match", "match", "error", "skipped")


@dataclass(frozen=True, slots=True)
class Table:
    columns: Sequence[Column]
    rows: Sequence[Row]
    details: DetailTable | None = None
    noun: str = "rows"  # "Showing 12 of 40 enrollments"
    empty: str = "Nothing to show."
    hint: str = (
        "Click a row (or press Enter on it) to see why: each rule in order, the values it read and "
        "what decided it."
    )


@dataclass(frozen=True, slots=True)
class Page:
    title: str
    facts: Sequence[tuple[str, str]] = ()  # the header's label/value pairs
    cards: Sequence[Card] = ()
    table: Table | None = None
    notes: Sequence[str] = field(default_factory=tuple)  # plain sentences under the header


# --- rendering ------------------------------------------------------------------------------


def render_page(page: Page) -> str:
    """The page as one self-contained HTML document."""
    table = page.table
    assets = _assets()
    with _collector_paused():
        table_json = script_json(_table_payload(table)) if table is not None else None
        details_json = script_json(table.details.payload()) if table and table.details else None
    return _template().render(
        page=page,
        style=assets.style,
        script=assets.script,
        script_hash=assets.script_hash,
        cards=[_card_view(card) for card in page.cards],
        table_json=table_json,
        details_json=details_json,
    )


@contextmanager
def _collector_paused() -> Iterator[None]:
    """Building the payload makes millions of small acyclic lists: the cyclic garbage
    collector would walk them all again and again (measured: it doubled the render time)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def script_json(value: Any) -> Markup:
    """JSON safe inside ``<script type="application/json">``: ``<``, ``>``, ``&`` and the
    JavaScript line separators are ``\\u`` escapes, so no value can close the block or open a
    comment, and ``JSON.parse`` of the element's text gives ``value`` back."""
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    for char, escape in _SCRIPT_ESCAPES:
        text = text.replace(char, escape)
    return Markup(text)  # noqa: S704 - every character that could end the block is escaped above


_SCRIPT_ESCAPES = (
    ("&", "\\u0026"), ("<", "\\u003c"), (">", "\\u003e"), ("\u2028", "\\u2028"), ("\u2029", "\\u2029"),
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class _Assets:
    style: Markup
    script: Markup
    script_hash: str  # the page's Content-Security-Policy lets only this script run


@lru_cache(maxsize=1)
def _assets() -> _Assets:
    folder = resources.files("engine.render") / "templates"
    style = (folder / "report.css").read_text(encoding="utf-8")
    script = (folder / "report.js").read_text(encoding="utf-8")
    digest = base64.b64encode(hashlib.sha256(script.encode("utf-8")).digest()).decode("ascii")
    # Our own files, shipped in the package: markup by design, nothing from the data.
    return _Assets(Markup(style), Markup(script), f"sha256-{digest}")  # noqa: S704


@lru_cache(maxsize=1)
def _template() -> jinja2.Template:
    # Built on first use, never at import; autoescaping on for everything the template prints.
    environment = jinja2.Environment(
        loader=jinja2.PackageLoader("engine.render", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    return environment.get_template("report.html.j2")


def _card_view(card: Card) -> dict[str, Any]:
    if isinstance(card, StatCard):
        value = f"{card.value:,}" if isinstance(card.value, int) else card.value
        return {"kind": "stat", "label": card.label, "value": value, "note": card.note, "tone": card.tone}
    if isinstance(card, BarsCard):
        top = max((bar.value for bar in card.bars if bar.of is None), default=0) or 1
        bars = [_bar_view(bar, top) for bar in card.bars]
        return {
            "kind": "bars",
            "label": card.label,
            "bars": bars,
            "filter": card.filter_key,
            "empty": card.empty,
        }
    if isinstance(card, TableCard):
        return {
            "kind": "table", "label": card.label, "columns": list(card.columns),
            "rows": [[_mark_view(cell) for cell in row] for row in card.rows], "note": card.note,
            "filter": card.filter_key, "empty": card.empty, "row_span": card.row_span,
        }  # fmt: skip
    items = [(label, f"{value:,}" if isinstance(value, int) else value) for label, value in card.items]
    return {
        "kind": "list", "label": card.label, "entries": items, "filter": card.filter_key,
        "empty": card.empty, "tone": card.tone,
    }  # fmt: skip


def _bar_view(bar: Bar, top: int) -> dict[str, Any]:
    if bar.of is None:
        value, percent = f"{bar.value:,}", round(100 * bar.value / top, 1)
    elif bar.of:
        share = 100 * bar.value / bar.of
        value, percent = f"{bar.value:,} of {bar.of:,} \u00b7 {share:.1f}%", round(share, 1)
    else:
        value, percent = "0 of 0", 0.0
    return {"label": bar.label, "value": value, "tone": bar.tone, "percent": percent}


def _mark_view(cell: int | str | Mark) -> dict[str, Any]:
    mark = cell if isinstance(cell, Mark) else Mark(cell)
    value = mark.value
    return {
        "text": f"{value:,}" if isinstance(value, int) else value,
        "number": isinstance(value, int),
        "tone": mark.tone,
        "filter_value": mark.filter_value,
    }


def _table_payload(table: Table) -> dict[str, Any]:
    """Rows as one flat array (``len(columns) + 1`` numbers per row, the last the detail id);
    a text cell is an index into its column's ``strings`` (-1 for none), a numeric one a number.

    Each column's strings are sorted (case-insensitively), so a cell is also its sort key (the
    page sorts 100,000 rows by comparing numbers), and a column of a few statuses costs a
    digit or two per row.
    """
    columns = list(table.columns)
    rows = table.rows
    strings: list[list[str]] = []
    encoded: list[list[int | float | None]] = []
    for column in columns:
        values = [row.cells.get(column.key) for row in rows]
        if column.sort == "number":
            strings.append([])
            encoded.append([v if isinstance(v, int | float) and _is_number(v) else None for v in values])
            continue
        texts = sorted({str(v) for v in values if v is not None}, key=lambda text: (text.casefold(), text))
        ids = {text: index for index, text in enumerate(texts)}
        strings.append(texts)
        encoded.append([-1 if v is None else ids[str(v)] for v in values])
    encoded.append([-1 if row.detail is None else row.detail for row in rows])
    return {
        "columns": [
            {
                "key": c.key, "label": c.label, "filter": c.filter, "hidden": c.hidden, "sort": c.sort,
                "width": c.width, "mono": c.mono, "badge": c.badge, "split": c.split,
            }
            for c in columns
        ],
        "strings": strings,
        "cells": [cell for row_cells in zip(*encoded, strict=True) for cell in row_cells],
        "noun": table.noun,
        "empty": table.empty,
    }  # fmt: skip


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


class _Interner:
    """Each distinct string once; ``None`` is -1."""

    __slots__ = ("_ids", "values")

    def __init__(self) -> None:
        self._ids: dict[str, int] = {}
        self.values: list[str] = []

    def id(self, text: str | None) -> int:
        if text is None:
            return -1
        found = self._ids.get(text)
        if found is None:
            found = self._ids[text] = len(self.values)
            self.values.append(text)
        return found
