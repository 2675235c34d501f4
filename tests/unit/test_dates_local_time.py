"""Dates read from date-times are UTC dates, whatever the machine's time zone is.

The time zone is the process's own (``TZ``), read once at start: these checks run the date
reading in a child interpreter with ``TZ`` set, the only way to give it another zone.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from engine.policy.logic import parse_date

PROBE = (
    "import json, sys; from engine.policy.logic import days_between, parse_date; "
    "print(json.dumps([str(parse_date(a)) for a in sys.argv[1:]] + "
    "[days_between('2026-03-14T12:00:00Z', '2026-03-15T11:00:00Z')]))"
)


@pytest.mark.parametrize("zone", ["Pacific/Kiritimati", "America/Los_Angeles"])
def test_a_date_time_is_read_as_its_utc_date_in_any_local_zone(zone: str) -> None:
    moments = ["2026-03-14T12:00:00Z", "2026-03-14T23:30:00-05:00", "2026-03-14T01:00:00+03:00"]
    result = subprocess.run(
        [sys.executable, "-c", PROBE, *moments],
        env={**os.environ, "TZ": zone},
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    # UTC+14 would read the first as the 15th, UTC-8 the third as the 13th.
    assert json.loads(result.stdout) == ["2026-03-14", "2026-03-15", "2026-03-13", 1]
    # The same here (the test process's zone); the call also lets mutmut, which picks the
    # tests it saw reach a function in-process, run this test for parse_date's mutants.
    assert [str(parse_date(moment)) for moment in moments] == json.loads(result.stdout)[:3]
