"""A user's history as calendar months and exported amounts: pure rules, no I/O.

Months are the user's own (their time zone), as the monthly cap counts them. The monthly
summary push goes out on the 1st at 09:00 local time, for the month that just ended; a bot
that was down then still sends it for a few days, never later (an old summary is noise).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

from bot.domain.money import CURRENCIES, Money

PUSH_AT = time(9, 0)  # local time on the 1st: not at midnight
PUSH_LATE_DAYS = 3  # still sent up to the end of the 3rd when the bot was down on the 1st
# UTC offsets in use run from -12:00 to +14:00: the span of local dates at one moment.
_EARLIEST_OFFSET, _LATEST_OFFSET = timedelta(hours=-12), timedelta(hours=14)
_KEY = re.compile(r"([0-9]{4})-([0-9]{2})")
FIRST_YEAR, LAST_YEAR = 2000, 9998  # a month key outside these is forged


@dataclass(frozen=True, order=True)
class Month:
    """A calendar month, as ``2026-11``."""

    year: int
    month: int

    def __post_init__(self) -> None:
        if not (FIRST_YEAR <= self.year <= LAST_YEAR and 1 <= self.month <= 12):
            raise ValueError(f"no month {self.year}-{self.month}")

    @classmethod
    def of(cls, moment: datetime, zone: ZoneInfo) -> Month:
        """The month ``moment`` falls in, on the wall in ``zone``."""
        local = moment.astimezone(zone)
        return cls(local.year, local.month)

    @classmethod
    def parse(cls, key: str) -> Month | None:
        """``2026-11`` as a Month; None for anything else (a forged button)."""
        match = _KEY.fullmatch(key)
        if match is None:
            return None
        try:
            return cls(int(match[1]), int(match[2]))
        except ValueError:
            return None

    @property
    def key(self) -> str:
        return f"{self.year:04d}-{self.month:02d}"

    @property
    def first_day(self) -> date:
        return date(self.year, self.month, 1)

    def previous(self) -> Month:
        return Month(self.year - 1, 12) if self.month == 1 else Month(self.year, self.month - 1)

    def next(self) -> Month:
        return Month(self.year + 1, 1) if self.month == 12 else Month(self.year, self.month + 1)

    def bounds(self, zone: ZoneInfo) -> tuple[datetime, datetime]:
        """[start, end) of the month in ``zone``: local midnights, each with its own offset
        (a DST change in the month moves the end, as the wall clock does)."""
        following = self.next()
        return (datetime.combine(self.first_day, time(), tzinfo=zone),
                datetime.combine(following.first_day, time(), tzinfo=zone))


def summary_due(local: datetime) -> Month | None:
    """The month whose summary is due at ``local`` (the user's wall time): the one before,
    from the 1st at PUSH_AT to the end of day PUSH_LATE_DAYS; None otherwise."""
    if local.day > PUSH_LATE_DAYS or (local.day == 1 and local.time() < PUSH_AT):
        return None
    return Month(local.year, local.month).previous()


def summaries_may_be_due(now: datetime) -> bool:
    """Whether any time zone is within the push window at ``now`` (UTC): outside it the
    push job asks the database nothing (most of the month)."""
    return any((now + offset).day <= PUSH_LATE_DAYS
               for offset in (_EARLIEST_OFFSET, _LATEST_OFFSET))


def decimal_amount(money: Money) -> str:
    """An amount as a plain decimal in its currency's minor-unit precision: ``-5.00``,
    ``20000.00`` (KHR keeps its exponent of 2), ``500`` Stars. For exports: no symbol, no
    grouping, never an exponent."""
    exponent = CURRENCIES[money.currency].exponent
    value = Decimal(money.minor).scaleb(-exponent).quantize(Decimal(1).scaleb(-exponent))
    return f"{value:f}"
