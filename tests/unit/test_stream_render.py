"""Streaming writers give the same JSON and CSV as the whole-list renderings, and a table
with every change and the summary, holding no decision."""

from __future__ import annotations

import io
import json
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest

from engine.flip.files import read_enrollments_file
from engine.policy.decision import Action
from engine.policy.evaluator import Evaluator
from engine.render.stream import CsvWriter, JsonWriter, TableWriter, decision_writer
from engine.render.text import render_csv, render_json

NOW = datetime(2026, 11, 25, tzinfo=UTC)
REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def decisions(tx_policy):
    raws = read_enrollments_file(REPO_ROOT / "rules" / "samples" / "tx_residential_battery.enrollments.json")
    return list(Evaluator(tx_policy, NOW).evaluate_many(raws))


def stream(writer_type, decisions, **kwargs) -> str:
    out = io.StringIO()
    writer = writer_type(out, **kwargs)
    for decision in decisions:
        writer.write(decision)
    writer.close()
    return out.getvalue()


@pytest.mark.parametrize("count", [0, 1, None])
def test_streamed_json_is_the_same_document(decisions, count) -> None:
    chosen = decisions if count is None else decisions[:count]
    text = stream(JsonWriter, chosen)
    assert text == render_json(chosen) + "\n"
    assert json.loads(text) == json.loads(render_json(chosen))


def test_streamed_csv_is_the_same_document(decisions) -> None:
    assert stream(CsvWriter, decisions) == render_csv(decisions)


def test_streamed_table_lists_the_changes_and_the_summary(decisions) -> None:
    text = stream(TableWriter, decisions, header="Policy X")
    lines = text.splitlines()
    assert lines[0] == "Policy X"
    assert lines[1].startswith("ENROLLMENT")
    for decision in decisions:
        shown = decision.action in (Action.UPDATE, Action.ERROR)
        assert (decision.enrollment_id in text) is shown
    assert f"Summary: {len(decisions)} enrollments" in text


def test_table_with_nothing_to_change_says_so(decisions) -> None:
    unchanged = [d for d in decisions if d.action is Action.SKIP]
    text = stream(TableWriter, unchanged, header="Policy X")
    assert "(no enrollment needs a change)" in text


def test_long_cells_are_clipped_to_keep_columns(decisions) -> None:
    update = next(d for d in decisions if d.action is Action.UPDATE)

    long_id = replace(update, enrollment_id="e" * 80)
    text = stream(TableWriter, [long_id, update], header="P")
    rows = text.splitlines()[2:4]
    assert rows[0].index(update.transition) == rows[1].index(update.transition)


def test_decision_writer_picks_the_format() -> None:
    out = io.StringIO()
    assert isinstance(decision_writer("json", out, "h"), JsonWriter)
    assert isinstance(decision_writer("csv", out, "h"), CsvWriter)
    assert isinstance(decision_writer("table", out, "h"), TableWriter)
