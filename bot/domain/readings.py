"""What is known about a line's balance, data and validity, and where that came from."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime, timedelta

from bot.domain.money import Money
from bot.domain.operators import RECYCLE_AFTER, Operator, validity_days_for_airtime


class ReadingSource(enum.StrEnum):
    PROVIDER = "provider"  # read from the carrier or eSIM provider's API
    USER = "user"  # typed by the user or parsed from a forwarded carrier SMS
    ESTIMATE = "estimate"  # worked out from the last top-up


@dataclass(frozen=True)
class LineReading:
    source: ReadingSource
    read_at: datetime
    balance: Money | None = None
    data_mb: int | None = None
    validity_end: datetime | None = None


@dataclass(frozen=True)
class TriggerReading:
    """The reading a rule charged on, as its charge keeps it (readings may go later): only
    the figure the rule fired on (the balance, the data left or the validity end), where it
    came from and when; ``read_by`` names the provider that read it (an eSIM's)."""

    reading: LineReading
    read_by: str | None = None


def shown_to_owner(reading: LineReading | None,
                   verified_at: datetime | None) -> LineReading | None:
    """The reading if the line's current owner may see it.

    A reading taken before the owner proved the line (a previous owner's, or from before
    the number was recycled) is not theirs to see.
    """
    if reading is None or (verified_at is not None and reading.read_at < verified_at):
        return None
    return reading


def estimate_from_last_topup(operator: Operator, topped_up_at: datetime,
                             usd_cents: int) -> LineReading:
    """Validity estimated from the last airtime top-up (no API reads a prepaid line)."""
    days = validity_days_for_airtime(operator, usd_cents)
    return LineReading(source=ReadingSource.ESTIMATE, read_at=topped_up_at,
                       validity_end=topped_up_at + timedelta(days=days))


def recycling_deadline(operator: Operator, last_topup_at: datetime) -> datetime:
    """When the carrier disconnects and recycles a number that has not been topped up."""
    return last_topup_at + RECYCLE_AFTER[operator]
