"""The top-up provider port: what Reloadly, DingConnect, DT One or Airalo can do for us.
Their plans are read into bot.domain.products.Product.

A top-up carries our own reference. Providers' idempotency is not trusted: a top-up whose
outcome is unknown is looked up by that reference, never re-sent blind.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol, runtime_checkable

from bot.domain.charges import DeclineReason
from bot.domain.money import Money
from bot.domain.operators import Operator
from bot.domain.products import Product


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
    delivered: Money | None = None  # what the line received, in its operator's currency
    provider_cost: Money | None = None  # what the provider took from our account for it
    provider_fee: Money | None = None  # a fee the provider reports on top
    provider_discount: Money | None = None  # a discount (commission) the provider gave us
    esim_iccid: str | None = None  # the eSIM an eSIM order made (bot/gateways/esim_charges.py)


def declined(request: TopUpRequest, reason: DeclineReason, at: datetime, *,
             amount: Money | None = None, provider_tx_id: str = "") -> TopUpResult:
    """The FAILED result of a top-up the provider refused (or would refuse: an adapter
    that knows the provider does not sell it declines without sending)."""
    return TopUpResult(reference=request.reference, status=TopUpStatus.FAILED,
                       provider_tx_id=provider_tx_id,
                       amount=amount or request.amount or Money(0, "USD"), at=at,
                       product_id=request.product_id, failure_reason=reason.value)


class GatewayError(Exception):
    """A provider call that did not give an answer we can act on."""

    transient = True


class GatewayTimeout(GatewayError):
    """No answer in time: the top-up may or may not have happened. Look it up."""


class DuplicateReference(GatewayError):
    """The provider refuses a reference it has seen (as Reloadly's customIdentifier)."""

    transient = False


class TryLater(GatewayError):
    """The provider refused for now and did nothing (Reloadly refuses a second top-up of a
    number within about two minutes): the charge waits and goes again."""

    def __init__(self, reason: str, retry_after: timedelta) -> None:
        super().__init__(f"{reason}; try again in {retry_after}")
        self.reason = reason
        self.retry_after = retry_after


class TopUpProvider(Protocol):
    async def catalog(self, operator: Operator) -> list[Product]: ...

    async def top_up(self, request: TopUpRequest) -> TopUpResult:
        """Declines come back as a FAILED result; unknown outcomes raise GatewayTimeout."""
        ...

    async def lookup(self, reference: str) -> TopUpResult | None:
        """The top-up made under our reference, or None if the provider never saw it."""
        ...


@runtime_checkable
class ProviderAccount(Protocol):
    async def balance(self) -> Money:
        """What is left of our float at the provider."""
        ...


@runtime_checkable
class ProviderReports(Protocol):
    async def transactions(self, start: datetime, end: datetime) -> list[TopUpResult]:
        """Every top-up the provider made for us in [start, end), for reconciliation."""
        ...


class TopUpBackend(TopUpProvider, ProviderReports, Protocol):
    """What CARRIER_BACKEND names: tops lines up and lists what it did (the simulated
    carrier, Reloadly, DingConnect). Real providers are a ProviderAccount too."""
