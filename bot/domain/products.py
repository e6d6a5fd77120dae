"""A plan an operator sells: airtime or a data bundle, its price and what it gives. Every
top-up provider's catalog is read into these (bot/gateways/), and services and handlers
work with them without knowing whose catalog it was."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from bot.domain.money import Money
from bot.domain.operators import Operator


class ProductKind(enum.StrEnum):
    AIRTIME = "airtime"
    DATA = "data"  # a data bundle, or a top-up of an eSIM
    ESIM = "esim"  # a new eSIM with its first data


@dataclass(frozen=True)
class Product:
    id: str
    operator: Operator
    kind: ProductKind
    name: str
    price: Money
    validity_days: int
    airtime: Money | None = None  # credit it adds to the line's balance
    data_mb: int | None = None  # None with an eSIM kind: unlimited
    coverage: str | None = None  # an eSIM's: "Cambodia", or a region ("Asia")

    @property
    def for_esims(self) -> bool:
        """Sold by the eSIM provider (a new eSIM, or a top-up of one), not by a carrier."""
        return self.coverage is not None
