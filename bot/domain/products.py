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
    DATA = "data"


@dataclass(frozen=True)
class Product:
    id: str
    operator: Operator
    kind: ProductKind
    name: str
    price: Money
    validity_days: int
    airtime: Money | None = None  # credit it adds to the line's balance
    data_mb: int | None = None
