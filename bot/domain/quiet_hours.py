"""Quiet hours: a span of the local day (it may wrap midnight) when warnings wait."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

_TIME = r"(\d{1,2})(?:[:.h](\d{2}))?"
_SPAN = re.compile(rf"^\s*{_TIME}\s*(?:-|–|—|to)\s*{_TIME}\s*$", re.IGNORECASE)


class QuietHoursError(ValueError):
    """Not a span of hours such as 22-7 or 22:00-07:00."""


@dataclass(frozen=True)
class QuietHours:
    start_minute: int  # minutes after local midnight
    end_minute: int

    def contains(self, local: datetime) -> bool:
        minute = local.hour * 60 + local.minute
        if self.start_minute <= self.end_minute:
            return self.start_minute <= minute < self.end_minute
        return minute >= self.start_minute or minute < self.end_minute

    def label(self) -> str:
        return (f"{self.start_minute // 60:02d}:{self.start_minute % 60:02d}–"
                f"{self.end_minute // 60:02d}:{self.end_minute % 60:02d}")


def parse_quiet_hours(text: str) -> QuietHours:
    match = _SPAN.match(text or "")
    if not match:
        raise QuietHoursError(text)
    start_h, start_m, end_h, end_m = (int(group or 0) for group in match.groups())
    if start_h > 23 or end_h > 23 or start_m > 59 or end_m > 59:
        raise QuietHoursError(text)
    start, end = start_h * 60 + start_m, end_h * 60 + end_m
    if start == end:
        raise QuietHoursError(text)
    return QuietHours(start, end)
