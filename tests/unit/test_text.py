"""The one surrogate repair (``engine.policy.text``), used by YAML loading, evaluation and the store."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.policy.text import joined_surrogates


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("plain", "plain"),
        ("smile \ud83d\ude00", "smile \U0001f600"),
        ("half \ud800 alone", "half \ufffd alone"),
        ("\ude00\ud83d", "\ufffd\ufffd"),  # the halves in the wrong order are not a pair
        ("end \ud83d", "end \ufffd"),
        ("Größe \U0001f600", "Größe \U0001f600"),
    ],
)
def test_pairs_are_joined_and_lone_halves_replaced(text: str, expected: str) -> None:
    assert joined_surrogates(text) == expected


@given(st.text(st.characters(blacklist_categories=())))
def test_the_result_is_always_utf8_and_valid_text_is_kept(text: str) -> None:
    repaired = joined_surrogates(text)
    repaired.encode("utf-8")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return
    assert repaired is text
