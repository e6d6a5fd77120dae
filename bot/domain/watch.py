"""Watching a line: which warnings a reading calls for, when to look at the line again, and
when an auto-recharge rule fires. Pure decisions; the sweeps in bot.services do the I/O.

Warnings come once per episode: a low balance warns once, and again only after the balance
has been seen back at or above the threshold. Validity warnings come once per validity end
(three days, then 24 hours, then the last hour before it). Each decision names a
discriminator (an episode number or a date) that makes its outbox key, so a sweep that runs
twice never sends twice.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from bot.domain.quiet_hours import QuietHours
from bot.domain.readings import LineReading, ReadingSource, TriggerReading
from bot.domain.rules import Trigger
from bot.domain.schedule import Schedule, next_run

HEALTHY_CHECK = timedelta(hours=6)  # a line with room to spare
LOW_CHECK = timedelta(minutes=30)  # below a threshold, or its validity ends soon
FALLING_CHECK = timedelta(hours=1)  # heading for a threshold within a day
FIRST_RETRY = timedelta(minutes=5)  # a failed read: 5 min, 10, 20, ... up to MAX_RETRY
MAX_RETRY = timedelta(hours=12)
MIN_CHECK = timedelta(minutes=1)
JITTER = 0.1  # +-10% of the delay, so lines checked together drift apart
FALLING_HORIZON = timedelta(hours=24)
VALIDITY_SOON = timedelta(days=3)
VALIDITY_DAY = timedelta(hours=24)
VALIDITY_HOUR = timedelta(hours=1)
RECYCLE_SOON = timedelta(days=7)
TELL_FAILURES_AFTER = 3  # failed reads in a row before the user hears about it


class WarningKind(enum.StrEnum):
    LOW_BALANCE = "low_balance"
    LOW_DATA = "low_data"
    VALIDITY_3_DAYS = "validity_3d"
    VALIDITY_24_HOURS = "validity_24h"
    VALIDITY_HOUR = "validity_1h"  # the only one sent during quiet hours
    RECYCLING = "recycling"  # no top-up for so long that the carrier recycles the number


@dataclass(frozen=True)
class Thresholds:
    balance_minor: int | None = None  # warn below this balance (line currency)
    data_mb: int | None = None  # warn below this much data


@dataclass(frozen=True)
class EpisodeState:
    """Whether each low-balance / low-data episode is open, and how many there were."""

    balance_low: bool = False
    balance_episode: int = 0
    data_low: bool = False
    data_episode: int = 0


@dataclass(frozen=True)
class Warning:
    kind: WarningKind
    discriminator: str  # with the kind and the line: the outbox dedupe key
    urgent: bool = False  # sent during quiet hours too

    def dedupe_key(self, line_id: int) -> str:
        return f"warn:{self.kind.value}:{line_id}:{self.discriminator}"


def _below(value: int | None, threshold: int | None) -> bool | None:
    """True/False when both are known; None when the reading does not say."""
    if value is None or threshold is None:
        return None
    return value < threshold


def warnings_for(reading: LineReading | None, thresholds: Thresholds, state: EpisodeState,
                 now: datetime, *, recycle_at: datetime | None = None,
                 ) -> tuple[list[Warning], EpisodeState]:
    """The warnings ``reading`` calls for and the episode state after it."""
    warnings: list[Warning] = []
    if reading is not None:
        balance = reading.balance.minor if reading.balance is not None else None
        low = _below(balance, thresholds.balance_minor)
        if low is True and not state.balance_low:
            state = replace(state, balance_low=True, balance_episode=state.balance_episode + 1)
            warnings.append(Warning(WarningKind.LOW_BALANCE, str(state.balance_episode)))
        elif low is False and state.balance_low:
            state = replace(state, balance_low=False)  # recovered: the next drop warns again
        low = _below(reading.data_mb, thresholds.data_mb)
        if low is True and not state.data_low:
            state = replace(state, data_low=True, data_episode=state.data_episode + 1)
            warnings.append(Warning(WarningKind.LOW_DATA, str(state.data_episode)))
        elif low is False and state.data_low:
            state = replace(state, data_low=False)
        validity = validity_warning(reading.validity_end, now)
        if validity is not None:
            warnings.append(validity)
    if recycle_at is not None and now < recycle_at <= now + RECYCLE_SOON:
        warnings.append(Warning(WarningKind.RECYCLING, recycle_at.date().isoformat()))
    return warnings, state


def validity_warning(validity_end: datetime | None, now: datetime) -> Warning | None:
    """The most pressing validity warning due for a line whose validity ends then."""
    if validity_end is None or validity_end <= now:
        return None
    left, day = validity_end - now, validity_end.isoformat()
    if left <= VALIDITY_HOUR:
        return Warning(WarningKind.VALIDITY_HOUR, day, urgent=True)
    if left <= VALIDITY_DAY:
        return Warning(WarningKind.VALIDITY_24_HOURS, day)
    if left <= VALIDITY_SOON:
        return Warning(WarningKind.VALIDITY_3_DAYS, day)
    return None


def send_at(warning: Warning, now: datetime, quiet: QuietHours | None,
            zone: ZoneInfo) -> datetime:
    """When a warning may go out: now, or when the user's quiet hours end."""
    if warning.urgent or quiet is None:
        return now
    return quiet_hours_end(now, quiet, zone)


