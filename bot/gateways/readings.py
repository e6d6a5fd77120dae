"""The line readings port: balance, data left and validity end, for backends that can tell.

No API reads the balance of a physical prepaid line; eSIM providers and our simulated
carrier can. Lines a backend cannot read are tracked from user reports and estimates.
"""

from __future__ import annotations

from typing import Protocol

from bot.domain.operators import Operator
from bot.domain.readings import LineReading


class LineNotReadable(Exception):
    """This backend cannot read that line."""


class LineReadings(Protocol):
    def can_read(self, operator: Operator) -> bool: ...

    async def read(self, phone_e164: str, operator: Operator) -> LineReading:
        """A reading with source PROVIDER; raises GatewayError or LineNotReadable."""
        ...


class NoLineReadings:
    """For a real top-up provider: it sells airtime and cannot read a physical line, so
    every line is tracked from what its user reports."""

    def can_read(self, operator: Operator) -> bool:
        return False

    async def read(self, phone_e164: str, operator: Operator) -> LineReading:
        raise LineNotReadable(f"{operator.display_name} lines are not readable here")
