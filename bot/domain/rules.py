"""Auto-recharge rules as pure decisions: what a rule may say, what it buys, when it runs,
and when a change needs a fresh code.

A rule buys a fixed amount of airtime or one plan from the catalog, when a trigger fires:
a calendar, the balance or the data running low, or the line's validity nearing its end
("keep my line alive"). Every rule has a monthly cap in the same currency. Enabling a rule,
or raising its amount or cap above what was last confirmed, takes a code sent to the line.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import date, datetime
from zoneinfo import ZoneInfo

from bot.domain.money import CURRENCIES, Money
from bot.domain.operators import Operator, cheapest_validity_extension
from bot.domain.schedule import (
    EveryNDays,
    MonthlyOnDay,
    Schedule,
    ScheduleError,
    WeeklyOn,
    next_run,
)


class Trigger(enum.StrEnum):
    CALENDAR = "calendar"
    BALANCE_BELOW = "balance_below"
    DATA_BELOW = "data_below"
    KEEP_ALIVE = "keep_alive"


class CalendarKind(enum.StrEnum):
    MONTHLY = "monthly"  # calendar_value: day of the month, 1..31 (short months: last day)
    WEEKLY = "weekly"  # calendar_value: weekday, 0 = Monday ... 6 = Sunday
    EVERY_N = "every_n"  # calendar_value: N days, counted from calendar_anchor


class Approval(enum.StrEnum):
    ASK = "ask"  # every charge waits for the user's button
    AUTO = "auto"  # charges go ahead within the monthly cap


class RuleStatus(enum.StrEnum):
    AWAITING_OTP = "awaiting_otp"
    ACTIVE = "active"
    PAUSED = "paused"
    DISABLED = "disabled"


RULE_CURRENCIES = frozenset({"USD", "KHR"})  # what top-ups are priced in
MIN_DAYS_BEFORE = 1
MAX_DAYS_BEFORE = 14


class RuleError(ValueError):
    """A rule that cannot be accepted; ``reason`` says why, for a localized message."""

    class Reason(enum.Enum):
        NOTHING_TO_BUY = "nothing_to_buy"  # neither an amount nor a plan
        BOTH_AMOUNT_AND_PLAN = "both_amount_and_plan"
        AMOUNT_NOT_POSITIVE = "amount_not_positive"
        UNKNOWN_PLAN = "unknown_plan"  # not in the catalog of the line's operator
        CAP_NOT_POSITIVE = "cap_not_positive"
        CAP_TOO_LARGE = "cap_too_large"
        AMOUNT_OVER_CAP = "amount_over_cap"  # one charge would not fit in a month's cap
        UNSUPPORTED_CURRENCY = "unsupported_currency"
        CURRENCY_MISMATCH = "currency_mismatch"  # amount, plan or threshold vs the cap
        MISSING_CALENDAR = "missing_calendar"
        BAD_CALENDAR_VALUE = "bad_calendar_value"
        MISSING_THRESHOLD = "missing_threshold"
        BAD_THRESHOLD = "bad_threshold"
        BAD_DAYS_BEFORE = "bad_days_before"
        UNEXPECTED_FIELD = "unexpected_field"  # a setting another trigger uses

    def __init__(self, reason: RuleError.Reason, detail: str = "") -> None:
        super().__init__(f"{reason.value}{': ' + detail if detail else ''}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class RuleSpec:
    """What the user asked for. ``validate`` says whether it can be a rule."""

    trigger: Trigger
    monthly_cap: Money
    approval: Approval
    amount: Money | None = None  # airtime of this amount ...
    product_id: str | None = None  # ... or this plan
    calendar: CalendarKind | None = None
    calendar_value: int | None = None
    calendar_anchor: date | None = None  # local date (every_n counts from it)
    threshold: Money | None = None  # balance_below
    threshold_mb: int | None = None  # data_below
    days_before: int | None = None  # keep_alive: days before validity ends

    @property
    def currency(self) -> str:
        return self.monthly_cap.currency


def keep_alive_amount(operator: Operator) -> Money:
    """The cheapest top-up that extends the validity of a line on ``operator``."""
    cents, _days = cheapest_validity_extension(operator)
    return Money(cents, "USD")


def charge_amount(spec: RuleSpec, plan_price: Money | None, *,
                  operator: Operator | None = None) -> Money:
    """What one run of the rule costs: the amount, the plan's price, or (keep-alive with
    neither) the cheapest validity extension of ``operator``."""
    if spec.amount is not None:
        return spec.amount
    if spec.product_id is not None:
        if plan_price is None:
            raise RuleError(RuleError.Reason.UNKNOWN_PLAN, spec.product_id)
        return plan_price
    if spec.trigger is Trigger.KEEP_ALIVE and operator is not None:
        return keep_alive_amount(operator)
    raise RuleError(RuleError.Reason.NOTHING_TO_BUY)


def schedule_of(spec: RuleSpec) -> Schedule | None:
    """The calendar of a calendar rule; None for the other triggers."""
    if spec.trigger is not Trigger.CALENDAR:
        return None
    if spec.calendar is None or spec.calendar_value is None:
        raise RuleError(RuleError.Reason.MISSING_CALENDAR)
    try:
        if spec.calendar is CalendarKind.MONTHLY:
            return MonthlyOnDay(spec.calendar_value)
        if spec.calendar is CalendarKind.WEEKLY:
            return WeeklyOn(spec.calendar_value)
        if spec.calendar_anchor is None:
            raise RuleError(RuleError.Reason.MISSING_CALENDAR, "anchor")
        return EveryNDays(spec.calendar_value, spec.calendar_anchor)
    except ScheduleError as error:
        raise RuleError(RuleError.Reason.BAD_CALENDAR_VALUE, error.reason.value) from error


def first_run_at(spec: RuleSpec, now: datetime, zone: ZoneInfo) -> datetime | None:
    """When a calendar rule enabled at ``now`` first runs (aware UTC); None for the
    triggers the sweeps evaluate (balance, data, validity)."""
    schedule = schedule_of(spec)
    return None if schedule is None else next_run(schedule, now, zone)


def needs_confirmation(confirmed_amount_minor: int, confirmed_cap_minor: int,
                       new_amount: Money, new_cap: Money) -> bool:
    """True when the amount or the cap rises above what was last confirmed with a code."""
    return new_amount.minor > confirmed_amount_minor or new_cap.minor > confirmed_cap_minor


def validate(spec: RuleSpec, *, plan_price: Money | None,
             operator: Operator | None = None) -> None:
    """Raises ``RuleError`` unless ``spec`` can be a rule.

    ``plan_price`` is the price of ``spec.product_id`` in the line's catalog (None when the
    plan is not there); ``operator`` lets a keep-alive rule without an amount or plan be
    priced at the cheapest validity extension.
    """
    _check_trigger_fields(spec)
    cap = spec.monthly_cap
    if cap.currency not in RULE_CURRENCIES:
        raise RuleError(RuleError.Reason.UNSUPPORTED_CURRENCY, cap.currency)
    if not cap.is_positive:
        raise RuleError(RuleError.Reason.CAP_NOT_POSITIVE)
    if cap.minor > CURRENCIES[cap.currency].max_minor:
        raise RuleError(RuleError.Reason.CAP_TOO_LARGE,
                        Money(CURRENCIES[cap.currency].max_minor, cap.currency).plain())
    if spec.amount is not None and spec.product_id is not None:
        raise RuleError(RuleError.Reason.BOTH_AMOUNT_AND_PLAN)
    if spec.amount is not None and not spec.amount.is_positive:
        raise RuleError(RuleError.Reason.AMOUNT_NOT_POSITIVE)
    price = charge_amount(spec, plan_price, operator=operator)
    if price.currency != cap.currency:
        raise RuleError(RuleError.Reason.CURRENCY_MISMATCH, f"{price.currency} vs {cap.currency}")
    if not price.is_positive:
        raise RuleError(RuleError.Reason.AMOUNT_NOT_POSITIVE)
    if price > cap:
        raise RuleError(RuleError.Reason.AMOUNT_OVER_CAP, f"{price.plain()} > {cap.plain()}")


def _check_trigger_fields(spec: RuleSpec) -> None:
    unexpected: list[str] = []
    calendar_fields = {"calendar": spec.calendar, "calendar_value": spec.calendar_value,
                       "calendar_anchor": spec.calendar_anchor}
    if spec.trigger is Trigger.CALENDAR:
        schedule_of(spec)  # raises MISSING_CALENDAR / BAD_CALENDAR_VALUE
        if spec.calendar is not CalendarKind.EVERY_N and spec.calendar_anchor is not None:
            unexpected.append("calendar_anchor")
    else:
        unexpected += [name for name, value in calendar_fields.items() if value is not None]

    if spec.trigger is Trigger.BALANCE_BELOW:
        if spec.threshold is None:
            raise RuleError(RuleError.Reason.MISSING_THRESHOLD)
        if spec.threshold.currency != spec.monthly_cap.currency:
            raise RuleError(RuleError.Reason.CURRENCY_MISMATCH,
                            f"{spec.threshold.currency} vs {spec.monthly_cap.currency}")
        if (not spec.threshold.is_positive
                or spec.threshold.minor > CURRENCIES[spec.threshold.currency].max_minor):
            raise RuleError(RuleError.Reason.BAD_THRESHOLD)
    elif spec.threshold is not None:
        unexpected.append("threshold")

    if spec.trigger is Trigger.DATA_BELOW:
        if spec.threshold_mb is None:
            raise RuleError(RuleError.Reason.MISSING_THRESHOLD)
        if spec.threshold_mb <= 0:
            raise RuleError(RuleError.Reason.BAD_THRESHOLD)
    elif spec.threshold_mb is not None:
        unexpected.append("threshold_mb")

    if spec.trigger is Trigger.KEEP_ALIVE:
        if (spec.days_before is None
                or not MIN_DAYS_BEFORE <= spec.days_before <= MAX_DAYS_BEFORE):
            raise RuleError(RuleError.Reason.BAD_DAYS_BEFORE)
    elif spec.days_before is not None:
        unexpected.append("days_before")

    if unexpected:
        raise RuleError(RuleError.Reason.UNEXPECTED_FIELD, ", ".join(unexpected))
