"""Self-contained HTML reports: a header, summary cards, then a table of decision-like rows.

One file, no network: the CSS and JavaScript are inline, the data the scripts need is JSON in
``<script type="application/json">`` blocks, and the table renders only the rows in view, so a
report of 100,000 rows opens in a second or two and filters at typing speed. A page is either
written as its rows come (``PageWriter``: a run's report, in memory that does not grow with
the run) or built whole and rendered (``render_page``, which writes through the same writer).
Everything that came from the API (enrollment fields, reasons, rule ids, values) is
untrusted: the template is rendered by Jinja2 with autoescaping, the embedded JSON has ``<``,
``>`` and ``&`` written as ``\\u003c`` etc. (so ``</script>`` or ``<!--`` in a value cannot end
the block), and the page's script writes data into the DOM with ``textContent`` only, never
as markup.

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

    # ... or row by row into a stream; the header and cards (known at the end) go last:
    writer = PageWriter(stream, Table(columns=[...], rows=(), noun="enrollments"))
    for each row: writer.row({"enrollment_id": ..., ...}, Detail(...))
    writer.close(title="Dry-run preview (run 12)", facts=[...], cards=[StatCard(...), ...])

The file of a written page: the head (styles, the Content-Security-Policy), the table's frame
and its columns (``report-table``), the rows in chunks of 1,000 (``report-rows`` blocks, each
with the strings its rows are the first to use, sorted), then the notes, cards and header (written
last because a run's numbers are known at its end; CSS shows them on top and the script moves
them first in the document), the script, and the explanations (``report-details`` chunks,
after the script so the rows show before they are read). While a page is written, its
explanations wait in a temporary file, and the strings, steps and explanations it remembers
to store each once are only the recent ones (filter columns are the exception: their few
values are all kept), so memory stays flat however many rows go by.

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
  ``backtest``): ``HtmlWriter(stream, policy, now, ReportContext.for_policy(policy, title=...,
  mode=..., program_id=..., evaluated_at=now))`` is called with ``(raw, decision)`` for each
  enrollment (pass it as ``on_evaluated=`` to ``RunService``/``run_policy``, with a decision
  sink so the run keeps no list, or call it in an offline loop), writes each row and its
  explanation, and ``close()`` writes the header and cards (``review_html.PlanHtmlWriter``:
  a plan's). ``ExplainedDecisions(policy, now)``, called the same way, keeps a compact
  explanation of each; ``.page(context, decisions, notes=[...], extra_cards=[...])`` gives the
  whole ``Page`` (the same page, for small sets). ``DECISION_COLUMNS``, ``decision_cells``,
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
import io
import json
import shutil
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from typing import Any, Literal, TextIO, TypeGuard

import jinja2
from markupsafe import Markup

from engine.render.html_details import Detail, DetailSection, DetailTable, RecentIds, RuleStep, Verdict

Cell = str | int | float | None
Tone = Literal["good", "bad", "warn", "info", "neutral", "muted"]

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
    "PageWriter",
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
class Row:
    cells: Mapping[str, Cell]
    detail: int | None = None  # an id from the table's DetailTable


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
    """The page as one self-contained HTML document (written by a ``PageWriter``)."""
    buffer = io.StringIO()
    writer = PageWriter(buffer, page.table)
    for row in page.table.rows if page.table is not None else ():
        writer.row(row.cells, row.detail)
    writer.close(title=page.title, facts=page.facts, cards=page.cards, notes=page.notes)
    return buffer.getvalue()


ROWS_PER_CHUNK = 1_000
DETAILS_PER_CHUNK = 1_000
RECENT = 10_000  # strings, rule steps and details a written page remembers to store once


class PageWriter:
    """A page written into ``stream`` as its rows come (the module's docstring shows the file).

    Memory stays bounded: rows go out in chunks of ``ROWS_PER_CHUNK``; a row's ``Detail`` is
    interned among the recent ones and the new ones wait in a temporary file until the end.
    Rows of a ``Table`` that has a ``DetailTable`` give their detail as its id instead (a page
    built in memory); that table is written whole. Nothing is written before the first row
    (or ``close``), so a run that fails at once writes nothing.
    """

    def __init__(
        self, stream: TextIO, table: Table | None, *, rows_per_chunk: int = ROWS_PER_CHUNK,
        details_per_chunk: int = DETAILS_PER_CHUNK, recent: int = RECENT,
    ) -> None:  # fmt: skip
        self.stream = stream
        self.table = table
        self.rows = 0
        self._columns: list[Column] = list(table.columns) if table is not None else []
        self._rows_per_chunk = rows_per_chunk
        self._details_per_chunk = details_per_chunk
        self._given = table.details if table is not None else None  # ids in Row.detail point into it
        self._details = DetailTable(window=recent)
        # Filter columns keep every value (a filter lists each once; there are few); the others
        # only the recent ones (an id column has a new value on every row).
        self._chunk: list[_TextCells | _NumberCells] = [
            _NumberCells()
            if column.sort == "number"
            else _TextCells(RecentIds(None if column.filter else recent))
            for column in self._columns
        ]
        self._detail_ids: list[int] = []
        self._chunk_rows = 0
        self._spool: TextIO | None = None
        self._started = False

    def row(self, cells: Mapping[str, Cell], detail: Detail | int | None = None) -> None:
        """One row: its cells by column key, and what it opens into."""
        if self.table is None:
            raise ValueError("this page has no table")
        self._start()
        for column, values in zip(self._columns, self._chunk, strict=True):
            values.add(cells.get(column.key))
        self._detail_ids.append(self._detail_id(detail))
        self.rows += 1
        self._chunk_rows += 1
        if self._chunk_rows >= self._rows_per_chunk:
            self._write_rows()

    def close(
        self, *, title: str, facts: Sequence[tuple[str, str]] = (), cards: Sequence[Card] = (),
        notes: Sequence[str] = (),
    ) -> None:  # fmt: skip
        """The rest of the page: the header (``title``, ``facts``), ``notes``, ``cards``,
        the script and the explanations. The stream is flushed, not closed."""
        self._start()
        if self._chunk_rows:
            self._write_rows()
        assets = _assets()
        self.stream.write(_template().render(
            part="close", table=self.table is not None, title=title, facts=list(facts), notes=list(notes),
            cards=[_card_view(card) for card in cards], script=assets.script,
        ))  # fmt: skip
        self._write_details()
        self.stream.write(_template().render(part="end"))
        self.stream.flush()

    def abandon(self) -> None:
        """Stop without finishing the page (the run failed): its temporary file goes."""
        if self._spool is not None:
            self._spool.close()
            self._spool = None

    def _start(self) -> None:
        if self._started:
            return
        self._started = True
        assets = _assets()
        table = self.table
        frame = script_json(_table_frame(table)) if table is not None else None
        self.stream.write(_template().render(
            part="open", table=table, table_json=frame, style=assets.style, script_hash=assets.script_hash,
        ))  # fmt: skip

    def _detail_id(self, detail: Detail | int | None) -> int:
        if detail is None:
            return -1
        if isinstance(detail, int):
            return detail  # an id of the table's DetailTable
        if self._given is not None:
            raise ValueError("this table's details are its DetailTable's: give their ids")
        found = self._details.add(detail)
        if self._details.pending >= self._details_per_chunk:
            self._spool_details()
        return found

    def _write_rows(self) -> None:
        flushed = [values.flush() for values in self._chunk]
        columns = [cells for _strings, cells in flushed]
        cells = [cell for row in zip(*columns, self._detail_ids, strict=True) for cell in row]
        chunk = script_json({"strings": [strings for strings, _cells in flushed], "cells": cells})
        self.stream.write(f'<script type="application/json" class="report-rows">{chunk}</script>\n')
        self._detail_ids = []
        self._chunk_rows = 0

    def _spool_details(self) -> None:
        chunk = self._details.drain()
        if chunk is None:
            return
        if self._spool is None:
            self._spool = tempfile.TemporaryFile("w+", encoding="utf-8")  # noqa: SIM115 - closed by close()
        self._spool.write(_details_block(chunk))

    def _write_details(self) -> None:
        if self._given is not None:
            if len(self._given):
                with _collector_paused():
                    self.stream.write(_details_block(self._given.payload()))
            return
        self._spool_details()
        if self._spool is None:
            return
        try:
            self._spool.seek(0)
            shutil.copyfileobj(self._spool, self.stream)
        finally:
            self._spool.close()
            self._spool = None


class _TextCells:
    """A text column's cells of the chunk being written. At the end of the chunk, the strings
    its rows are the first to use get their ids in sort order (case-insensitive, then by code),
    so each chunk's new strings are a sorted run: the page sorts a column by merging them."""

    __slots__ = ("ids", "values")

    def __init__(self, ids: RecentIds) -> None:
        self.ids = ids
        self.values: list[str | None] = []

    def add(self, value: Cell) -> None:
        self.values.append(None if value is None else str(value))

    def flush(self) -> tuple[list[str], list[int]]:
        known: dict[str, int] = {}
        new: set[str] = set()
        for text in self.values:
            if text is not None and text not in known and text not in new:
                found = self.ids.get(text)
                if found is None:
                    new.add(text)
                else:
                    known[text] = found
        added = sorted(new, key=lambda text: (text.casefold(), text))
        known.update((text, self.ids.add(text)) for text in added)
        cells = [-1 if text is None else known[text] for text in self.values]
        self.values = []
        return added, cells


class _NumberCells:
    """A numeric column's cells of the chunk being written: numbers, or None."""

    __slots__ = ("values",)

    def __init__(self) -> None:
        self.values: list[int | float | None] = []

    def add(self, value: Cell) -> None:
        self.values.append(value if _is_number(value) else None)

    def flush(self) -> tuple[list[str], list[int | float | None]]:
        values, self.values = self.values, []
        return [], values


def _details_block(chunk: dict[str, Any]) -> str:
    return f'<script type="application/json" class="report-details">{script_json(chunk)}</script>\n'


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


def _table_frame(table: Table) -> dict[str, Any]:
    """What the page's script needs besides the rows: the columns, the words it uses.

    The rows come in chunks: each a flat array (``len(columns) + 1`` numbers per row, the last
    the detail id) and, per column, the strings its rows are the first to use; a text cell is
    an index into its column's strings joined across chunks (-1 for none), a numeric one a
    number. Each chunk's new strings are sorted (case-insensitively): the page sorts a column's
    strings once, merging these runs, to sort the rows.
    """
    return {
        "columns": [
            {
                "key": c.key, "label": c.label, "filter": c.filter, "hidden": c.hidden, "sort": c.sort,
                "width": c.width, "mono": c.mono, "badge": c.badge, "split": c.split,
            }
            for c in table.columns
        ],
        "noun": table.noun,
        "empty": table.empty,
    }  # fmt: skip


def _is_number(value: Any) -> TypeGuard[int | float]:
    return isinstance(value, int | float) and not isinstance(value, bool)
