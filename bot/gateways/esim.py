"""The eSIM provider port: what Airalo (or the simulated eSIM provider) can do for us.

Unlike a physical prepaid line, an eSIM can be read: the provider tells the data left, the
expiry and whether the profile is installed. Ordering is not idempotent at Airalo, so every
order and top-up carries our reference (as the order's description) and an order whose
outcome is unknown is looked for by that reference before anything is ordered again.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from bot.domain.charges import DeclineReason
from bot.domain.money import Money
from bot.domain.operators import Operator
from bot.domain.products import Product, ProductKind
from bot.gateways.provider_text import our_operator
from bot.gateways.topup import GatewayError


class PackageKind(enum.StrEnum):
    SIM = "sim"  # a new eSIM with its first data
    TOPUP = "topup"  # more data (and days) for an eSIM already bought


class EsimStatus(enum.StrEnum):
    NOT_INSTALLED = "not_installed"  # bought; the profile is not on a phone yet
    ACTIVE = "active"
    USED_UP = "used_up"  # its data is spent
    EXPIRED = "expired"
    RECYCLED = "recycled"  # the provider took it back: it can never be used again
    UNKNOWN = "unknown"

    @property
    def can_install(self) -> bool:
        """Whether showing the install code again makes sense (a QR installs once)."""
        return self is EsimStatus.NOT_INSTALLED


@dataclass(frozen=True)
class EsimPackage:
    id: str
    kind: PackageKind
    title: str  # the provider's own words, e.g. "1 GB - 7 Days"
    price: Money  # what the user pays (the provider's recommended retail price)
    net_price: Money  # what the provider takes from our account
    data_mb: int | None  # None: unlimited
    validity_days: int
    coverage: str  # "Cambodia", or the region ("Asia") for a regional eSIM
    countries: tuple[str, ...]  # ISO codes the eSIM works in
    networks: tuple[str, ...]  # the networks it uses in Cambodia ("Smart", "Cellcard")
    rechargeable: bool = True

    @property
    def unlimited(self) -> bool:
        return self.data_mb is None

    @property
    def regional(self) -> bool:
        """Whether it works in other countries too (Airalo's regional eSIMs)."""
        return len(self.countries) > 1

    def shelf_order(self) -> tuple[int, bool, int, str]:
        """How packages are listed: cheapest first, a Cambodian one before a regional one."""
        return (self.price.minor, self.regional, self.validity_days, self.id)

    @property
    def network(self) -> Operator | None:
        """The Cambodian operator whose network it uses (the first of ours it names)."""
        return next((found for name in self.networks
                     if (found := our_operator(name)) is not None), None)

    def as_product(self) -> Product | None:
        """The package as the charge pipeline sells it; None when it names no Cambodian
        network of ours (its line would have no operator to show or to watch)."""
        network = self.network
        if network is None:
            return None
        return Product(
            id=self.id, operator=network,
            kind=ProductKind.ESIM if self.kind is PackageKind.SIM else ProductKind.DATA,
            name=self.title, price=self.price, validity_days=self.validity_days,
            data_mb=self.data_mb, coverage=self.coverage)


@dataclass(frozen=True)
class InstallCode:
    """What a phone needs to download the eSIM profile."""

    iccid: str
    activation_code: str  # the LPA string the QR code holds: LPA:1$<SM-DP+>$<matching id>
    smdp_address: str
    matching_id: str
    apple_install_url: str | None = None  # iOS 17.4+ installs from this link directly
    confirmation_code: str | None = None

    @staticmethod
    def lpa(smdp_address: str, matching_id: str) -> str:
        return f"LPA:1${smdp_address}${matching_id}"


@dataclass(frozen=True)
class EsimOrder:
    """An order of a new eSIM (with its install codes) or of a top-up (none)."""

    reference: str  # ours, sent as the order's description
    order_id: str  # the provider's
    code: str  # the provider's order code, shown to support
    package_id: str
    kind: PackageKind
    price: Money  # the retail price of one eSIM or top-up
    net_price: Money | None  # what we paid, where the provider says
    at: datetime
    validity_days: int
    sims: tuple[InstallCode, ...] = ()
    iccid: str | None = None  # the eSIM a top-up was for, or the one eSIM bought


@dataclass(frozen=True)
class EsimUsage:
    iccid: str
    status: EsimStatus
    read_at: datetime
    remaining_mb: int | None  # None: unlimited (or the provider does not say)
    total_mb: int | None
    expires_at: datetime | None  # None until installed


class EsimRefused(GatewayError):
    """The provider refused and did nothing: the order fails with a reason the user reads."""

    transient = False

    def __init__(self, reason: DeclineReason, detail: str = "") -> None:
        super().__init__(f"{reason.value}: {detail}" if detail else reason.value)
        self.reason = reason


class EsimNotFound(GatewayError):
    """The provider knows no eSIM by that ICCID."""

    transient = False


class EsimProvider(Protocol):
    async def catalog(self) -> list[EsimPackage]:
        """Every package listed for Cambodia: new eSIMs and top-ups."""
        ...

    async def packages(self) -> list[EsimPackage]:
        """The eSIMs for sale that work in Cambodia (local and regional), cheapest first."""
        ...

    async def order(self, package_id: str, reference: str) -> EsimOrder:
        """Buys one eSIM. EsimRefused for a refusal; GatewayTimeout when the outcome is
        unknown: then ``find_order(reference)``, never order again blind."""
        ...

    async def find_order(self, reference: str) -> EsimOrder | None:
        """The order (eSIM or top-up) made under our reference, or None."""
        ...

    async def install_code(self, iccid: str) -> InstallCode:
        """The eSIM's install code again, from the provider (we keep no activation code)."""
        ...

    async def usage(self, iccid: str) -> EsimUsage:
        """Data left, expiry and status: EsimNotFound, RateLimited or GatewayError."""
        ...

    async def topup_packages(self, iccid: str) -> list[EsimPackage]:
        """The top-ups this eSIM can take (none once it expired)."""
        ...

    async def top_up(self, iccid: str, package_id: str, reference: str) -> EsimOrder:
        """Buys a top-up for an eSIM; errors as ``order``."""
        ...

    async def balance(self) -> Money:
        """What is left of our credit at the provider."""
        ...

    async def orders_between(self, start: datetime, end: datetime) -> list[EsimOrder]:
        """Every order (eSIMs and top-ups) made in [start, end), for reconciliation."""
        ...
