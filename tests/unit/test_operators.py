"""Operator validity rules and the readings estimated from them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bot.domain.operators import (
    MIN_AIRTIME_USD_CENTS,
    RECYCLE_AFTER,
    VALIDITY_TIERS,
    Operator,
    cheapest_validity_extension,
    validity_days_for_airtime,
)
from bot.domain.readings import (
    LineReading,
    ReadingSource,
    estimate_from_last_topup,
    recycling_deadline,
)

TOPPED_UP = datetime(2026, 3, 1, 10, 0, tzinfo=UTC)


# --- Operator --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("operator", "value", "name"),
    [
        (Operator.SMART, "smart", "Smart"),
        (Operator.CELLCARD, "cellcard", "Cellcard"),
        (Operator.METFONE, "metfone", "Metfone"),
        (Operator.SEATEL, "seatel", "Seatel"),
    ],
)
def test_operator_values_and_names(operator: Operator, value: str, name: str) -> None:
    assert operator == value
    assert Operator(value) is operator
    assert operator.display_name == name


def test_every_operator_has_rules() -> None:
    assert set(VALIDITY_TIERS) == set(Operator)
    assert set(RECYCLE_AFTER) == set(Operator)


@pytest.mark.parametrize("operator", list(Operator))
def test_tiers_grow_with_the_amount(operator: Operator) -> None:
    tiers = VALIDITY_TIERS[operator]
    assert tiers[0][0] == MIN_AIRTIME_USD_CENTS
    thresholds = [cents for cents, _ in tiers]
    days = [d for _, d in tiers]
    assert thresholds == sorted(set(thresholds))
    assert days == sorted(set(days))


# --- validity_days_for_airtime ---------------------------------------------------------


@pytest.mark.parametrize(
    ("usd_cents", "days"),
    [
        (100, 8),
        (200, 16),
        (500, 40),
        (1000, 70),
        (2000, 100),
        (0, 0),
        (-500, 0),
        (1, 0),
        (99, 0),
        (150, 8),
        (199, 8),
        (499, 16),
        (501, 40),
        (999, 40),
        (1999, 70),
        (5000, 100),
        (100_000, 100),
    ],
)
def test_smart_validity_tiers(usd_cents: int, days: int) -> None:
    assert validity_days_for_airtime(Operator.SMART, usd_cents) == days


@pytest.mark.parametrize(
    ("operator", "usd_cents", "days"),
    [
        (Operator.CELLCARD, 100, 7),
        (Operator.CELLCARD, 500, 35),
        (Operator.CELLCARD, 2000, 100),
        (Operator.METFONE, 500, 38),
        (Operator.METFONE, 2000, 120),
        (Operator.SEATEL, 100, 10),
        (Operator.SEATEL, 1000, 90),
        (Operator.SEATEL, 2500, 180),
        (Operator.SEATEL, 99, 0),
    ],
)
def test_other_operators_tiers(operator: Operator, usd_cents: int, days: int) -> None:
    assert validity_days_for_airtime(operator, usd_cents) == days


@given(st.sampled_from(list(Operator)), st.integers(-10_000, 100_000),
       st.integers(0, 100_000))
def test_validity_is_the_largest_tier_at_or_below(
    operator: Operator, usd_cents: int, extra: int
) -> None:
    days = validity_days_for_airtime(operator, usd_cents)
    eligible = [d for cents, d in VALIDITY_TIERS[operator] if cents <= usd_cents]
    assert days == (max(eligible) if eligible else 0)
    # paying more never buys fewer days
    assert validity_days_for_airtime(operator, usd_cents + extra) >= days


# --- cheapest_validity_extension -------------------------------------------------------


@pytest.mark.parametrize(
    ("operator", "expected"),
    [
        (Operator.SMART, (100, 8)),
        (Operator.CELLCARD, (100, 7)),
        (Operator.METFONE, (100, 7)),
        (Operator.SEATEL, (100, 10)),
    ],
)
def test_cheapest_validity_extension(operator: Operator, expected: tuple[int, int]) -> None:
    cents, days = cheapest_validity_extension(operator)
    assert (cents, days) == expected
    assert validity_days_for_airtime(operator, cents) == days
    assert validity_days_for_airtime(operator, cents - 1) == 0


# --- readings --------------------------------------------------------------------------


def test_estimate_from_last_topup_smart_five_dollars() -> None:
    reading = estimate_from_last_topup(Operator.SMART, TOPPED_UP, 500)
    assert reading == LineReading(
        source=ReadingSource.ESTIMATE,
        read_at=TOPPED_UP,
        validity_end=datetime(2026, 4, 10, 10, 0, tzinfo=UTC),
    )
    assert reading.balance is None
    assert reading.data_mb is None


@pytest.mark.parametrize(
    ("operator", "usd_cents", "days"),
    [
        (Operator.SMART, 100, 8),
        (Operator.SMART, 1999, 70),
        (Operator.CELLCARD, 2000, 100),
        (Operator.SEATEL, 2000, 180),
    ],
)
def test_estimate_validity_end(operator: Operator, usd_cents: int, days: int) -> None:
    reading = estimate_from_last_topup(operator, TOPPED_UP, usd_cents)
    assert reading.source is ReadingSource.ESTIMATE
    assert reading.validity_end == TOPPED_UP + timedelta(days=days)


def test_estimate_below_the_smallest_tier_adds_nothing() -> None:
    reading = estimate_from_last_topup(Operator.SMART, TOPPED_UP, 50)
    assert reading.validity_end == TOPPED_UP


def test_estimate_keeps_the_zone_of_the_top_up() -> None:
    topped_up = datetime(2026, 3, 1, 17, 0, tzinfo=ZoneInfo("Asia/Phnom_Penh"))
    reading = estimate_from_last_topup(Operator.METFONE, topped_up, 1000)
    assert reading.validity_end == topped_up + timedelta(days=70)
    assert reading.validity_end is not None
    assert reading.validity_end.utcoffset() == timedelta(hours=7)


@pytest.mark.parametrize(
    ("operator", "days"),
    [
        (Operator.SMART, 68),
        (Operator.CELLCARD, 90),
        (Operator.METFONE, 90),
        (Operator.SEATEL, 90),
    ],
)
def test_recycling_deadline(operator: Operator, days: int) -> None:
    assert recycling_deadline(operator, TOPPED_UP) == TOPPED_UP + timedelta(days=days)


def test_recycling_deadline_dates() -> None:
    assert recycling_deadline(Operator.SMART, TOPPED_UP) == datetime(
        2026, 5, 8, 10, 0, tzinfo=UTC)
    assert recycling_deadline(Operator.CELLCARD, TOPPED_UP) == datetime(
        2026, 5, 30, 10, 0, tzinfo=UTC)