def quiet_hours_end(now: datetime, quiet: QuietHours, zone: ZoneInfo) -> datetime:
    """``now`` outside the quiet hours; inside them, the moment they end (UTC)."""
    local = now.astimezone(zone)
    if not quiet.contains(local):
        return now
    end = local.replace(hour=quiet.end_minute // 60, minute=quiet.end_minute % 60, second=0,
                        microsecond=0)
    if end <= local:
        end += timedelta(days=1)
    # Built in local wall time, then normalised: a DST change in between moves it with the
    # clock on the wall, as the user expects.
    return datetime.combine(end.date(), end.timetz().replace(tzinfo=None),
                            tzinfo=zone).astimezone(now.tzinfo)


def next_check_at(now: datetime, reading: LineReading | None, previous: LineReading | None,
                  thresholds: Thresholds, *, failures: int = 0, jitter: float = 0.5,
                  wake_at: tuple[datetime | None, ...] = ()) -> datetime:
    """When to look at the line again.

    Sooner when it is low or falling fast, later when healthy; after failed reads, backing
    off exponentially. ``jitter`` in [0, 1) (0.5: none) spreads lines out by +-10%. ``wake_at``
    are moments something is due (a validity warning, a keep-alive rule): the check comes
    no later than the first of them that is still ahead.
    """
    delay: timedelta
    if failures > 0:
        delay = min(FIRST_RETRY * 2 ** min(failures - 1, 20), MAX_RETRY)
    elif reading is not None and _is_low(reading, thresholds):
        delay = LOW_CHECK
    elif reading is not None and _falling_fast(reading, previous, thresholds):
        delay = FALLING_CHECK
    else:
        delay = HEALTHY_CHECK
    delay = delay * (1 + JITTER * (2 * jitter - 1))
    if reading is not None and reading.validity_end is not None:
        end = reading.validity_end
        wake_at = (*wake_at, end - VALIDITY_SOON, end - VALIDITY_DAY, end - VALIDITY_HOUR)
    ahead = [moment - now for moment in wake_at if moment is not None and moment > now]
    delay = min([delay, *ahead])
    return now + max(delay, MIN_CHECK)


def _is_low(reading: LineReading, thresholds: Thresholds) -> bool:
    balance = reading.balance.minor if reading.balance is not None else None
    return bool(_below(balance, thresholds.balance_minor)
                or _below(reading.data_mb, thresholds.data_mb))


