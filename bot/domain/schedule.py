"""Calendars for auto-recharge: monthly on day N, weekly on a weekday, every N days.

Runs happen at a local time of day in the user's zone; results are aware UTC datetimes.
"""

from __future__ import annotations

import calendar
import enum
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo


class ScheduleError(ValueError):
    class Reason(enum.Enum):
        DAY_OUT_OF_RANGE = "day_out_of_range"
        WEEKDAY_OUT_OF_RANGE = "weekday_out_of_range"
        INTERVAL_OUT_OF_RANGE = "interval_out_of_range"
        NAIVE_DATETIME = "naive_datetime"

    def __init__(self, reason: ScheduleError.Reason) -> None:
        super().__init__(reason.value)
        self.reason = reason


MAX_INTERVAL_DAYS = 365
MAX_MONTH_DAY = 31  # a month without that day uses its last


@dataclass(frozen=True)
class MonthlyOnDay:
    """Day N of every month; in a month that has no day N, its last day."""

    day: int
    at: time = time(9, 0)

    def __post_init__(self) -> None:
        if not 1 <= self.day <= MAX_MONTH_DAY:
            raise ScheduleError(ScheduleError.Reason.DAY_OUT_OF_RANGE)

    def local_dates_from(self, start: date) -> Iterator[date]:
        def gen() -> Iterator[date]:
            year, month = start.year, start.month
            while True:
                last = calendar.monthrange(year, month)[1]
                yield date(year, month, min(self.day, last))
                year, month = (year + 1, 1) if month == 12 else (year, month + 1)

        return gen()


@dataclass(frozen=True)
class WeeklyOn:
    """Every week on ``weekday`` (0 = Monday ... 6 = Sunday)."""

    weekday: int
    at: time = time(9, 0)

    def __post_init__(self) -> None:
        if not 0 <= self.weekday <= 6:
            raise ScheduleError(ScheduleError.Reason.WEEKDAY_OUT_OF_RANGE)

    def local_dates_from(self, start: date) -> Iterator[date]:
        def gen() -> Iterator[date]:
            day = start + timedelta(days=(self.weekday - start.weekday()) % 7)
            while True:
                yield day
                day += timedelta(days=7)

        return gen()


@dataclass(frozen=True)
class EveryNDays:
    """Every ``days`` days counted from ``anchor`` (a local date)."""

    days: int
    anchor: date
    at: time = time(9, 0)

    def __post_init__(self) -> None:
        if not 1 <= self.days <= MAX_INTERVAL_DAYS:
            raise ScheduleError(ScheduleError.Reason.INTERVAL_OUT_OF_RANGE)

    def local_dates_from(self, start: date) -> Iterator[date]:
        def gen() -> Iterator[date]:
            behind = (start - self.anchor).days
            steps = -(-behind // self.days) if behind > 0 else 0
            day = self.anchor + timedelta(days=steps * self.days)
            while True:
                yield day
                day += timedelta(days=self.days)

        return gen()


Schedule = MonthlyOnDay | WeeklyOn | EveryNDays



def next_run(schedule: Schedule, after: datetime, zone: ZoneInfo) -> datetime:
    """The first run strictly after ``after`` (aware), as an aware UTC datetime."""
    if after.tzinfo is None:
        raise ScheduleError(ScheduleError.Reason.NAIVE_DATETIME)
    local_start = after.astimezone(zone).date() - timedelta(days=1)
    for day in schedule.local_dates_from(local_start):
        candidate = _local_to_utc(day, schedule.at, zone)
        if candidate > after:
            return candidate
    raise AssertionError("schedules are infinite")  # pragma: no cover


def period_key(schedule: Schedule, run_at: datetime, zone: ZoneInfo) -> str:
    """Names the period a run belongs to (its local date), for idempotency keys."""
    return run_at.astimezone(zone).date().isoformat()


def _local_to_utc(day: date, at: time, zone: ZoneInfo) -> datetime:
    # fold=0: of two ambiguous times the first; a time skipped by a DST gap takes the
    # offset from before the change, which moves it forward by exactly the gap.
    return datetime.combine(day, at, tzinfo=zone).astimezone(UTC)
