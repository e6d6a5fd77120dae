"""Watching a line: warnings per episode, quiet hours, check cadence and recharge triggers."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bot.domain.money import Money
from bot.domain.quiet_hours import QuietHours
from bot.domain.readings import LineReading, ReadingSource
from bot.domain.schedule import EveryNDays, MonthlyOnDay, Schedule, WeeklyOn, next_run
from bot.domain.watch import (
    FALLING_CHECK,
    HEALTHY_CHECK,
    LOW_CHECK,
    MAX_RETRY,
    MIN_CHECK,
    RECYCLE_SOON,
    CalendarDue,
    EpisodeState,
    ThresholdDecision,
    Thresholds,
    WarningKind,
    calendar_due,
    keep_alive_due,
    keep_alive_wake,
    next_check_at,
    quiet_hours_end,
    send_at,
    threshold_rule,
    validity_warning,
    warnings_for,
)
from bot.domain.watch import Warning as WatchWarning

PHNOM_PENH = ZoneInfo("Asia/Phnom_Penh")
BERLIN = ZoneInfo("Europe/Berlin")
NOW = datetime(2026, 3, 10, 5, 0, tzinfo=UTC)  # 12:00 in Phnom Penh
NIGHT = QuietHours(22 * 60, 7 * 60)  # 22:00-07:00, wraps midnight
LUNCH = QuietHours(13 * 60, 14 * 60)  # 13:00-14:00
BALANCE_ONLY = Thresholds(balance_minor=100)  # warn below $1.00
DATA_ONLY = Thresholds(data_mb=500)


def usd(minor: int) -> Money:
    return Money(minor, "USD")


def reading(*, balance: int | None = None, data_mb: int | None = None,
            validity_end: datetime | None = None, read_at: datetime = NOW) -> LineReading:
    return LineReading(source=ReadingSource.PROVIDER, read_at=read_at,
                       balance=usd(balance) if balance is not None else None,
                       data_mb=data_mb, validity_end=validity_end)


def kinds(warnings: list[WatchWarning]) -> list[WarningKind]:
    return [warning.kind for warning in warnings]


def pp(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    """An aware datetime in Phnom Penh (UTC+7, no DST)."""
    return datetime(year, month, day, hour, minute, tzinfo=PHNOM_PENH)


# --- warnings_for: low balance ------------------------------------------------------------


def test_low_balance_warns_once_with_episode_one() -> None:
    warnings, state = warnings_for(reading(balance=50), BALANCE_ONLY, EpisodeState(), NOW)
    assert warnings == [WatchWarning(WarningKind.LOW_BALANCE, "1")]
    assert state == EpisodeState(balance_low=True, balance_episode=1)
    assert not warnings[0].urgent


def test_second_low_balance_reading_does_not_warn_again() -> None:
    _, state = warnings_for(reading(balance=50), BALANCE_ONLY, EpisodeState(), NOW)
    warnings, after = warnings_for(reading(balance=20), BALANCE_ONLY, state,
                                   NOW + timedelta(hours=1))
    assert warnings == []
    assert after == state


def test_balance_at_threshold_closes_the_episode_without_a_warning() -> None:
    state = EpisodeState(balance_low=True, balance_episode=1)
    warnings, after = warnings_for(reading(balance=100), BALANCE_ONLY, state, NOW)
    assert warnings == []
    assert after == EpisodeState(balance_low=False, balance_episode=1)


def test_balance_above_threshold_with_no_open_episode_changes_nothing() -> None:
    state = EpisodeState(balance_episode=4)
    warnings, after = warnings_for(reading(balance=5_00), BALANCE_ONLY, state, NOW)
    assert warnings == []
    assert after == state


def test_next_drop_after_recovery_warns_with_the_next_episode() -> None:
    state = EpisodeState()
    seen: list[WatchWarning] = []
    for step, balance in enumerate([50, 40, 100, 300, 99, 10]):
        warnings, state = warnings_for(reading(balance=balance), BALANCE_ONLY, state,
                                       NOW + timedelta(hours=step))
        seen.extend(warnings)
    assert seen == [WatchWarning(WarningKind.LOW_BALANCE, "1"),
                    WatchWarning(WarningKind.LOW_BALANCE, "2")]
    assert state == EpisodeState(balance_low=True, balance_episode=2)


def test_balance_just_below_threshold_is_low() -> None:
    warnings, _ = warnings_for(reading(balance=99), BALANCE_ONLY, EpisodeState(), NOW)
    assert kinds(warnings) == [WarningKind.LOW_BALANCE]


# --- warnings_for: low data ----------------------------------------------------------------


def test_low_data_warns_once_per_episode() -> None:
    state = EpisodeState()
    seen: list[WatchWarning] = []
    for step, data in enumerate([100, 50, 500, 800, 499, 0]):
        warnings, state = warnings_for(reading(data_mb=data), DATA_ONLY, state,
                                       NOW + timedelta(hours=step))
        seen.extend(warnings)
    assert seen == [WatchWarning(WarningKind.LOW_DATA, "1"),
                    WatchWarning(WarningKind.LOW_DATA, "2")]
    assert state == EpisodeState(data_low=True, data_episode=2)


def test_data_at_threshold_closes_the_data_episode() -> None:
    state = EpisodeState(data_low=True, data_episode=3)
    warnings, after = warnings_for(reading(data_mb=500), DATA_ONLY, state, NOW)
    assert warnings == []
    assert after == EpisodeState(data_low=False, data_episode=3)


def test_balance_and_data_episodes_are_independent() -> None:
    thresholds = Thresholds(balance_minor=100, data_mb=500)
    warnings, state = warnings_for(reading(balance=50, data_mb=100), thresholds,
                                   EpisodeState(), NOW)
    assert warnings == [WatchWarning(WarningKind.LOW_BALANCE, "1"),
                        WatchWarning(WarningKind.LOW_DATA, "1")]
    # balance recovers, data stays low: the data episode stays open
    warnings, state = warnings_for(reading(balance=500, data_mb=100), thresholds, state, NOW)
    assert warnings == []
    assert state == EpisodeState(balance_low=False, balance_episode=1,
                                 data_low=True, data_episode=1)
    warnings, state = warnings_for(reading(balance=50, data_mb=100), thresholds, state, NOW)
    assert warnings == [WatchWarning(WarningKind.LOW_BALANCE, "2")]
    assert state.data_episode == 1


# --- warnings_for: readings that do not say -----------------------------------------------


def test_reading_without_balance_keeps_an_open_balance_episode() -> None:
    state = EpisodeState(balance_low=True, balance_episode=2, data_low=True, data_episode=5)
    thresholds = Thresholds(balance_minor=100, data_mb=500)
    warnings, after = warnings_for(reading(), thresholds, state, NOW)
    assert warnings == []
    assert after == state


def test_reading_without_balance_keeps_a_closed_episode_closed() -> None:
    state = EpisodeState(balance_episode=2, data_episode=5)
    thresholds = Thresholds(balance_minor=100, data_mb=500)
    warnings, after = warnings_for(reading(), thresholds, state, NOW)
    assert warnings == []
    assert after == state


def test_data_only_reading_leaves_the_balance_episode_alone() -> None:
    state = EpisodeState(balance_low=True, balance_episode=2)
    thresholds = Thresholds(balance_minor=100, data_mb=500)
    warnings, after = warnings_for(reading(data_mb=9_000), thresholds, state, NOW)
    assert warnings == []
    assert after == state


def test_no_reading_leaves_the_state_alone() -> None:
    state = EpisodeState(balance_low=True, balance_episode=7, data_episode=1)
    warnings, after = warnings_for(None, Thresholds(balance_minor=100, data_mb=500), state,
                                   NOW)
    assert warnings == []
    assert after == state


def test_no_threshold_means_no_low_warning() -> None:
    state = EpisodeState(balance_low=True, balance_episode=1, data_low=True, data_episode=1)
    warnings, after = warnings_for(reading(balance=0, data_mb=0), Thresholds(),
                                   EpisodeState(), NOW)
    assert warnings == []
    assert after == EpisodeState()
    # nor does a missing threshold close an open episode
    _, after = warnings_for(reading(balance=10_000, data_mb=10_000), Thresholds(), state, NOW)
    assert after == state


# --- warnings_for: validity ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("left", "kind"),
    [
        (timedelta(days=3), WarningKind.VALIDITY_3_DAYS),
        (timedelta(days=2, hours=23), WarningKind.VALIDITY_3_DAYS),
        (timedelta(hours=24, seconds=1), WarningKind.VALIDITY_3_DAYS),
        (timedelta(hours=24), WarningKind.VALIDITY_24_HOURS),
        (timedelta(hours=5), WarningKind.VALIDITY_24_HOURS),
        (timedelta(hours=1, seconds=1), WarningKind.VALIDITY_24_HOURS),
        (timedelta(hours=1), WarningKind.VALIDITY_HOUR),
        (timedelta(minutes=1), WarningKind.VALIDITY_HOUR),
    ],
)
def test_validity_warning_picks_the_most_pressing_one(left: timedelta,
                                                      kind: WarningKind) -> None:
    end = NOW + left
    warnings, _ = warnings_for(reading(validity_end=end), Thresholds(), EpisodeState(), NOW)
    assert warnings == [WatchWarning(kind, end.isoformat(),
                                     urgent=kind is WarningKind.VALIDITY_HOUR)]


def test_only_the_last_hour_validity_warning_is_urgent() -> None:
    end = NOW + timedelta(days=10)
    urgency = {}
    for left in (timedelta(days=2), timedelta(hours=12), timedelta(minutes=30)):
        warning = validity_warning(end, end - left)
        assert warning is not None
        urgency[warning.kind] = warning.urgent
    assert urgency == {WarningKind.VALIDITY_3_DAYS: False,
                       WarningKind.VALIDITY_24_HOURS: False,
                       WarningKind.VALIDITY_HOUR: True}


@pytest.mark.parametrize(
    "left",
    [timedelta(days=3, seconds=1), timedelta(days=30), timedelta(0), -timedelta(seconds=1),
     -timedelta(days=2)],
)
def test_no_validity_warning_when_far_away_or_passed(left: timedelta) -> None:
    warnings, _ = warnings_for(reading(validity_end=NOW + left), Thresholds(),
                               EpisodeState(), NOW)
    assert warnings == []
    assert validity_warning(NOW + left, NOW) is None


def test_no_validity_warning_without_a_validity_end() -> None:
    assert validity_warning(None, NOW) is None


def test_validity_warnings_share_the_validity_end_as_discriminator() -> None:
    end = datetime(2026, 4, 1, 17, 0, tzinfo=UTC)
    found = [validity_warning(end, end - left)
             for left in (timedelta(days=2), timedelta(hours=2), timedelta(minutes=5))]
    assert [warning.discriminator if warning else None for warning in found] == [
        "2026-04-01T17:00:00+00:00"] * 3
    keys = {warning.dedupe_key(9) for warning in found if warning is not None}
    assert keys == {"warn:validity_3d:9:2026-04-01T17:00:00+00:00",
                    "warn:validity_24h:9:2026-04-01T17:00:00+00:00",
                    "warn:validity_1h:9:2026-04-01T17:00:00+00:00"}


def test_low_balance_and_validity_warnings_come_together() -> None:
    end = NOW + timedelta(hours=10)
    warnings, state = warnings_for(reading(balance=10, validity_end=end), BALANCE_ONLY,
                                   EpisodeState(), NOW)
    assert kinds(warnings) == [WarningKind.LOW_BALANCE, WarningKind.VALIDITY_24_HOURS]
    assert state.balance_episode == 1


# --- warnings_for: recycling ----------------------------------------------------------------


@pytest.mark.parametrize("ahead", [timedelta(days=7), timedelta(days=3), timedelta(seconds=1)])
def test_recycling_warns_within_seven_days(ahead: timedelta) -> None:
    recycle_at = NOW + ahead
    warnings, _ = warnings_for(None, Thresholds(), EpisodeState(), NOW, recycle_at=recycle_at)
    assert warnings == [WatchWarning(WarningKind.RECYCLING, recycle_at.date().isoformat())]
    assert not warnings[0].urgent


@pytest.mark.parametrize(
    "ahead",
    [RECYCLE_SOON + timedelta(seconds=1), timedelta(days=30), timedelta(0),
     -timedelta(days=1)],
)
def test_no_recycling_warning_outside_seven_days(ahead: timedelta) -> None:
    warnings, _ = warnings_for(reading(balance=5_00), BALANCE_ONLY, EpisodeState(), NOW,
                               recycle_at=NOW + ahead)
    assert warnings == []


def test_recycling_warning_discriminator_is_the_date() -> None:
    recycle_at = datetime(2026, 3, 14, 23, 59, tzinfo=UTC)
    warnings, _ = warnings_for(None, Thresholds(), EpisodeState(), NOW, recycle_at=recycle_at)
    assert [warning.dedupe_key(3) for warning in warnings] == ["warn:recycling:3:2026-03-14"]


# --- dedupe keys ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("warning", "line_id", "key"),
    [
        (WatchWarning(WarningKind.LOW_BALANCE, "1"), 42, "warn:low_balance:42:1"),
        (WatchWarning(WarningKind.LOW_DATA, "3"), 7, "warn:low_data:7:3"),
        (WatchWarning(WarningKind.RECYCLING, "2026-05-01"), 1, "warn:recycling:1:2026-05-01"),
        (WatchWarning(WarningKind.VALIDITY_HOUR, "x", urgent=True), 5, "warn:validity_1h:5:x"),
    ],
)
def test_dedupe_key_format(warning: WatchWarning, line_id: int, key: str) -> None:
    assert warning.dedupe_key(line_id) == key


def test_dedupe_keys_differ_between_episodes() -> None:
    state = EpisodeState()
    keys: list[str] = []
    for balance in (50, 500, 50, 500, 50):
        warnings, state = warnings_for(reading(balance=balance), BALANCE_ONLY, state, NOW)
        keys.extend(warning.dedupe_key(11) for warning in warnings)
    assert keys == ["warn:low_balance:11:1", "warn:low_balance:11:2", "warn:low_balance:11:3"]


# --- send_at / quiet_hours_end --------------------------------------------------------------

LOW = WatchWarning(WarningKind.LOW_BALANCE, "1")
LAST_HOUR = WatchWarning(WarningKind.VALIDITY_HOUR, "2026-03-10", urgent=True)


def test_send_at_outside_quiet_hours_is_now() -> None:
    now = pp(2026, 3, 10, 12).astimezone(UTC)
    assert send_at(LOW, now, NIGHT, PHNOM_PENH) == now
    assert quiet_hours_end(now, NIGHT, PHNOM_PENH) == now


def test_send_at_without_quiet_hours_is_now() -> None:
    now = pp(2026, 3, 10, 23).astimezone(UTC)
    assert send_at(LOW, now, None, PHNOM_PENH) == now


def test_send_at_late_evening_waits_until_seven_next_morning() -> None:
    now = pp(2026, 3, 10, 23, 15).astimezone(UTC)
    result = send_at(LOW, now, NIGHT, PHNOM_PENH)
    assert result == datetime(2026, 3, 11, 0, 0, tzinfo=UTC)  # 07:00 in Phnom Penh
    assert result.utcoffset() == timedelta(0)
    assert result.astimezone(PHNOM_PENH) == pp(2026, 3, 11, 7)


def test_send_at_just_after_midnight_waits_until_seven_the_same_day() -> None:
    now = pp(2026, 3, 11, 0, 30).astimezone(UTC)  # 2026-03-10 17:30 UTC
    assert send_at(LOW, now, NIGHT, PHNOM_PENH) == datetime(2026, 3, 11, 0, 0, tzinfo=UTC)


def test_quiet_hours_start_is_inside_and_end_is_outside() -> None:
    start = pp(2026, 3, 10, 22).astimezone(UTC)
    assert quiet_hours_end(start, NIGHT, PHNOM_PENH) == pp(2026, 3, 11, 7)
    end = pp(2026, 3, 11, 7).astimezone(UTC)
    assert quiet_hours_end(end, NIGHT, PHNOM_PENH) == end
    before = pp(2026, 3, 10, 21, 59).astimezone(UTC)
    assert quiet_hours_end(before, NIGHT, PHNOM_PENH) == before


def test_non_wrapping_quiet_hours() -> None:
    inside = pp(2026, 3, 10, 13, 30).astimezone(UTC)
    assert send_at(LOW, inside, LUNCH, PHNOM_PENH) == pp(2026, 3, 10, 14)
    assert send_at(LOW, inside, LUNCH, PHNOM_PENH) == datetime(2026, 3, 10, 7, 0, tzinfo=UTC)
    for outside in (pp(2026, 3, 10, 12, 59), pp(2026, 3, 10, 14), pp(2026, 3, 10, 23)):
        now = outside.astimezone(UTC)
        assert send_at(LOW, now, LUNCH, PHNOM_PENH) == now


def test_urgent_warning_ignores_quiet_hours() -> None:
    now = pp(2026, 3, 10, 23, 15).astimezone(UTC)
    assert send_at(LAST_HOUR, now, NIGHT, PHNOM_PENH) == now
    assert send_at(LOW, now, NIGHT, PHNOM_PENH) > now


def test_quiet_hours_end_across_spring_forward_is_the_wall_clock_end() -> None:
    # 2026-03-29: Berlin moves from CET (+1) to CEST (+2) at 02:00.
    now = datetime(2026, 3, 28, 23, 0, tzinfo=BERLIN).astimezone(UTC)  # 22:00 UTC
    result = quiet_hours_end(now, NIGHT, BERLIN)
    assert result == datetime(2026, 3, 29, 5, 0, tzinfo=UTC)  # 07:00 CEST
    local = result.astimezone(BERLIN)
    assert (local.hour, local.minute) == (7, 0)
    assert local.utcoffset() == timedelta(hours=2)
    assert result - now == timedelta(hours=7)  # one hour less than eight on the wall


def test_quiet_hours_end_across_fall_back_is_the_wall_clock_end() -> None:
    # 2026-10-25: Berlin moves from CEST (+2) back to CET (+1) at 03:00.
    now = datetime(2026, 10, 24, 23, 0, tzinfo=BERLIN).astimezone(UTC)  # 21:00 UTC
    result = quiet_hours_end(now, NIGHT, BERLIN)
    assert result == datetime(2026, 10, 25, 6, 0, tzinfo=UTC)  # 07:00 CET
    assert result - now == timedelta(hours=9)


def test_quiet_hours_ending_in_the_repeated_hour_ends_at_the_right_occurrence() -> None:
    # 2026-10-25: 02:00-03:00 happens twice in Berlin; quiet hours end at 02:30.
    quiet = QuietHours(22 * 60, 2 * 60 + 30)
    first = datetime(2026, 10, 25, 0, 10, tzinfo=UTC)  # 02:10 CEST
    assert quiet_hours_end(first, quiet, BERLIN) == datetime(2026, 10, 25, 0, 30, tzinfo=UTC)
    second = datetime(2026, 10, 25, 1, 10, tzinfo=UTC)  # 02:10 CET, the second time round
    assert quiet_hours_end(second, quiet, BERLIN) == datetime(2026, 10, 25, 1, 30, tzinfo=UTC)


def test_quiet_hours_ending_in_the_skipped_hour_moves_forward_by_the_gap() -> None:
    # 2026-03-29: 02:30 does not exist in Berlin; the end comes at 03:30 CEST.
    quiet = QuietHours(22 * 60, 2 * 60 + 30)
    now = datetime(2026, 3, 29, 0, 30, tzinfo=UTC)  # 01:30 CET
    result = quiet_hours_end(now, quiet, BERLIN)
    assert result == datetime(2026, 3, 29, 1, 30, tzinfo=UTC)
    assert not quiet.contains(result.astimezone(BERLIN))


QUIET_ZONES = st.sampled_from([PHNOM_PENH, BERLIN, ZoneInfo("America/New_York"),
                               ZoneInfo("Australia/Lord_Howe")])
QUIET_SPANS = st.tuples(st.integers(0, 24 * 60 - 1), st.integers(0, 24 * 60 - 1)).filter(
    lambda span: span[0] != span[1]).map(lambda span: QuietHours(*span))
NOWS = st.datetimes(datetime(2020, 1, 1), datetime(2030, 1, 1), timezones=st.just(UTC))


@settings(deadline=None)
@given(NOWS, QUIET_SPANS, QUIET_ZONES)
def test_quiet_hours_end_is_the_first_moment_outside_them(now: datetime, quiet: QuietHours,
                                                          zone: ZoneInfo) -> None:
    result = quiet_hours_end(now, quiet, zone)
    assert result.utcoffset() == timedelta(0)
    if not quiet.contains(now.astimezone(zone)):
        assert result == now
        return
    assert now < result <= now + timedelta(hours=25)
    local = result.astimezone(zone)
    assert not quiet.contains(local)
    # on the wall, the end of the span, unless a clock change skipped that time
    shifted = local.utcoffset() != (result - timedelta(hours=1)).astimezone(zone).utcoffset()
    assert (local.hour * 60 + local.minute == quiet.end_minute and local.second == 0) or shifted
    # and just before it, still quiet (the span has not ended earlier)
    assert quiet.contains((result - timedelta(minutes=1)).astimezone(zone)) or shifted


def test_quiet_hours_end_keeps_the_timezone_of_now() -> None:
    now = pp(2026, 3, 10, 23, 15).astimezone(UTC)
    assert quiet_hours_end(now, NIGHT, PHNOM_PENH).tzinfo is UTC


# --- next_check_at --------------------------------------------------------------------------


def approx(actual: timedelta, expected: timedelta) -> bool:
    return abs(actual - expected) <= timedelta(milliseconds=1)


def test_healthy_line_is_checked_in_six_hours() -> None:
    result = next_check_at(NOW, reading(balance=5_00, data_mb=2_000), None,
                           Thresholds(balance_minor=100, data_mb=500))
    assert result == NOW + HEALTHY_CHECK == NOW + timedelta(hours=6)


def test_no_reading_is_checked_as_healthy() -> None:
    assert next_check_at(NOW, None, None, BALANCE_ONLY) == NOW + timedelta(hours=6)


@pytest.mark.parametrize(("jitter", "factor"), [(0.0, 0.9), (0.25, 0.95), (0.75, 1.05)])
def test_jitter_spreads_the_check_by_ten_percent(jitter: float, factor: float) -> None:
    result = next_check_at(NOW, reading(balance=5_00), None, BALANCE_ONLY, jitter=jitter)
    assert approx(result - NOW, timedelta(hours=6) * factor)


def test_jitter_near_one_stays_within_ten_percent() -> None:
    delay = next_check_at(NOW, reading(balance=5_00), None, BALANCE_ONLY,
                          jitter=0.999999) - NOW
    assert timedelta(hours=6) * 1.09 < delay <= timedelta(hours=6) * 1.1


@given(st.floats(min_value=0, max_value=1, exclude_max=True))
def test_jitter_keeps_healthy_check_within_ten_percent(jitter: float) -> None:
    delay = next_check_at(NOW, reading(balance=5_00), None, BALANCE_ONLY, jitter=jitter) - NOW
    assert timedelta(hours=6) * 0.9 - timedelta(milliseconds=1) <= delay
    assert delay <= timedelta(hours=6) * 1.1


def test_low_balance_is_checked_in_thirty_minutes() -> None:
    result = next_check_at(NOW, reading(balance=50), None, BALANCE_ONLY)
    assert result == NOW + LOW_CHECK == NOW + timedelta(minutes=30)


def test_low_data_is_checked_in_thirty_minutes() -> None:
    result = next_check_at(NOW, reading(balance=5_00, data_mb=10), None,
                           Thresholds(balance_minor=100, data_mb=500))
    assert result == NOW + timedelta(minutes=30)


def test_balance_falling_fast_is_checked_within_the_hour() -> None:
    # 10.00 -> 8.00 in 6 hours: at that rate 1.00 is crossed well within 24 hours
    previous = reading(balance=10_00, read_at=NOW - timedelta(hours=6))
    result = next_check_at(NOW, reading(balance=8_00), previous, BALANCE_ONLY)
    assert result == NOW + FALLING_CHECK == NOW + timedelta(hours=1)


def test_data_falling_fast_is_checked_within_the_hour() -> None:
    previous = reading(data_mb=3_000, read_at=NOW - timedelta(hours=2))
    result = next_check_at(NOW, reading(data_mb=2_000), previous, DATA_ONLY)
    assert result == NOW + timedelta(hours=1)


def test_slow_fall_is_healthy() -> None:
    # 10.00 -> 9.90 in 6 hours: 0.40 a day, nowhere near 1.00 within 24 hours
    previous = reading(balance=10_00, read_at=NOW - timedelta(hours=6))
    result = next_check_at(NOW, reading(balance=9_90), previous, BALANCE_ONLY)
    assert result == NOW + timedelta(hours=6)


def test_rising_balance_is_healthy() -> None:
    previous = reading(balance=2_00, read_at=NOW - timedelta(hours=6))
    result = next_check_at(NOW, reading(balance=10_00), previous, BALANCE_ONLY)
    assert result == NOW + timedelta(hours=6)


def test_previous_reading_not_earlier_is_not_a_trend() -> None:
    previous = reading(balance=100_00, read_at=NOW)
    assert next_check_at(NOW, reading(balance=2_00), previous, BALANCE_ONLY) == (
        NOW + timedelta(hours=6))
    later = reading(balance=100_00, read_at=NOW + timedelta(hours=1))
    assert next_check_at(NOW, reading(balance=2_00), later, BALANCE_ONLY) == (
        NOW + timedelta(hours=6))


def test_falling_without_a_threshold_is_healthy() -> None:
    previous = reading(balance=10_00, read_at=NOW - timedelta(hours=1))
    result = next_check_at(NOW, reading(balance=1_00), previous, Thresholds())
    assert result == NOW + timedelta(hours=6)


@pytest.mark.parametrize(
    ("failures", "delay"),
    [
        (1, timedelta(minutes=5)),
        (2, timedelta(minutes=10)),
        (3, timedelta(minutes=20)),
        (4, timedelta(minutes=40)),
        (5, timedelta(minutes=80)),
        (8, timedelta(minutes=640)),
        (9, timedelta(hours=12)),
        (10, timedelta(hours=12)),
        (50, timedelta(hours=12)),
        (10_000, timedelta(hours=12)),
    ],
)
def test_failures_back_off_exponentially_up_to_twelve_hours(failures: int,
                                                            delay: timedelta) -> None:
    assert next_check_at(NOW, None, None, Thresholds(), failures=failures) == NOW + delay


def test_failures_take_precedence_over_a_low_reading() -> None:
    result = next_check_at(NOW, reading(balance=10), None, BALANCE_ONLY, failures=6)
    assert result == NOW + timedelta(minutes=160)


def test_failure_backoff_is_jittered_too() -> None:
    result = next_check_at(NOW, None, None, Thresholds(), failures=20, jitter=0.0)
    assert approx(result - NOW, timedelta(hours=12) * 0.9)


def test_wake_at_in_the_future_pulls_the_check_earlier() -> None:
    soon = NOW + timedelta(hours=2)
    result = next_check_at(NOW, reading(balance=5_00), None, BALANCE_ONLY,
                           wake_at=(None, NOW + timedelta(hours=4), soon))
    assert result == soon


def test_wake_at_later_than_the_check_does_not_delay_it() -> None:
    result = next_check_at(NOW, reading(balance=50), None, BALANCE_ONLY,
                           wake_at=(NOW + timedelta(hours=3),))
    assert result == NOW + timedelta(minutes=30)


def test_past_wake_at_moments_are_ignored() -> None:
    result = next_check_at(NOW, reading(balance=5_00), None, BALANCE_ONLY,
                           wake_at=(NOW - timedelta(minutes=5), NOW, None))
    assert result == NOW + timedelta(hours=6)


def test_never_sooner_than_a_minute() -> None:
    result = next_check_at(NOW, reading(balance=5_00), None, BALANCE_ONLY,
                           wake_at=(NOW + timedelta(seconds=10),))
    assert result == NOW + MIN_CHECK == NOW + timedelta(minutes=1)


@pytest.mark.parametrize(
    ("until_end", "check_in"),
    [
        (timedelta(days=3, hours=2), timedelta(hours=2)),  # the three-day warning
        (timedelta(hours=24, minutes=45), timedelta(minutes=45)),  # the 24-hour warning
        (timedelta(hours=1, minutes=20), timedelta(minutes=20)),  # the last-hour warning
        (timedelta(hours=1, seconds=20), timedelta(minutes=1)),  # never under a minute
    ],
)
def test_validity_end_pulls_the_check_to_each_warning(until_end: timedelta,
                                                      check_in: timedelta) -> None:
    line = reading(balance=5_00, validity_end=NOW + until_end)
    assert next_check_at(NOW, line, None, BALANCE_ONLY) == NOW + check_in


def test_validity_far_away_does_not_pull_the_check() -> None:
    line = reading(balance=5_00, validity_end=NOW + timedelta(days=20))
    assert next_check_at(NOW, line, None, BALANCE_ONLY) == NOW + timedelta(hours=6)


def test_validity_moments_already_passed_are_ignored() -> None:
    # 2 days left: the three-day mark is behind, the 24-hour mark a day ahead
    line = reading(balance=5_00, validity_end=NOW + timedelta(days=2))
    assert next_check_at(NOW, line, None, BALANCE_ONLY) == NOW + timedelta(hours=6)
    line = reading(balance=5_00, validity_end=NOW + timedelta(hours=25))
    assert next_check_at(NOW, line, None, BALANCE_ONLY) == NOW + timedelta(hours=1)


MOMENTS = st.one_of(st.none(), st.timedeltas(-timedelta(days=5), timedelta(days=5)).map(
    lambda delta: NOW + delta))
AMOUNTS = st.one_of(st.none(), st.integers(0, 100_000))
READINGS = st.one_of(
    st.none(),
    st.builds(
        lambda balance, data, end, ago: reading(balance=balance, data_mb=data, validity_end=end,
                                                read_at=NOW - ago),
        AMOUNTS, AMOUNTS, MOMENTS, st.timedeltas(timedelta(0), timedelta(days=3)),
    ),
)
THRESHOLDS = st.builds(Thresholds, AMOUNTS, AMOUNTS)


@settings(deadline=None)
@given(READINGS, READINGS, THRESHOLDS, st.integers(0, 100),
       st.floats(min_value=0, max_value=1, exclude_max=True),
       st.lists(MOMENTS, max_size=4).map(tuple))
def test_next_check_is_always_ahead_and_within_twelve_hours(
        line: LineReading | None, previous: LineReading | None, thresholds: Thresholds,
        failures: int, jitter: float, wake_at: tuple[datetime | None, ...]) -> None:
    result = next_check_at(NOW, line, previous, thresholds, failures=failures, jitter=jitter,
                           wake_at=wake_at)
    assert result > NOW
    assert result >= NOW + MIN_CHECK
    assert result <= NOW + MAX_RETRY * 1.1
    ahead = [moment for moment in wake_at if moment is not None and moment > NOW]
    if ahead:
        assert result <= max(min(ahead), NOW + MIN_CHECK)


# --- threshold_rule -------------------------------------------------------------------------


def test_threshold_rule_fires_on_crossing_below() -> None:
    assert threshold_rule(50, 100, in_episode=False, episode=0) == ThresholdDecision(
        True, True, 1)


def test_threshold_rule_does_not_fire_again_while_low() -> None:
    assert threshold_rule(10, 100, in_episode=True, episode=1) == ThresholdDecision(
        False, True, 1)


def test_threshold_rule_at_threshold_ends_the_episode() -> None:
    assert threshold_rule(100, 100, in_episode=True, episode=3) == ThresholdDecision(
        False, False, 3)
    assert threshold_rule(500, 100, in_episode=False, episode=3) == ThresholdDecision(
        False, False, 3)


@pytest.mark.parametrize("in_episode", [True, False])
def test_threshold_rule_without_a_value_keeps_state(in_episode: bool) -> None:
    assert threshold_rule(None, 100, in_episode=in_episode, episode=4) == ThresholdDecision(
        False, in_episode, 4)


@pytest.mark.parametrize("in_episode", [True, False])
def test_threshold_rule_without_a_threshold_keeps_state(in_episode: bool) -> None:
    assert threshold_rule(0, None, in_episode=in_episode, episode=2) == ThresholdDecision(
        False, in_episode, 2)


def run_rule(values: list[int | None], threshold: int | None) -> tuple[int, ThresholdDecision]:
    decision = ThresholdDecision(False, False, 0)
    fires = 0
    for value in values:
        decision = threshold_rule(value, threshold, in_episode=decision.in_episode,
                                  episode=decision.episode)
        fires += decision.fire
    return fires, decision


def test_threshold_rule_fires_once_per_downward_crossing() -> None:
    values: list[int | None] = [500, 90, 80, None, 70, 100, None, 99, 150, 20, 10]
    fires, decision = run_rule(values, 100)
    assert fires == 3
    assert decision == ThresholdDecision(False, True, 3)


def test_threshold_rule_starting_low_fires_at_once() -> None:
    fires, decision = run_rule([10, 20, 30], 100)
    assert fires == 1
    assert decision.episode == 1


def count_crossings(values: list[int | None], threshold: int) -> int:
    """Downward crossings, counted plainly: a known value below the threshold after the
    last known value was at or above it (or there was none)."""
    crossings, was_low = 0, False
    for value in values:
        if value is None:
            continue
        is_low = value < threshold
        if is_low and not was_low:
            crossings += 1
        was_low = is_low
    return crossings


@given(st.lists(st.one_of(st.none(), st.integers(-1_000, 1_000)), max_size=60),
       st.integers(-1_000, 1_000))
def test_threshold_rule_fire_count_equals_downward_crossings(values: list[int | None],
                                                             threshold: int) -> None:
    fires, decision = run_rule(values, threshold)
    assert fires == count_crossings(values, threshold)
    assert decision.episode == fires
    known = [value for value in values if value is not None]
    assert decision.in_episode == (bool(known) and known[-1] < threshold)


@given(st.lists(st.one_of(st.none(), st.integers(0, 10_000)), max_size=60),
       st.integers(0, 10_000))
def test_warnings_for_low_balance_matches_threshold_rule(values: list[int | None],
                                                         threshold: int) -> None:
    state = EpisodeState()
    warned = 0
    for value in values:
        warnings, state = warnings_for(reading(balance=value),
                                       Thresholds(balance_minor=threshold), state, NOW)
        warned += kinds(warnings).count(WarningKind.LOW_BALANCE)
    assert warned == count_crossings(values, threshold) == state.balance_episode


# --- keep-alive -----------------------------------------------------------------------------


def test_keep_alive_due_from_days_before_the_validity_end() -> None:
    end = datetime(2026, 4, 1, 12, 0, tzinfo=UTC)
    assert not keep_alive_due(end, 3, end - timedelta(days=3, seconds=1))
    assert keep_alive_due(end, 3, end - timedelta(days=3))
    assert keep_alive_due(end, 3, end - timedelta(days=1))
    assert keep_alive_due(end, 3, end + timedelta(days=1))  # late is still due


def test_keep_alive_due_with_zero_days_is_the_validity_end() -> None:
    end = datetime(2026, 4, 1, 12, 0, tzinfo=UTC)
    assert not keep_alive_due(end, 0, end - timedelta(seconds=1))
    assert keep_alive_due(end, 0, end)


def test_keep_alive_not_due_without_a_validity_end() -> None:
    assert not keep_alive_due(None, 3, NOW)
    assert not keep_alive_due(None, 0, NOW + timedelta(days=10_000))


def test_keep_alive_wake() -> None:
    end = datetime(2026, 4, 1, 12, 0, tzinfo=UTC)
    assert keep_alive_wake(end, 3) == datetime(2026, 3, 29, 12, 0, tzinfo=UTC)
    assert keep_alive_wake(end, 0) == end
    assert keep_alive_wake(None, 3) is None
    assert keep_alive_wake(end, None) is None


def test_keep_alive_wake_is_when_it_becomes_due() -> None:
    end = datetime(2026, 4, 1, 12, 0, tzinfo=UTC)
    wake = keep_alive_wake(end, 5)
    assert wake is not None
    assert keep_alive_due(end, 5, wake)
    assert not keep_alive_due(end, 5, wake - timedelta(microseconds=1))


# --- calendar_due ---------------------------------------------------------------------------


def test_calendar_due_nothing_missed() -> None:
    schedule = MonthlyOnDay(15)
    due = pp(2026, 3, 15, 9).astimezone(UTC)
    now = due + timedelta(minutes=2)
    assert calendar_due(schedule, due, now, PHNOM_PENH) == CalendarDue(
        due, 0, None, pp(2026, 4, 15, 9).astimezone(UTC))


def test_calendar_due_exactly_at_due_time() -> None:
    schedule = WeeklyOn(0)
    due = pp(2026, 3, 9, 9).astimezone(UTC)  # a Monday
    result = calendar_due(schedule, due, due, PHNOM_PENH)
    assert result == CalendarDue(due, 0, None, pp(2026, 3, 16, 9).astimezone(UTC))


def test_calendar_due_when_now_is_exactly_the_next_run() -> None:
    schedule = EveryNDays(1, date(2026, 1, 1))
    due = pp(2026, 3, 10, 9).astimezone(UTC)
    now = pp(2026, 3, 11, 9).astimezone(UTC)
    result = calendar_due(schedule, due, now, PHNOM_PENH)
    assert result == CalendarDue(now, 1, due, pp(2026, 3, 12, 9).astimezone(UTC))


def test_calendar_due_monthly_on_the_31st_across_february() -> None:
    schedule = MonthlyOnDay(31)
    due = pp(2026, 1, 31, 9).astimezone(UTC)
    result = calendar_due(schedule, due, pp(2026, 2, 1, 8), PHNOM_PENH)
    assert result == CalendarDue(due, 0, None, pp(2026, 2, 28, 9))
    result = calendar_due(schedule, due, pp(2026, 2, 28, 10), PHNOM_PENH)
    assert result == CalendarDue(pp(2026, 2, 28, 9), 1, due, pp(2026, 3, 31, 9))


def test_calendar_due_monthly_on_the_31st_into_april() -> None:
    schedule = MonthlyOnDay(31)
    due = pp(2026, 3, 31, 9).astimezone(UTC)
    result = calendar_due(schedule, due, pp(2026, 4, 2), PHNOM_PENH)
    assert result == CalendarDue(due, 0, None, pp(2026, 4, 30, 9))
    assert result.next_run_at.tzinfo is UTC


def test_calendar_due_monthly_missed_for_three_months() -> None:
    schedule = MonthlyOnDay(31)
    due = pp(2026, 1, 31, 9).astimezone(UTC)
    now = pp(2026, 4, 1, 12).astimezone(UTC)
    result = calendar_due(schedule, due, now, PHNOM_PENH)
    assert result.missed == 2  # Jan 31 and Feb 28 are reported; Mar 31 runs
    assert result.first_missed == due
    assert result.run_at == pp(2026, 3, 31, 9)
    assert result.next_run_at == pp(2026, 4, 30, 9)
    assert result.next_run_at > now


def test_calendar_due_weekly_missed() -> None:
    schedule = WeeklyOn(4, time(18, 30))  # Fridays 18:30
    due = pp(2026, 3, 6, 18, 30).astimezone(UTC)
    now = pp(2026, 3, 21, 7).astimezone(UTC)  # Saturday two weeks later
    result = calendar_due(schedule, due, now, PHNOM_PENH)
    assert result == CalendarDue(pp(2026, 3, 20, 18, 30), 2, due, pp(2026, 3, 27, 18, 30))


def test_calendar_due_every_n_days() -> None:
    schedule = EveryNDays(10, date(2026, 3, 1))
    due = pp(2026, 3, 11, 9).astimezone(UTC)
    result = calendar_due(schedule, due, pp(2026, 3, 25), PHNOM_PENH)
    assert result == CalendarDue(pp(2026, 3, 21, 9), 1, due, pp(2026, 3, 31, 9))


def test_calendar_due_daily_rule_after_three_days_down() -> None:
    schedule = EveryNDays(1, date(2026, 1, 1))
    due = pp(2026, 3, 10, 9).astimezone(UTC)
    now = pp(2026, 3, 12, 20).astimezone(UTC)  # runs on the 10th, 11th and 12th were due
    result = calendar_due(schedule, due, now, PHNOM_PENH)
    assert result.missed == 2
    assert result.first_missed == due
    assert result.run_at == pp(2026, 3, 12, 9)
    assert result.next_run_at == pp(2026, 3, 13, 9)


def test_calendar_due_in_a_dst_zone() -> None:
    schedule = EveryNDays(1, date(2026, 1, 1), time(9, 0))
    due = datetime(2026, 3, 28, 9, 0, tzinfo=BERLIN).astimezone(UTC)
    now = datetime(2026, 3, 30, 8, 0, tzinfo=BERLIN).astimezone(UTC)
    result = calendar_due(schedule, due, now, BERLIN)
    assert result.missed == 1
    assert result.run_at == datetime(2026, 3, 29, 7, 0, tzinfo=UTC)  # 09:00 CEST
    assert result.next_run_at == datetime(2026, 3, 30, 7, 0, tzinfo=UTC)


ZONES = st.sampled_from([PHNOM_PENH, BERLIN, ZoneInfo("America/New_York"), ZoneInfo("UTC")])
TIMES = st.one_of(st.just(time(9, 0)),
                  st.builds(time, st.integers(0, 23), st.sampled_from([0, 15, 30, 59])))
SCHEDULES: st.SearchStrategy[Schedule] = st.one_of(
    st.builds(MonthlyOnDay, st.integers(1, 31), TIMES),
    st.builds(WeeklyOn, st.integers(0, 6), TIMES),
    st.builds(EveryNDays, st.integers(1, 60), st.dates(date(2020, 1, 1), date(2030, 1, 1)),
              TIMES),
)
STARTS = st.datetimes(datetime(2021, 1, 1), datetime(2030, 1, 1), timezones=st.just(UTC))


@settings(deadline=None)
@given(SCHEDULES, STARTS, ZONES, st.timedeltas(timedelta(0), timedelta(days=200)),
       st.booleans())
def test_calendar_due_runs_the_latest_and_counts_the_rest(
        schedule: Schedule, start: datetime, zone: ZoneInfo, down: timedelta,
        on_schedule: bool) -> None:
    due = next_run(schedule, start, zone) if on_schedule else start
    now = due + down
    result = calendar_due(schedule, due, now, zone)
    assert result.next_run_at > now
    assert due <= result.run_at <= now
    assert result.next_run_at == next_run(schedule, result.run_at, zone)
    assert (result.first_missed is None) == (result.missed == 0)
    if result.missed:
        assert result.first_missed == due
    # the runs between due and the one run now, counted one by one
    runs, moment = 0, due
    while moment < result.run_at:
        moment = next_run(schedule, moment, zone)
        runs += 1
    assert moment == result.run_at
    assert runs == result.missed
