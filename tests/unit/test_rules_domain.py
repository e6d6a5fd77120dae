"""Auto-recharge rules as pure decisions: validation reasons, prices, calendars, and when a
change needs a fresh code."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, date, datetime
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bot.domain.money import Money
from bot.domain.operators import Operator
from bot.domain.rules import (
    MAX_DAYS_BEFORE,
    MIN_DAYS_BEFORE,
    Approval,
    CalendarKind,
    RuleError,
    RuleSpec,
    RuleStatus,
    Trigger,
    charge_amount,
    first_run_at,
    keep_alive_amount,
    needs_confirmation,
    schedule_of,
    validate,
)
from bot.domain.schedule import EveryNDays, MonthlyOnDay, WeeklyOn

Reason = RuleError.Reason
PHNOM_PENH = ZoneInfo("Asia/Phnom_Penh")


def usd(cents: int) -> Money:
    return Money(cents, "USD")


def monthly(day: int = 1, amount: int = 500, cap: int = 2000) -> RuleSpec:
    return RuleSpec(trigger=Trigger.CALENDAR, monthly_cap=usd(cap), approval=Approval.ASK,
                    amount=usd(amount), calendar=CalendarKind.MONTHLY, calendar_value=day)


def reason_of(spec: RuleSpec, plan_price: Money | None = None,
              operator: Operator | None = None) -> Reason:
    with pytest.raises(RuleError) as caught:
        validate(spec, plan_price=plan_price, operator=operator)
    return caught.value.reason


# --- enums hold the stored strings ---------------------------------------------------------

def test_enum_values_are_the_stored_strings() -> None:
    assert [t.value for t in Trigger] == ["calendar", "balance_below", "data_below",
                                          "keep_alive"]
    assert [c.value for c in CalendarKind] == ["monthly", "weekly", "every_n"]
    assert [a.value for a in Approval] == ["ask", "auto"]
    assert [s.value for s in RuleStatus] == ["awaiting_otp", "active", "paused", "disabled"]
    assert Trigger("keep_alive") is Trigger.KEEP_ALIVE
    assert str(RuleStatus.AWAITING_OTP) == "awaiting_otp"


# --- validation ----------------------------------------------------------------------------

def test_a_complete_rule_of_each_trigger_is_accepted() -> None:
    validate(monthly(31), plan_price=None)
    validate(RuleSpec(trigger=Trigger.CALENDAR, monthly_cap=usd(1000), approval=Approval.AUTO,
                      amount=usd(100), calendar=CalendarKind.WEEKLY, calendar_value=6),
             plan_price=None)
    validate(RuleSpec(trigger=Trigger.CALENDAR, monthly_cap=usd(1000), approval=Approval.ASK,
                      amount=usd(100), calendar=CalendarKind.EVERY_N, calendar_value=10,
                      calendar_anchor=date(2026, 11, 1)), plan_price=None)
    validate(RuleSpec(trigger=Trigger.BALANCE_BELOW, monthly_cap=usd(1000),
                      approval=Approval.ASK, amount=usd(200), threshold=usd(50)),
             plan_price=None)
    validate(RuleSpec(trigger=Trigger.DATA_BELOW, monthly_cap=usd(1000), approval=Approval.ASK,
                      product_id="smart-data-5120-7d", threshold_mb=500), plan_price=usd(100))
    validate(RuleSpec(trigger=Trigger.KEEP_ALIVE, monthly_cap=usd(500), approval=Approval.AUTO,
                      days_before=3), plan_price=None, operator=Operator.SMART)


def test_nothing_to_buy() -> None:
    assert reason_of(replace(monthly(), amount=None)) is Reason.NOTHING_TO_BUY
    # keep-alive falls back to the operator's cheapest extension, but needs the operator
    keep_alive = RuleSpec(trigger=Trigger.KEEP_ALIVE, monthly_cap=usd(500),
                          approval=Approval.ASK, days_before=3)
    assert reason_of(keep_alive) is Reason.NOTHING_TO_BUY


def test_amount_and_plan_together_are_refused() -> None:
    spec = replace(monthly(), product_id="smart-air-500")
    assert reason_of(spec, plan_price=usd(500)) is Reason.BOTH_AMOUNT_AND_PLAN


def test_plan_not_in_the_catalog_is_unknown() -> None:
    spec = replace(monthly(), amount=None, product_id="smart-air-999")
    assert reason_of(spec, plan_price=None) is Reason.UNKNOWN_PLAN


def test_amount_must_be_positive() -> None:
    assert reason_of(monthly(amount=0)) is Reason.AMOUNT_NOT_POSITIVE
    assert reason_of(monthly(amount=-100)) is Reason.AMOUNT_NOT_POSITIVE


def test_cap_must_be_positive_and_not_absurd() -> None:
    assert reason_of(monthly(amount=100, cap=0)) is Reason.CAP_NOT_POSITIVE
    assert reason_of(monthly(amount=100, cap=1_000_01)) is Reason.CAP_TOO_LARGE
    validate(monthly(amount=100, cap=1_000_00), plan_price=None)  # the limit itself is fine


def test_one_charge_must_fit_in_the_monthly_cap() -> None:
    assert reason_of(monthly(amount=2001, cap=2000)) is Reason.AMOUNT_OVER_CAP
    validate(monthly(amount=2000, cap=2000), plan_price=None)
    plan = replace(monthly(cap=400), amount=None, product_id="smart-air-500")
    assert reason_of(plan, plan_price=usd(500)) is Reason.AMOUNT_OVER_CAP


def test_currencies_must_agree() -> None:
    khr_amount = replace(monthly(), amount=Money(20_000_00, "KHR"))
    assert reason_of(khr_amount) is Reason.CURRENCY_MISMATCH
    plan = RuleSpec(trigger=Trigger.CALENDAR, monthly_cap=Money(80_000_00, "KHR"),
                    approval=Approval.ASK, product_id="smart-air-500",
                    calendar=CalendarKind.MONTHLY, calendar_value=1)
    assert reason_of(plan, plan_price=usd(500)) is Reason.CURRENCY_MISMATCH
    balance = RuleSpec(trigger=Trigger.BALANCE_BELOW, monthly_cap=usd(1000),
                       approval=Approval.ASK, amount=usd(200),
                       threshold=Money(4_000_00, "KHR"))
    assert reason_of(balance) is Reason.CURRENCY_MISMATCH
    keep_alive_in_riel = RuleSpec(trigger=Trigger.KEEP_ALIVE,
                                  monthly_cap=Money(80_000_00, "KHR"),
                                  approval=Approval.ASK, days_before=3)
    assert reason_of(keep_alive_in_riel, operator=Operator.SMART) is Reason.CURRENCY_MISMATCH


def test_riel_rules_are_accepted_and_stars_are_not() -> None:
    validate(RuleSpec(trigger=Trigger.CALENDAR, monthly_cap=Money(80_000_00, "KHR"),
                      approval=Approval.ASK, amount=Money(20_000_00, "KHR"),
                      calendar=CalendarKind.MONTHLY, calendar_value=5), plan_price=None)
    stars = RuleSpec(trigger=Trigger.CALENDAR, monthly_cap=Money(500, "XTR"),
                     approval=Approval.ASK, amount=Money(100, "XTR"),
                     calendar=CalendarKind.MONTHLY, calendar_value=5)
    assert reason_of(stars) is Reason.UNSUPPORTED_CURRENCY


def test_calendar_rules_need_a_calendar() -> None:
    assert reason_of(replace(monthly(), calendar=None)) is Reason.MISSING_CALENDAR
    assert reason_of(replace(monthly(), calendar_value=None)) is Reason.MISSING_CALENDAR
    every_n = replace(monthly(), calendar=CalendarKind.EVERY_N, calendar_value=10)
    assert reason_of(every_n) is Reason.MISSING_CALENDAR  # no anchor to count from


@pytest.mark.parametrize(("kind", "value"), [
    (CalendarKind.MONTHLY, 0), (CalendarKind.MONTHLY, 32),
    (CalendarKind.WEEKLY, -1), (CalendarKind.WEEKLY, 7),
    (CalendarKind.EVERY_N, 0), (CalendarKind.EVERY_N, 366),
])
def test_calendar_values_out_of_range(kind: CalendarKind, value: int) -> None:
    anchor = date(2026, 1, 1) if kind is CalendarKind.EVERY_N else None
    spec = replace(monthly(), calendar=kind, calendar_value=value, calendar_anchor=anchor)
    assert reason_of(spec) is Reason.BAD_CALENDAR_VALUE


@given(kind=st.sampled_from(list(CalendarKind)), value=st.integers(-5, 400))
def test_calendar_value_accepted_iff_in_range(kind: CalendarKind, value: int) -> None:
    ranges = {CalendarKind.MONTHLY: (1, 31), CalendarKind.WEEKLY: (0, 6),
              CalendarKind.EVERY_N: (1, 365)}
    low, high = ranges[kind]
    anchor = date(2026, 1, 1) if kind is CalendarKind.EVERY_N else None
    spec = replace(monthly(), calendar=kind, calendar_value=value, calendar_anchor=anchor)
    if low <= value <= high:
        validate(spec, plan_price=None)
    else:
        assert reason_of(spec) is Reason.BAD_CALENDAR_VALUE


def test_threshold_rules_need_a_positive_threshold() -> None:
    balance = RuleSpec(trigger=Trigger.BALANCE_BELOW, monthly_cap=usd(1000),
                       approval=Approval.ASK, amount=usd(200))
    assert reason_of(balance) is Reason.MISSING_THRESHOLD
    assert reason_of(replace(balance, threshold=usd(0))) is Reason.BAD_THRESHOLD
    data = RuleSpec(trigger=Trigger.DATA_BELOW, monthly_cap=usd(1000), approval=Approval.ASK,
                    amount=usd(200))
    assert reason_of(data) is Reason.MISSING_THRESHOLD
    assert reason_of(replace(data, threshold_mb=0)) is Reason.BAD_THRESHOLD


@given(days=st.one_of(st.none(), st.integers(-3, 30)))
def test_keep_alive_days_before_must_be_1_to_14(days: int | None) -> None:
    spec = RuleSpec(trigger=Trigger.KEEP_ALIVE, monthly_cap=usd(500), approval=Approval.ASK,
                    days_before=days)
    if days is not None and MIN_DAYS_BEFORE <= days <= MAX_DAYS_BEFORE:
        validate(spec, plan_price=None, operator=Operator.CELLCARD)
    else:
        assert reason_of(spec, operator=Operator.CELLCARD) is Reason.BAD_DAYS_BEFORE


def test_settings_of_another_trigger_are_refused() -> None:
    assert reason_of(replace(monthly(), threshold=usd(100))) is Reason.UNEXPECTED_FIELD
    assert reason_of(replace(monthly(), days_before=3)) is Reason.UNEXPECTED_FIELD
    assert reason_of(replace(monthly(), threshold_mb=100)) is Reason.UNEXPECTED_FIELD
    assert reason_of(replace(monthly(), calendar_anchor=date(2026, 1, 1))) is \
        Reason.UNEXPECTED_FIELD
    balance = RuleSpec(trigger=Trigger.BALANCE_BELOW, monthly_cap=usd(1000),
                       approval=Approval.ASK, amount=usd(200), threshold=usd(50),
                       calendar=CalendarKind.MONTHLY, calendar_value=1)
    assert reason_of(balance) is Reason.UNEXPECTED_FIELD


def test_rule_error_carries_its_reason_and_is_a_value_error() -> None:
    error = RuleError(Reason.AMOUNT_OVER_CAP, "5.00 USD > 2.00 USD")
    assert isinstance(error, ValueError)
    assert error.reason is Reason.AMOUNT_OVER_CAP
    assert str(error) == "amount_over_cap: 5.00 USD > 2.00 USD"


# --- prices --------------------------------------------------------------------------------

def test_charge_amount_is_the_amount_or_the_plan_price() -> None:
    assert charge_amount(monthly(amount=700), None) == usd(700)
    plan = replace(monthly(), amount=None, product_id="cellcard-air-500")
    assert charge_amount(plan, usd(500)) == usd(500)
    with pytest.raises(RuleError) as caught:
        charge_amount(plan, None)
    assert caught.value.reason is Reason.UNKNOWN_PLAN


@pytest.mark.parametrize("operator", list(Operator))
def test_keep_alive_buys_the_cheapest_validity_extension(operator: Operator) -> None:
    assert keep_alive_amount(operator) == usd(100)  # every operator's smallest tier is $1
    spec = RuleSpec(trigger=Trigger.KEEP_ALIVE, monthly_cap=usd(500), approval=Approval.ASK,
                    days_before=2)
    assert charge_amount(spec, None, operator=operator) == keep_alive_amount(operator)
    # an amount the user chose wins over the default
    assert charge_amount(replace(spec, amount=usd(500)), None, operator=operator) == usd(500)


# --- calendars -----------------------------------------------------------------------------

def test_schedule_of_each_calendar_and_none_for_other_triggers() -> None:
    assert schedule_of(monthly(31)) == MonthlyOnDay(31)
    assert schedule_of(replace(monthly(), calendar=CalendarKind.WEEKLY,
                               calendar_value=4)) == WeeklyOn(4)
    anchor = date(2026, 11, 20)
    assert schedule_of(replace(monthly(), calendar=CalendarKind.EVERY_N, calendar_value=10,
                               calendar_anchor=anchor)) == EveryNDays(10, anchor)
    balance = RuleSpec(trigger=Trigger.BALANCE_BELOW, monthly_cap=usd(1000),
                       approval=Approval.ASK, amount=usd(200), threshold=usd(50))
    assert schedule_of(balance) is None


def test_first_run_of_day_31_in_november_is_the_30th_at_nine_local() -> None:
    now = datetime(2026, 11, 25, 2, 0, tzinfo=UTC)  # 09:00 in Phnom Penh
    first = first_run_at(monthly(31), now, PHNOM_PENH)
    assert first == datetime(2026, 11, 30, 2, 0, tzinfo=UTC)
    assert first is not None and first.astimezone(PHNOM_PENH).hour == 9


def test_first_run_is_strictly_after_now() -> None:
    at_nine = datetime(2026, 11, 30, 2, 0, tzinfo=UTC)  # the 30th, 09:00 local exactly
    assert first_run_at(monthly(30), at_nine, PHNOM_PENH) == datetime(2026, 12, 30, 2, 0,
                                                                       tzinfo=UTC)


def test_sweep_triggers_have_no_first_run() -> None:
    keep_alive = RuleSpec(trigger=Trigger.KEEP_ALIVE, monthly_cap=usd(500),
                          approval=Approval.ASK, days_before=3)
    assert first_run_at(keep_alive, datetime(2026, 1, 1, tzinfo=UTC), PHNOM_PENH) is None


# --- confirmation --------------------------------------------------------------------------

@given(confirmed_amount=st.integers(0, 100_000), confirmed_cap=st.integers(0, 100_000),
       amount=st.integers(1, 100_000), cap=st.integers(1, 100_000))
def test_needs_confirmation_iff_amount_or_cap_rises(confirmed_amount: int, confirmed_cap: int,
                                                    amount: int, cap: int) -> None:
    expected = amount > confirmed_amount or cap > confirmed_cap
    assert needs_confirmation(confirmed_amount, confirmed_cap, usd(amount), usd(cap)) is expected


def test_needs_confirmation_examples() -> None:
    assert needs_confirmation(500, 2000, usd(500), usd(2000)) is False  # unchanged
    assert needs_confirmation(500, 2000, usd(300), usd(1000)) is False  # both lower
    assert needs_confirmation(500, 2000, usd(501), usd(1000)) is True  # amount up
    assert needs_confirmation(500, 2000, usd(100), usd(2001)) is True  # cap up
    assert needs_confirmation(0, 0, usd(100), usd(100)) is True  # never confirmed