def _falling_fast(reading: LineReading, previous: LineReading | None,
                  thresholds: Thresholds) -> bool:
    """At the rate since the previous reading, a threshold is crossed within a day."""
    if previous is None or reading.read_at <= previous.read_at:
        return False
    elapsed = (reading.read_at - previous.read_at).total_seconds()
    pairs: list[tuple[int | None, int | None, int | None]] = [
        (reading.balance.minor if reading.balance is not None else None,
         previous.balance.minor if previous.balance is not None else None,
         thresholds.balance_minor),
        (reading.data_mb, previous.data_mb, thresholds.data_mb)]
    for now_value, before, threshold in pairs:
        if now_value is None or before is None or threshold is None or now_value >= before:
            continue
        per_second = (before - now_value) / elapsed
        if now_value - per_second * FALLING_HORIZON.total_seconds() < threshold:
            return True
    return False


# --- auto-recharge triggers -------------------------------------------------------------


@dataclass(frozen=True)
class ThresholdDecision:
    fire: bool  # a new episode began: charge, with the key rule + episode
    in_episode: bool
    episode: int


def threshold_rule(value: int | None, threshold: int | None, *, in_episode: bool,
                   episode: int) -> ThresholdDecision:
    """A balance_below / data_below rule on a reading's ``value``: it fires when the value
    crosses below the threshold, once, until the value is seen at or above it again."""
    low = _below(value, threshold)
    if low is True and not in_episode:
        return ThresholdDecision(True, True, episode + 1)
    if low is False:
        return ThresholdDecision(False, False, episode)
    return ThresholdDecision(False, in_episode, episode)  # still low, or nothing to say


def keep_alive_due(validity_end: datetime | None, days_before: int,
                   now: datetime) -> bool:
    """A keep-alive rule fires from ``days_before`` days ahead of the validity end on (once
    per validity end: its key names the end)."""
    return validity_end is not None and now >= validity_end - timedelta(days=days_before)


def trigger_reading(trigger: Trigger, reading: LineReading,
                    read_by: str | None = None) -> TriggerReading | None:
    """What a charge of a rule keeps of the reading it fired on: the balance of a
    low-balance rule, the data of a low-data rule, the validity end of a keep-alive rule
    (the other figures left out); None for a calendar rule, which no reading fires, and for
    a reading without that figure. ``read_by`` is kept only for a provider's reading."""
    figures = {
        Trigger.BALANCE_BELOW: LineReading(reading.source, reading.read_at,
                                           balance=reading.balance),
        Trigger.DATA_BELOW: LineReading(reading.source, reading.read_at,
                                        data_mb=reading.data_mb),
        Trigger.KEEP_ALIVE: LineReading(reading.source, reading.read_at,
                                        validity_end=reading.validity_end),
    }
    cited = figures.get(trigger)
    if cited is None or (cited.balance is None and cited.data_mb is None
                         and cited.validity_end is None):
        return None
    return TriggerReading(cited, read_by if reading.source is ReadingSource.PROVIDER else None)


def keep_alive_wake(validity_end: datetime | None, days_before: int | None) -> datetime | None:
    if validity_end is None or days_before is None:
        return None
    return validity_end - timedelta(days=days_before)


@dataclass(frozen=True)
class CalendarDue:
    run_at: datetime  # the run to do now: the latest one due
    missed: int  # earlier runs that fell due while nobody ran them: reported, not charged
    first_missed: datetime | None
    next_run_at: datetime  # strictly after now


def calendar_due(schedule: Schedule, due_at: datetime, now: datetime,
                 zone: ZoneInfo) -> CalendarDue:
    """What a calendar rule whose run ``due_at`` (<= now) came due does now: a bot that was
    down runs the latest due run once and reports the ones before it."""
    latest, missed = due_at, 0
    while True:
        following = next_run(schedule, latest, zone)
        if following > now:
            return CalendarDue(latest, missed, due_at if missed else None, following)
        latest, missed = following, missed + 1
