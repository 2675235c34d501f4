"""Decisions written out as they are decided: memory stays flat however large the run.

Each writer takes one decision at a time and keeps only counts; nothing is written before
the first decision (a run whose list fails at once prints nothing). The JSON writer's output
is byte for byte what ``render_json`` gives for the same decisions; the CSV writer's what
``render_csv`` gives. The table prints its rows at once, in fixed-width columns (long
values are clipped), and ends with the summary by transition.
"""

from __future__ import annotations

import csv
import json
from collections import Counter
from typing import Protocol, TextIO

from engine.policy.decision import Action, Decision
from engine.render.text import DECISION_KEYS, csv_row, decision_record, summary_lines

__all__ = ["CsvWriter", "DecisionWriter", "JsonWriter", "TableWriter", "decision_writer"]


class DecisionWriter(Protocol):
    def write(self, decision: Decision, program: str | None = None) -> None: ...

    def close(self) -> None: ...


class JsonWriter:
    """A JSON array, one element per decision, indented as ``render_json`` does."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.count = 0

    def write(self, decision: Decision, program: str | None = None) -> None:
        record = decision_record(decision)
        if program is not None:  # a folder's programs in one array
            record = {"program_id": program, **record}
        text = json.dumps(record, indent=2).replace("\n", "\n  ")
        self.stream.write(("[\n  " if self.count == 0 else ",\n  ") + text)
        self.count += 1

    def close(self) -> None:
        self.stream.write("[]\n" if self.count == 0 else "\n]\n")
        self.stream.flush()


class CsvWriter:
    """A header, then one row per decision (list fields joined with ``;``)."""

    def __init__(self, stream: TextIO, *, program_column: bool = False) -> None:
        self.stream = stream
        fields = [*(["program_id"] if program_column else []), *DECISION_KEYS, "transition"]
        self.writer = csv.DictWriter(stream, fieldnames=fields, lineterminator="\n")
        self.program_column = program_column
        self.started = False

    def _start(self) -> None:
        if not self.started:
            self.writer.writeheader()
            self.started = True

    def write(self, decision: Decision, program: str | None = None) -> None:
        self._start()
        row = csv_row(decision)
        self.writer.writerow({"program_id": program, **row} if self.program_column else row)

    def close(self) -> None:
        self._start()
        self.stream.flush()


# Wide enough for the simulator's and the API's ids and the usual transitions; longer values
# are clipped so the columns stay aligned without holding rows back to measure them.
_WIDTHS = (36, 24, 26, 28)


class TableWriter:
    """What would change and why, a row as each decision comes, then the summary."""

    def __init__(
        self, stream: TextIO, header: str, *, show_unchanged: bool = False, rows: bool = True
    ) -> None:
        self.stream = stream
        self.show_unchanged = show_unchanged
        self.list_rows = rows  # False: the summary only
        self.header = header
        self.transitions: Counter[str] = Counter()
        self.rows = 0
        self.started = False

    def _start(self) -> None:
        if not self.started:
            self.started = True
            self.stream.write(self.header + "\n")
            if self.list_rows:
                self._line(("ENROLLMENT", "CHANGE", "RULE", "GROUPS", "REASON / ERROR"))

    def _line(self, cells: tuple[str, ...]) -> None:
        fixed = [_clip(cell, width).ljust(width) for cell, width in zip(cells, _WIDTHS, strict=False)]
        self.stream.write("  ".join([*fixed, _clip(cells[-1], 70)]).rstrip() + "\n")

    def write(self, decision: Decision, program: str | None = None) -> None:
        self._start()
        self.transitions[decision.transition] += 1
        if not self.list_rows:
            return
        if decision.action is Action.SKIP or (decision.action is Action.NONE and not self.show_unchanged):
            return
        groups = " ".join(
            [*(f"+{g}" for g in decision.groups_added), *(f"-{g}" for g in decision.groups_removed)]
        )
        detail = (decision.error if decision.action is Action.ERROR else decision.reason) or ""
        self._line((decision.enrollment_id or "?", decision.transition, decision.rule_id or "-",
                    groups or "-", detail))  # fmt: skip
        self.rows += 1

    def close(self) -> None:
        self._start()
        if not self.rows and self.list_rows:
            self.stream.write("(no enrollment needs a change)\n")
        self.stream.write("\n" + "\n".join(summary_lines(self.transitions)) + "\n")
        self.stream.flush()


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def decision_writer(
    fmt: str, stream: TextIO, header: str, *, show_unchanged: bool = False, program_column: bool = False
) -> DecisionWriter:
    if fmt == "json":
        return JsonWriter(stream)
    if fmt == "csv":
        return CsvWriter(stream, program_column=program_column)
    return TableWriter(stream, header, show_unchanged=show_unchanged)
