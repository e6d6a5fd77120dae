"""Auto-recharge calendars: next_run and period_key across zones, months and DST."""

from __future__ import annotations

import calendar
from datetime import UTC, date, datetime, time, timedelta
from itertools import pairwise
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bot.domain.schedule import (
    MAX_INTERVAL_DAYS,
    EveryNDays,
    MonthlyOnDay,
    Schedule,
    ScheduleError,
    WeeklyOn,
    next_run,
    period_key,
)

Reason = ScheduleError.Reason
PHNOM_PENH = ZoneInfo("Asia/Phnom_Penh")
LONDON = ZoneInfo("Europe/London")
NEW_YORK = ZoneInfo("America/New_York")


def pp(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    """An aware datetime in Phnom Penh (UTC+7, no DST)."""
    return datetime(year, month, day, hour, minute, tzinfo=PHNOM_PENH)


def assert_utc(value: datetime) -> None:
    assert value.tzinfo is UTC
    assert value.utcoffset() == timedelta(0)


# --- MonthlyOnDay ----------------------------------------------------------------------


def test_monthly_day_31_clamps_to_short_months() -> None:
    schedule = MonthlyOnDay(31)
    runs = []
    after = pp(2026, 1, 31, 10)  # just after January's run
    for _ in range(4):
        after = next_run(schedule, after, PHNOM_PENH)
        runs.append(after)
    assert [run.astimezone(PHNOM_PENH) for run in runs] == [
        pp(2026, 2, 28, 9),
        pp(2026, 3, 31, 9),
        pp(2026, 4, 30, 9),
        pp(2026, 5, 31, 9),
    ]
    for run in runs:
        assert_utc(run)
    assert runs[0] == datetime(2026, 2, 28, 2, 0, tzinfo=UTC)


def test_monthly_day_31_in_a_leap_february() -> None:
    run = next_run(MonthlyOnDay(31), pp(2028, 2, 1), PHNOM_PENH)
    assert run == pp(2028, 2, 29, 9)


def test_monthly_day_30_and_29_in_february() -> None:
    assert next_run(MonthlyOnDay(30), pp(2026, 2, 1), PHNOM_PENH) == pp(2026, 2, 28, 9)
    assert next_run(MonthlyOnDay(29), pp(2026, 2, 1), PHNOM_PENH) == pp(2026, 2, 28, 9)
    assert next_run(MonthlyOnDay(29), pp(2028, 2, 1), PHNOM_PENH) == pp(2028, 2, 29, 9)


def test_monthly_day_31_in_april() -> None:
    assert next_run(MonthlyOnDay(31), pp(2026, 4, 1), PHNOM_PENH) == pp(2026, 4, 30, 9)


def test_monthly_day_15() -> None:
    schedule = MonthlyOnDay(15)
    assert next_run(schedule, pp(2026, 3, 1), PHNOM_PENH) == pp(2026, 3, 15, 9)
    assert next_run(schedule, pp(2026, 3, 15, 8, 59), PHNOM_PENH) == pp(2026, 3, 15, 9)
    assert next_run(schedule, pp(2026, 3, 20), PHNOM_PENH) == pp(2026, 4, 15, 9)


def test_monthly_run_is_strictly_after() -> None:
    schedule = MonthlyOnDay(15)
    at_run = pp(2026, 3, 15, 9)
    assert next_run(schedule, at_run, PHNOM_PENH) == pp(2026, 4, 15, 9)
    just_before = at_run - timedelta(microseconds=1)
    assert next_run(schedule, just_before, PHNOM_PENH) == at_run


def test_monthly_wraps_the_year() -> None:
    assert next_run(MonthlyOnDay(5), pp(2026, 12, 6), PHNOM_PENH) == pp(2027, 1, 5, 9)


def test_monthly_at_a_custom_time() -> None:
    schedule = MonthlyOnDay(1, at=time(6, 30))
    assert next_run(schedule, pp(2026, 5, 20), PHNOM_PENH) == pp(2026, 6, 1, 6, 30)


def test_after_in_another_zone_is_compared_as_an_instant() -> None:
    # 2026-03-15 01:30 UTC is 08:30 in Phnom Penh: the 09:00 run that day is still ahead.
    after = datetime(2026, 3, 15, 1, 30, tzinfo=UTC)
    assert next_run(MonthlyOnDay(15), after, PHNOM_PENH) == pp(2026, 3, 15, 9)
    # 02:30 UTC is 09:30 local: that run has passed.
    after = datetime(2026, 3, 15, 2, 30, tzinfo=UTC)
    assert next_run(MonthlyOnDay(15), after, PHNOM_PENH) == pp(2026, 4, 15, 9)


def test_utc_date_differs_from_local_date() -> None:
    # 2026-03-14 20:00 UTC is already 03:00 on the 15th in Phnom Penh.
    after = datetime(2026, 3, 14, 20, 0, tzinfo=UTC)
    assert next_run(MonthlyOnDay(15), after, PHNOM_PENH) == pp(2026, 3, 15, 9)
    assert next_run(MonthlyOnDay(14), after, PHNOM_PENH) == pp(2026, 4, 14, 9)


# --- WeeklyOn --------------------------------------------------------------------------


def test_weekly_on_a_weekday() -> None:
    # 2026-03-04 is a Wednesday.
    assert date(2026, 3, 4).weekday() == 2
    assert next_run(WeeklyOn(4), pp(2026, 3, 4, 12), PHNOM_PENH) == pp(2026, 3, 6, 9)
    assert next_run(WeeklyOn(0), pp(2026, 3, 4, 12), PHNOM_PENH) == pp(2026, 3, 9, 9)
    assert next_run(WeeklyOn(6), pp(2026, 3, 4, 12), PHNOM_PENH) == pp(2026, 3, 8, 9)


def test_weekly_same_day_before_and_after_the_time() -> None:
    assert next_run(WeeklyOn(2), pp(2026, 3, 4, 8), PHNOM_PENH) == pp(2026, 3, 4, 9)
    assert next_run(WeeklyOn(2), pp(2026, 3, 4, 9), PHNOM_PENH) == pp(2026, 3, 11, 9)


# --- EveryNDays ------------------------------------------------------------------------


def test_every_n_days_anchor_in_the_past() -> None:
    schedule = EveryNDays(10, anchor=date(2026, 1, 1))
    # Runs: Jan 1, 11, 21, 31, Feb 10, 20, Mar 2, 12, ...
    assert next_run(schedule, pp(2026, 3, 7, 12), PHNOM_PENH) == pp(2026, 3, 12, 9)
    assert next_run(schedule, pp(2026, 3, 12, 9), PHNOM_PENH) == pp(2026, 3, 22, 9)
    assert next_run(schedule, pp(2026, 3, 12, 8), PHNOM_PENH) == pp(2026, 3, 12, 9)


def test_every_n_days_anchor_in_the_future() -> None:
    schedule = EveryNDays(10, anchor=date(2030, 1, 1))
    assert next_run(schedule, pp(2026, 3, 7, 12), PHNOM_PENH) == pp(2030, 1, 1, 9)
    assert next_run(schedule, pp(2030, 1, 1, 9), PHNOM_PENH) == pp(2030, 1, 11, 9)


def test_every_n_days_anchor_today() -> None:
    schedule = EveryNDays(3, anchor=date(2026, 3, 7))
    assert next_run(schedule, pp(2026, 3, 7, 8), PHNOM_PENH) == pp(2026, 3, 7, 9)
    assert next_run(schedule, pp(2026, 3, 7, 10), PHNOM_PENH) == pp(2026, 3, 10, 9)


def test_every_day() -> None:
    schedule = EveryNDays(1, anchor=date(2020, 1, 1))
    assert next_run(schedule, pp(2026, 3, 7, 10), PHNOM_PENH) == pp(2026, 3, 8, 9)


# --- zones and DST ---------------------------------------------------------------------


def test_runs_are_at_local_nine_in_a_dst_zone() -> None:
    schedule = WeeklyOn(0)
    # Monday 2026-01-05 (GMT) and Monday 2026-07-06 (BST).
    winter = next_run(schedule, datetime(2026, 1, 4, tzinfo=UTC), LONDON)
    summer = next_run(schedule, datetime(2026, 7, 5, tzinfo=UTC), LONDON)
    assert winter == datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
    assert summer == datetime(2026, 7, 6, 8, 0, tzinfo=UTC)
    assert_utc(winter)
    assert_utc(summer)
    assert summer.astimezone(LONDON).time() == time(9, 0)


def test_weekly_across_a_dst_change_keeps_local_time() -> None:
    schedule = WeeklyOn(0, at=time(2, 30))
    first = next_run(schedule, datetime(2026, 3, 1, tzinfo=UTC), NEW_YORK)
    second = next_run(schedule, first, NEW_YORK)
    assert first == datetime(2026, 3, 2, 7, 30, tzinfo=UTC)  # EST, UTC-5
    assert second == datetime(2026, 3, 9, 6, 30, tzinfo=UTC)  # EDT, UTC-4
    assert second - first == timedelta(days=7, hours=-1)
    for run in (first, second):
        assert run.astimezone(NEW_YORK).time() == time(2, 30)


def test_time_skipped_by_dst_moves_forward_new_york() -> None:
    # 2026-03-08: clocks in New York go from 02:00 to 03:00; 02:30 does not exist.
    schedule = EveryNDays(1, anchor=date(2026, 3, 1), at=time(2, 30))
    run = next_run(schedule, datetime(2026, 3, 7, 12, tzinfo=UTC), NEW_YORK)
    assert run == datetime(2026, 3, 8, 7, 30, tzinfo=UTC)
    local = run.astimezone(NEW_YORK)
    assert local.date() == date(2026, 3, 8)
    assert local.time() == time(3, 30)
    following = next_run(schedule, run, NEW_YORK)
    assert following.astimezone(NEW_YORK).replace(tzinfo=None) == datetime(2026, 3, 9, 2, 30)


def test_time_skipped_by_dst_moves_forward_london() -> None:
    # 2026-03-29: clocks in London go from 01:00 to 02:00; 01:30 does not exist.
    schedule = EveryNDays(1, anchor=date(2026, 3, 1), at=time(1, 30))
    run = next_run(schedule, datetime(2026, 3, 28, 12, tzinfo=UTC), LONDON)
    assert run == datetime(2026, 3, 29, 1, 30, tzinfo=UTC)
    assert run.astimezone(LONDON).replace(tzinfo=None) == datetime(2026, 3, 29, 2, 30)
    assert period_key(schedule, run, LONDON) == "2026-03-29"


def test_ambiguous_time_takes_the_first_occurrence() -> None:
    # 2026-11-01: New York's 01:30 happens twice (EDT then EST); the first one runs, once.
    schedule = EveryNDays(1, anchor=date(2026, 3, 1), at=time(1, 30))
    run = next_run(schedule, datetime(2026, 10, 31, 12, tzinfo=UTC), NEW_YORK)
    assert run == datetime(2026, 11, 1, 5, 30, tzinfo=UTC)
    following = next_run(schedule, run, NEW_YORK)
    assert following == datetime(2026, 11, 2, 6, 30, tzinfo=UTC)


def test_time_skipped_by_a_half_hour_dst_gap_moves_by_the_gap() -> None:
    # 2026-10-04: Lord Howe Island goes from 02:00 (+10:30) to 02:30 (+11:00).
    zone = ZoneInfo("Australia/Lord_Howe")
    schedule = EveryNDays(1, anchor=date(2026, 1, 1), at=time(2, 15))
    run = next_run(schedule, datetime(2026, 10, 3, 12, tzinfo=UTC), zone)
    assert run.astimezone(zone).replace(tzinfo=None) == datetime(2026, 10, 4, 2, 45)


# --- validation ------------------------------------------------------------------------


@pytest.mark.parametrize("day", [0, -1, 32, 100])
def test_monthly_day_out_of_range(day: int) -> None:
    with pytest.raises(ScheduleError) as excinfo:
        MonthlyOnDay(day)
    assert excinfo.value.reason is Reason.DAY_OUT_OF_RANGE


@pytest.mark.parametrize("weekday", [-1, 7, 10])
def test_weekday_out_of_range(weekday: int) -> None:
    with pytest.raises(ScheduleError) as excinfo:
        WeeklyOn(weekday)
    assert excinfo.value.reason is Reason.WEEKDAY_OUT_OF_RANGE


@pytest.mark.parametrize("days", [0, -3, MAX_INTERVAL_DAYS + 1])
def test_interval_out_of_range(days: int) -> None:
    with pytest.raises(ScheduleError) as excinfo:
        EveryNDays(days, anchor=date(2026, 1, 1))
    assert excinfo.value.reason is Reason.INTERVAL_OUT_OF_RANGE


def test_bounds_are_accepted() -> None:
    assert MonthlyOnDay(1).day == 1
    assert MonthlyOnDay(31).day == 31
    assert WeeklyOn(0).weekday == 0
    assert WeeklyOn(6).weekday == 6
    assert EveryNDays(1, anchor=date(2026, 1, 1)).days == 1
    assert EveryNDays(MAX_INTERVAL_DAYS, anchor=date(2026, 1, 1)).days == MAX_INTERVAL_DAYS
    assert MonthlyOnDay(1).at == time(9, 0)


@pytest.mark.parametrize(
    "schedule", [MonthlyOnDay(1), WeeklyOn(0), EveryNDays(2, anchor=date(2026, 1, 1))]
)
def test_naive_after_is_refused(schedule: Schedule) -> None:
    with pytest.raises(ScheduleError) as excinfo:
        next_run(schedule, datetime(2026, 3, 1, 12, 0), PHNOM_PENH)
    assert excinfo.value.reason is Reason.NAIVE_DATETIME
    assert str(excinfo.value) == "naive_datetime"


# --- period_key ------------------------------------------------------------------------


def test_period_key_is_the_local_date() -> None:
    schedule = MonthlyOnDay(1)
    # 20:00 UTC on the 1st is 03:00 on the 2nd in Phnom Penh, 16:00 on the 1st in New York.
    run = datetime(2026, 3, 1, 20, 0, tzinfo=UTC)
    assert period_key(schedule, run, PHNOM_PENH) == "2026-03-02"
    assert period_key(schedule, run, NEW_YORK) == "2026-03-01"


def test_period_key_of_a_run_is_its_scheduled_date() -> None:
    schedule = MonthlyOnDay(31)
    run = next_run(schedule, pp(2026, 2, 1), PHNOM_PENH)
    assert period_key(schedule, run, PHNOM_PENH) == "2026-02-28"


# --- properties ------------------------------------------------------------------------

ZONES = st.sampled_from(
    ["Asia/Phnom_Penh", "UTC", "Europe/London", "America/New_York", "Australia/Sydney",
     "America/Santiago", "Asia/Kolkata", "Pacific/Kiritimati", "Pacific/Pago_Pago"]
).map(ZoneInfo)
TIMES = st.one_of(st.just(time(9, 0)), st.times(),
                  st.builds(time, st.sampled_from([0, 1, 2, 3, 23]), st.sampled_from([0, 30])))
AFTERS = st.datetimes(datetime(2000, 1, 1), datetime(2090, 1, 1), timezones=st.just(UTC))
MONTHLY = st.builds(MonthlyOnDay, st.integers(1, 31), TIMES)
WEEKLY = st.builds(WeeklyOn, st.integers(0, 6), TIMES)
EVERY = st.builds(EveryNDays, st.integers(1, MAX_INTERVAL_DAYS),
                  st.dates(date(1995, 1, 1), date(2095, 1, 1)), TIMES)
SCHEDULES = st.one_of(MONTHLY, WEEKLY, EVERY)


def _runs(schedule: Schedule, after: datetime, zone: ZoneInfo, count: int) -> list[datetime]:
    runs = []
    for _ in range(count):
        after = next_run(schedule, after, zone)
        runs.append(after)
    return runs


@settings(deadline=None)
@given(SCHEDULES, AFTERS, ZONES, st.floats(min_value=0, max_value=1))
def test_next_run_is_strictly_after_and_utc(
    schedule: Schedule, after: datetime, zone: ZoneInfo, fraction: float
) -> None:
    run = next_run(schedule, after, zone)
    assert run > after
    assert_utc(run)
    # the run is a run of the schedule, and no earlier run lies between `after` and it
    assert next_run(schedule, run - timedelta(microseconds=1), zone) == run
    between = after + (run - after) * fraction
    if between < run:
        assert next_run(schedule, between, zone) == run


@settings(deadline=None)
@given(SCHEDULES, AFTERS, ZONES)
def test_after_in_any_zone_gives_the_same_run(
    schedule: Schedule, after: datetime, zone: ZoneInfo
) -> None:
    assert next_run(schedule, after.astimezone(zone), zone) == next_run(schedule, after, zone)


@settings(deadline=None)
@given(SCHEDULES, AFTERS, ZONES)
def test_repeated_runs_strictly_increase(
    schedule: Schedule, after: datetime, zone: ZoneInfo
) -> None:
    runs = _runs(schedule, after, zone, 5)
    assert all(a < b for a, b in pairwise(runs))
    keys = [period_key(schedule, run, zone) for run in runs]
    assert len(set(keys)) == len(keys)


@settings(deadline=None)
@given(MONTHLY, AFTERS, ZONES)
def test_monthly_runs_fall_in_consecutive_months(
    schedule: MonthlyOnDay, after: datetime, zone: ZoneInfo
) -> None:
    dates = [run.astimezone(zone).date() for run in _runs(schedule, after, zone, 5)]
    for a, b in pairwise(dates):
        assert (b.year * 12 + b.month) - (a.year * 12 + a.month) == 1
    for day in dates:
        assert day.day == min(schedule.day, calendar.monthrange(day.year, day.month)[1])
    # the first run is this local month or the next one
    start = after.astimezone(zone).date()
    assert (dates[0].year * 12 + dates[0].month) - (start.year * 12 + start.month) in (0, 1)


@settings(deadline=None)
@given(WEEKLY, AFTERS, ZONES)
def test_weekly_runs_are_seven_local_days_apart(
    schedule: WeeklyOn, after: datetime, zone: ZoneInfo
) -> None:
    dates = [run.astimezone(zone).date() for run in _runs(schedule, after, zone, 5)]
    for a, b in pairwise(dates):
        assert (b - a).days == 7
    assert all(day.weekday() == schedule.weekday for day in dates)
    assert (dates[0] - after.astimezone(zone).date()).days <= 7


@settings(deadline=None)
@given(EVERY, AFTERS, ZONES)
def test_every_n_days_runs_are_n_local_days_apart(
    schedule: EveryNDays, after: datetime, zone: ZoneInfo
) -> None:
    dates = [run.astimezone(zone).date() for run in _runs(schedule, after, zone, 4)]
    for a, b in pairwise(dates):
        assert (b - a).days == schedule.days
    assert all((day - schedule.anchor).days % schedule.days == 0 for day in dates)
    assert dates[0] >= schedule.anchor


@settings(deadline=None)
@given(SCHEDULES, AFTERS, ZONES)
def test_runs_are_at_the_local_time_unless_it_does_not_exist(
    schedule: Schedule, after: datetime, zone: ZoneInfo
) -> None:
    run = next_run(schedule, after, zone)
    local = run.astimezone(zone)
    wall = datetime.combine(local.date(), schedule.at)
    exists = datetime.combine(local.date(), schedule.at, tzinfo=zone).astimezone(
        UTC).astimezone(zone).replace(tzinfo=None) == wall
    if exists:
        assert local.replace(tzinfo=None) == wall
    else:  # moved forward past the DST gap, on the same day
        assert local.replace(tzinfo=None) > wall
        assert local.date() == wall.date()


@settings(deadline=None)
@given(SCHEDULES, AFTERS, ZONES)
def test_period_key_is_the_runs_local_date(
    schedule: Schedule, after: datetime, zone: ZoneInfo
) -> None:
    run = next_run(schedule, after, zone)
    assert period_key(schedule, run, zone) == run.astimezone(zone).date().isoformat()
    assert date.fromisoformat(period_key(schedule, run, zone)) == run.astimezone(zone).date()
