"""eSIMs in the chat: the shop, an offer at today's price, the purchase, and the install code
of an eSIM that is not installed yet.

Buying is a charge on a line of its own (the eSIM line, without an ICCID until the order
succeeds), so it shares everything a top-up has: one charge per Confirm button (two taps buy
one eSIM), the wallet hold, the order sent once under the charge's reference and looked up
(never re-sent blind) when its outcome is unknown, the receipt or the money back, and the
nightly reconciliation. The install code is never stored: it is read from the provider
whenever it is shown.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
from dataclasses import dataclass

from bot.clock import Clock
from bot.domain.money import Money
from bot.domain.products import Product
from bot.gateways.esim import EsimProvider, EsimStatus, InstallCode
from bot.gateways.topup import GatewayError
from bot.services.catalog import CatalogService
from bot.services.charging import (
    CannotAfford,
    ChargingService,
    EsimOrdered,
    Invalid,
    RequestProblem,
)
from storage.crypto import FieldCipher
from storage.db import Database
from storage.lines import LinesRepository
from storage.wallet import WalletRepository

log = logging.getLogger(__name__)

TOKEN_CHARS = 10  # a package's token in a button: its id may be longer than a button allows


def package_token(product_id: str) -> str:
    """A short stable token for a package id (button data holds at most 24 characters)."""
    return hashlib.sha256(product_id.encode()).hexdigest()[:TOKEN_CHARS]


@dataclass(frozen=True)
class Offer:
    product: Product
    wallet: Money  # what the user's wallet has available now
    nonce: str  # the Confirm button's: one purchase per button

    @property
    def short(self) -> Money | None:
        """How much the wallet lacks, when it lacks anything (the wallet and the shop are
        both kept in US dollars)."""
        price = self.product.price
        return price - self.wallet if self.wallet < price else None


@dataclass(frozen=True)
class InstallCard:
    """What a phone needs to install an eSIM, as the chat shows it."""

    activation_code: str  # the LPA string the QR code holds
    smdp_address: str
    matching_id: str
    apple_install_url: str | None

    @classmethod
    def of(cls, code: InstallCode) -> InstallCard:
        return cls(activation_code=code.activation_code, smdp_address=code.smdp_address,
                   matching_id=code.matching_id, apple_install_url=code.apple_install_url)


@dataclass(frozen=True)
class Installable:
    card: InstallCard
    label: str  # the line's name, for the message


class CodeUnavailable(Exception):
    """The install code cannot be read now (``transient``: try again later) or ever."""

    def __init__(self, reason: str, *, transient: bool) -> None:
        super().__init__(reason)
        self.transient = transient


@dataclass(frozen=True)
class AlreadyInstalled:
    status: EsimStatus


@dataclass(frozen=True)
class NotAnEsimOfYours:
    pass


@dataclass(frozen=True)
class ProviderUnavailable:
    pass


class EsimService:
    def __init__(self, db: Database, cipher: FieldCipher, catalog: CatalogService,
                 provider: EsimProvider, charging: ChargingService, clock: Clock) -> None:
        self._db = db
        self._cipher = cipher
        self._catalog = catalog
        self._provider = provider
        self._charging = charging
        self._clock = clock

    async def shop(self) -> list[Product]:
        """New eSIMs for sale, cheapest first; none when the provider cannot say (and never
        could: a catalog read once is kept)."""
        try:
            return await self._catalog.esims_for_sale()
        except GatewayError as error:
            log.warning("eSIM packages not read: %s", error)
            return []

    async def find(self, token: str) -> Product | None:
        """The eSIM for sale whose button token this is (None: withdrawn, or forged)."""
        return next((p for p in await self.shop() if package_token(p.id) == token), None)

    async def offer(self, user_id: int, token: str) -> Offer | None:
        product = await self.find(token)
        if product is None:
            return None
        async with self._db.read() as conn:
            wallet = await WalletRepository(conn).available(user_id, product.price.currency)
        return Offer(product, wallet, secrets.token_hex(6))

    async def buy(self, user_id: int, token: str, nonce: str,
                  ) -> EsimOrdered | CannotAfford | Invalid:
        """Buys the eSIM of the Confirm button (token and nonce from it): one purchase per
        button. The order is sent by ``send_order`` (in the background)."""
        product = await self.find(token)
        if product is None:
            return Invalid(RequestProblem.UNKNOWN_PLAN)
        return await self._charging.buy_esim(user_id, product.id, nonce)

    async def send_order(self, charge_id: int) -> None:
        await self._charging.submit(charge_id)

    async def code_to_deliver(self, line_id: int) -> InstallCard:
        """The install code of a bought eSIM, for the message that delivers it (read from
        the provider: it is never stored). CodeUnavailable when the provider cannot say."""
        async with self._db.read() as conn:
            line = await LinesRepository(conn, self._cipher).get(line_id)
        if line is None or line.iccid is None:
            raise CodeUnavailable(f"line {line_id} has no eSIM", transient=False)
        try:
            return InstallCard.of(await self._provider.install_code(line.iccid))
        except GatewayError as error:
            raise CodeUnavailable(f"install code of line {line_id}: {type(error).__name__}",
                                  transient=error.transient) from error

    async def install_code(self, user_id: int, line_id: int,
                           ) -> Installable | AlreadyInstalled | NotAnEsimOfYours \
            | ProviderUnavailable:
        """The install code again, for an eSIM of the user's that is not installed yet: a
        QR code installs once, so an installed eSIM's is never shown."""
        async with self._db.read() as conn:
            line = await LinesRepository(conn, self._cipher).get(line_id)
        if line is None or line.owner_id != user_id or not line.is_bound \
                or not line.is_esim or line.iccid is None:
            return NotAnEsimOfYours()
        try:
            usage = await self._provider.usage(line.iccid)
            if not usage.status.can_install:
                return AlreadyInstalled(usage.status)
            return Installable(InstallCard.of(await self._provider.install_code(line.iccid)),
                               line.label)
        except GatewayError as error:
            log.warning("Install code of line %s not read: %s", line_id, error)
            return ProviderUnavailable()
