"""Months in the user's zone, when the monthly summary is due, and amounts as exported."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bot.domain.history import (
    Month,
    decimal_amount,
    summaries_may_be_due,
    summary_due,
)
from bot.domain.money import CURRENCIES, Money

PHNOM_PENH = ZoneInfo("Asia/Phnom_Penh")
NEW_YORK = ZoneInfo("America/New_York")


def test_a_month_is_the_one_on_the_users_wall() -> None:
    moment = datetime(2026, 11, 30, 18, 30, tzinfo=UTC)  # 1 Dec, 01:30 in Phnom Penh
    assert Month.of(moment, PHNOM_PENH) == Month(2026, 12)
    assert Month.of(moment, NEW_YORK) == Month(2026, 11)


def test_bounds_are_local_midnights_and_follow_a_dst_change() -> None:
    start, end = Month(2026, 11).bounds(NEW_YORK)  # DST ends on 1 Nov 2026
    assert (start.astimezone(UTC), end.astimezone(UTC)) == (
        datetime(2026, 11, 1, 4, 0, tzinfo=UTC), datetime(2026, 12, 1, 5, 0, tzinfo=UTC))
    assert Month(2026, 12).bounds(PHNOM_PENH)[1] == datetime(2027, 1, 1, tzinfo=PHNOM_PENH)


@pytest.mark.parametrize(("key", "month"), [
    ("2026-11", Month(2026, 11)), ("2000-01", Month(2000, 1)), ("2026-13", None),
    ("2026-00", None), ("1999-12", None), ("2026-1", None), ("now", None), ("2026-11\n", None),
    ("٢٠٢٦-١١", None),  # other digits than ASCII ones
])
def test_a_month_key_is_parsed_strictly(key: str, month: Month | None) -> None:
    assert Month.parse(key) == month


@given(st.integers(2001, 9997), st.integers(1, 12))
def test_previous_and_next_are_inverse_and_keys_round_trip(year: int, number: int) -> None:
    month = Month(year, number)
    assert month.next().previous() == month == month.previous().next()
    assert month.previous() < month < month.next()
    assert Month.parse(month.key) == month


@pytest.mark.parametrize(("local", "due"), [
    (datetime(2026, 12, 1, 8, 59), None),  # not before 09:00 on the 1st
    (datetime(2026, 12, 1, 9, 0), Month(2026, 11)),
    (datetime(2026, 12, 3, 23, 59), Month(2026, 11)),  # the bot was down on the 1st
    (datetime(2026, 12, 4, 0, 0), None),  # too late: an old summary is noise
    (datetime(2027, 1, 1, 12, 0), Month(2026, 12)),
    (datetime(2026, 11, 25, 12, 0), None),
])
def test_the_summary_is_due_from_nine_on_the_first_for_three_days(local: datetime,
                                                                  due: Month | None) -> None:
    assert summary_due(local.replace(tzinfo=PHNOM_PENH)) == due


@given(st.datetimes(min_value=datetime(2001, 1, 1), max_value=datetime(9000, 1, 1)),
       st.sampled_from(["Pacific/Kiritimati", "Etc/GMT+12", "Asia/Phnom_Penh",
                        "America/New_York", "Asia/Kathmandu", "UTC"]))
def test_the_job_skips_the_database_only_when_no_zone_can_be_due(moment: datetime,
                                                                 zone: str) -> None:
    now = moment.replace(tzinfo=UTC)
    local = now.astimezone(ZoneInfo(zone))
    if summary_due(local) is not None:
        assert summaries_may_be_due(now)


def test_most_of_a_month_the_job_asks_nothing() -> None:
    assert not summaries_may_be_due(datetime(2026, 11, 25, 2, 0, tzinfo=UTC))
    assert summaries_may_be_due(datetime(2026, 11, 30, 12, 0, tzinfo=UTC))  # 1 Dec in Kiribati
    assert summaries_may_be_due(datetime(2026, 12, 4, 11, 0, tzinfo=UTC))  # 3 Dec at UTC-12
    assert not summaries_may_be_due(datetime(2026, 12, 4, 12, 0, tzinfo=UTC))


@pytest.mark.parametrize(("money", "text"), [
    (Money(500, "USD"), "5.00"), (Money(-5, "USD"), "-0.05"), (Money(0, "USD"), "0.00"),
    (Money(2_000_000, "KHR"), "20000.00"), (Money(500, "XTR"), "500"),
    (Money(100_000_000_000, "USD"), "1000000000.00"),
])
def test_amounts_are_exported_in_their_minor_unit_precision(money: Money, text: str) -> None:
    assert decimal_amount(money) == text


@given(st.integers(-10**15, 10**15), st.sampled_from(sorted(CURRENCIES)))
def test_an_exported_amount_reads_back_as_the_same_minor_units(minor: int,
                                                               currency: str) -> None:
    text = decimal_amount(Money(minor, currency))
    exponent = CURRENCIES[currency].exponent
    assert "E" not in text and len(text.partition(".")[2]) == exponent
    assert Decimal(text).scaleb(exponent) == minor
