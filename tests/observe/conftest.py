"""Fixtures for the operator-facing adapters."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from webhook_receiver import Receiver, serving_receiver


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with serving_receiver() as state:
        yield state
