"""Whole numbers as people type them: ASCII or Khmer digits, nothing else."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bot.domain.numbers import whole_number


@pytest.mark.parametrize(("text", "number"), [
    ("15", 15), (" 007 ", 7), ("១៥", 15), ("0", 0), ("9" * 18, int("9" * 18)),
])
def test_digits_read_as_their_number(text: str, number: int) -> None:
    assert whole_number(text) == number


@pytest.mark.parametrize("text", [
    "", " ", "²", "1²", "¹⁰", "٣", "-1", "+1", "1.5", "1 000", "1e3", "12a", "9" * 19, "x" * 4000,
])
def test_anything_else_is_none(text: str) -> None:
    assert whole_number(text) is None


def test_the_length_limit_is_the_callers() -> None:
    assert whole_number("12345", max_digits=4) is None
    assert whole_number("1234", max_digits=4) == 1234


@given(st.text(max_size=30))
def test_never_raises_and_a_number_is_what_was_typed(text: str) -> None:
    number = whole_number(text)
    if number is not None:
        assert str(number) == text.strip().translate(
            str.maketrans("០១២៣៤៥៦៧៨៩", "0123456789")).lstrip("0") or number == 0
