"""Masked payment references: enough to tell two apart, never the whole reference."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from bot.domain.references import masked_reference


def test_a_charge_id_shows_its_last_four_characters() -> None:
    assert masked_reference("stxAbCdEf123") == "…f123"
    assert masked_reference("cash 77") == "…77"


@given(st.text(min_size=0, max_size=200))
def test_a_masked_reference_never_shows_more_than_half_or_four_characters(ref: str) -> None:
    shown = masked_reference(ref).removeprefix("…")
    assert len(shown) <= min(4, len(ref.strip()) // 2)
    assert ref.strip().endswith(shown)
