"""The top-up provider port: what Reloadly, DingConnect, DT One or Airalo can do for us.

A top-up carries our own reference. Providers' idempotency is not trusted: a top-up whose
outcome is unknown is looked up by that reference, never re-sent blind.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

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


class TopUpStatus(enum.StrEnum):
    PENDING = "pending"  # accepted; look it up by reference until it settles
    SUCCEEDED = "succeeded"
    FAILED = "failed"


@dataclass(frozen=True)
class TopUpRequest:
    reference: str  # ours, derived from the charge's idempotency key; never reused
    phone_e164: str
    operator: Operator
    amount: Money | None = None  # airtime by amount ...
    product_id: str | None = None  # ... or a product from the catalog


@dataclass(frozen=True)
class TopUpResult:
    reference: str
    status: TopUpStatus
    provider_tx_id: str
    amount: Money
    at: datetime
    product_id: str | None = None
    failure_reason: str | None = None
    balance_after: Money | None = None  # where the provider tells
    data_after_mb: int | None = None
    validity_end: datetime | None = None


class GatewayError(Exception):
    """A provider call that did not give an answer we can act on."""

    transient = True


class GatewayTimeout(GatewayError):
    """No answer in time: the top-up may or may not have happened. Look it up."""


class DuplicateReference(GatewayError):
    """The provider refuses a reference it has seen (as Reloadly's customIdentifier)."""

    transient = False


class TopUpProvider(Protocol):
    async def catalog(self, operator: Operator) -> list[Product]: ...

    async def top_up(self, request: TopUpRequest) -> TopUpResult:
        """Declines come back as a FAILED result; unknown outcomes raise GatewayTimeout."""
        ...

    async def lookup(self, reference: str) -> TopUpResult | None:
        """The top-up made under our reference, or None if the provider never saw it."""
        ...
