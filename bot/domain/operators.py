"""Cambodian mobile operators and the validity rules of their prepaid lines."""

from __future__ import annotations

import enum
from datetime import timedelta


class Operator(enum.StrEnum):
    SMART = "smart"
    CELLCARD = "cellcard"
    METFONE = "metfone"
    SEATEL = "seatel"

    @property
    def display_name(self) -> str:
        return _DISPLAY[self]


_DISPLAY = {
    Operator.SMART: "Smart",
    Operator.CELLCARD: "Cellcard",
    Operator.METFONE: "Metfone",
    Operator.SEATEL: "Seatel",
}

# Days of validity one airtime top-up buys (USD cents -> days): the largest tier at or
# below the amount applies. Smart's figures are published; the others are close to them.
VALIDITY_TIERS: dict[Operator, tuple[tuple[int, int], ...]] = {
    Operator.SMART: ((100, 8), (200, 16), (500, 40), (1000, 70), (2000, 100)),
    Operator.CELLCARD: ((100, 7), (200, 15), (500, 35), (1000, 65), (2000, 100)),
    Operator.METFONE: ((100, 7), (200, 15), (500, 38), (1000, 70), (2000, 120)),
    Operator.SEATEL: ((100, 10), (200, 20), (500, 45), (1000, 90), (2000, 180)),
}

# A line that has not been topped up for this long is disconnected and its number recycled.
RECYCLE_AFTER: dict[Operator, timedelta] = {
    Operator.SMART: timedelta(days=68),
    Operator.CELLCARD: timedelta(days=90),
    Operator.METFONE: timedelta(days=90),
    Operator.SEATEL: timedelta(days=90),
}

MIN_AIRTIME_USD_CENTS = 100


def validity_days_for_airtime(operator: Operator, usd_cents: int) -> int:
    """Days of validity an airtime top-up of ``usd_cents`` buys; 0 below the smallest tier."""
    days = 0
    for threshold, tier_days in VALIDITY_TIERS[operator]:
        if usd_cents >= threshold:
            days = tier_days
    return days


def cheapest_validity_extension(operator: Operator) -> tuple[int, int]:
    """(USD cents, days) of the smallest top-up that extends validity ("keep my line alive")."""
    return VALIDITY_TIERS[operator][0]
