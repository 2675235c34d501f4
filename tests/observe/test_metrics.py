"""The metrics file: the named gauges, labelled by program, every program in one file,
replaced atomically."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from engine.errors import InputError
from engine.observe.metrics import check_metrics_path, write_metrics
from engine.runs.summary import RunSummary

T0 = datetime(2026, 11, 25, 8, 0, tzinfo=UTC)


def samples(path: Path) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    found = {}
    for family in text_string_to_metric_families(path.read_text(encoding="utf-8")):
        for sample in family.samples:
            found[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return found


def key(name: str, **labels: str) -> tuple[str, frozenset[tuple[str, str]]]:
    return name, frozenset(labels.items())


def test_the_named_series_for_every_program_of_a_folder_run(tmp_path) -> None:
    path = tmp_path / "autoapprove.prom"
    tx = RunSummary(
        "prog-tx", "completed", 0, live=True, run_id=4, started_at=T0, duration_s=12.5,
        decisions={"update": 3, "none": 90}, changes={"applied": 2, "held": 1}, unchanged=88,
    )  # fmt: skip
    ca = RunSummary("prog-ca", "locked", 4, live=True, started_at=T0, duration_s=0.1)
    write_metrics(path, [tx, ca])
    got = samples(path)
    assert got[key("autoapprove_last_run_timestamp_seconds", program="prog-tx")] == T0.timestamp() + 12.5
    assert got[key("autoapprove_last_run_duration_seconds", program="prog-tx")] == 12.5
    assert got[key("autoapprove_last_run_decisions", program="prog-tx", action="update")] == 3
    assert got[key("autoapprove_last_run_decisions", program="prog-tx", action="error")] == 0
    assert got[key("autoapprove_last_run_changes", program="prog-tx", state="applied")] == 2
    assert got[key("autoapprove_last_run_changes", program="prog-tx", state="held")] == 1
    assert got[key("autoapprove_last_run_changes", program="prog-tx", state="failed_permanent")] == 0
    assert got[key("autoapprove_last_run_outcome", program="prog-tx", outcome="completed")] == 1
    assert got[key("autoapprove_last_run_outcome", program="prog-tx", outcome="failed")] == 0
    assert got[key("autoapprove_last_run_unchanged", program="prog-tx")] == 88
    assert got[key("autoapprove_last_run_outcome", program="prog-ca", outcome="locked")] == 1
    assert got[key("autoapprove_last_run_outcome", program="prog-ca", outcome="completed")] == 0
    assert got[key("autoapprove_last_run_exit_code", program="prog-ca")] == 4
    assert list(tmp_path.iterdir()) == [path]  # the temporary file was renamed, not left behind


def test_a_later_run_of_the_same_program_replaces_its_series(tmp_path) -> None:
    path = tmp_path / "m.prom"
    first = RunSummary("prog-tx", "failed", 6, live=False, started_at=T0, duration_s=1.0)
    write_metrics(path, [first])
    second = RunSummary("prog-tx", "completed", 0, live=False, started_at=T0, duration_s=2.0)
    write_metrics(path, [first, second])
    got = samples(path)
    assert got[key("autoapprove_last_run_outcome", program="prog-tx", outcome="completed")] == 1
    assert got[key("autoapprove_last_run_outcome", program="prog-tx", outcome="failed")] == 0
    assert got[key("autoapprove_last_run_duration_seconds", program="prog-tx")] == 2.0


def test_a_metrics_path_in_a_missing_folder_is_refused_up_front(tmp_path) -> None:
    with pytest.raises(InputError, match="does not exist"):
        check_metrics_path(tmp_path / "nope" / "m.prom")
    with pytest.raises(InputError, match="is a folder"):
        check_metrics_path(tmp_path)
    check_metrics_path(tmp_path / "m.prom")
