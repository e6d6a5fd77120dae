"""Reading what providers write for people: operator names ("Smart Cambodia") and plan
descriptions ("Smart 20 GB / 30 days"), the same way for every adapter."""

from __future__ import annotations

import re
from decimal import Decimal

from bot.domain.operators import Operator

_DATA = re.compile(r"(?P<amount>\d+(?:[.,]\d+)?)\s*(?P<unit>GB|MB)\b", re.IGNORECASE)
_DAYS = re.compile(r"(?P<days>\d+)\s*(?:days?|d)\b", re.IGNORECASE)


def our_operator(name: str) -> Operator | None:
    """The Cambodian operator a provider's name for it means ("Metfone Cambodia")."""
    lowered = name.lower()
    for operator in Operator:
        if operator.value in lowered:
            return operator
    return None


def data_mb_in(text: str) -> int | None:
    """The data a description offers, in MB ("20 GB" is 20480); None when it says none."""
    found = _DATA.search(text)
    if found is None:
        return None
    amount = Decimal(found["amount"].replace(",", "."))
    return int(amount * (1024 if found["unit"].upper() == "GB" else 1))


def days_in(text: str) -> int | None:
    """The validity a description states ("30 days"); None when it states none."""
    found = _DAYS.search(text)
    return int(found["days"]) if found else None
