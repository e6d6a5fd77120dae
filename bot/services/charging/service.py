"""ChargingService: the one object the rest of the bot talks to about charges.

It builds the phases of a charge (asking, answering, submission, settlement, recovery) over
one set of collaborators and hands each call to the phase it belongs to; reading a charge
is done here.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy.ext.asyncio import AsyncConnection

from bot.clock import Clock
from bot.domain.charges import ChargeState
from bot.domain.money import Money
from bot.domain.products import Product
from bot.domain.readings import TriggerReading
from bot.gateways.esim_charges import EsimCharges
from bot.gateways.simulated_catalog import PRODUCTS
from bot.gateways.topup import TopUpProvider
from bot.services.catalog import CatalogService
from bot.services.charging.answering import Answering
from bot.services.charging.asking import Asking
from bot.services.charging.buying import Buying, CannotAfford, EsimOrdered
from bot.services.charging.common import Deps, Phase
from bot.services.charging.outcomes import (
    AlreadyHandled,
    AlreadyOpen,
    Approved,
    Declined,
    InsufficientFunds,
    Invalid,
    NotYourLine,
    NotYours,
    PriceChanged,
    ReconcileReport,
    Requested,
    RuleCharge,
    RuleSkipped,
)
from bot.services.charging.policy import Checkpoint, RetryPolicy
from bot.services.charging.recovery import Recovery
from bot.services.charging.settlement import Settlement
from bot.services.charging.submission import Submission
from storage.charges import ChargeRecord
from storage.crypto import FieldCipher
from storage.db import Database
from storage.rules import RuleRecord


class ChargingService(Phase):
    def __init__(self, db: Database, cipher: FieldCipher, provider: TopUpProvider,
                 clock: Clock, *, approval_timeout: timedelta = timedelta(hours=1),
                 admin_chat_ids: Sequence[int] = (), retry: RetryPolicy | None = None,
                 zone_for: Callable[[int], Awaitable[ZoneInfo]] | None = None,
                 catalog: CatalogService | None = None, concurrency: int = 8,
                 checkpoint: Checkpoint | None = None,
                 esims: EsimCharges | None = None) -> None:
        """``checkpoint(point, charge_id)`` is awaited at the points a crash matters
        ("approved", "submitted", "settling" - inside the settling transaction, before the
        receipt is written -, "settled"): fault-injection tests raise there."""
        super().__init__(Deps(
            db=db, cipher=cipher, provider=provider, clock=clock,
            approval_timeout=approval_timeout, admins=tuple(dict.fromkeys(admin_chat_ids)),
            retry=retry or RetryPolicy(), zone_for=zone_for,
            catalog=CatalogService.of(PRODUCTS) if catalog is None else catalog,
            concurrency=max(1, concurrency), checkpoint=checkpoint, esims=esims))
        self._settlement = Settlement(self._deps)
        self._submission = Submission(self._deps, self._settlement)
        self._asking = Asking(self._deps, self._submission)
        self._answering = Answering(self._deps, self._submission)
        self._recovery = Recovery(self._deps, self._asking, self._submission, self._settlement)
        self._buying = Buying(self._deps)

    # --- reading ----------------------------------------------------------------------------

    def known_plan(self, product_id: str | None) -> Product | None:
        """A plan as the last catalog read had it (no provider call)."""
        return self._catalog.get(product_id)

    async def get(self, charge_id: int) -> ChargeRecord | None:
        return await self._get(charge_id)

    async def owns(self, user_id: int, charge_id: int) -> bool:
        """Whether the charge is the user's (a cheap check before answering a button)."""
        charge = await self._get(charge_id)
        return charge is not None and charge.user_id == user_id

    async def line_label(self, line_id: int) -> str:
        """How a line is shown in a charge's messages (nickname, or the masked number)."""
        async with self._db.read() as conn:
            return self._label(await self._line(conn, line_id))

    async def line_label_of_charge(self, user_id: int, charge_id: int) -> str | None:
        """How the line of the user's charge is shown; None for a charge not theirs."""
        charge = await self._get(charge_id)
        if charge is None or charge.user_id != user_id:
            return None
        return await self.line_label(charge.line_id)

    async def list_by_state(self, state: ChargeState | None,
                            limit: int = 50) -> list[ChargeRecord]:
        """For operators: charges in ``state`` (every state when None), newest first."""
        async with self._db.read() as conn:
            return await self._repo(conn).latest([state] if state is not None else None, limit)

    # --- asking -----------------------------------------------------------------------------

    async def request_manual(self, user_id: int, line_id: int, amount: Money | None,
                             product_id: str | None, nonce: str,
                             ) -> Requested | AlreadyOpen | NotYourLine | Invalid:
        return await self._asking.request_manual(user_id, line_id, amount, product_id, nonce)

    async def create_for_rule(self, rule: RuleRecord | int, *, period_key: str | None = None,
                              episode: int | None = None, now: datetime | None = None,
                              submit: bool = True) -> RuleCharge | RuleSkipped:
        return await self._asking.create_for_rule(rule, period_key=period_key,
                                                  episode=episode, now=now, submit=submit)

    async def create_for_rule_in(self, conn: AsyncConnection, rule_id: int, key: str,
                                 now: datetime, *, trigger: TriggerReading | None = None,
                                 ) -> RuleCharge | RuleSkipped:
        return await self._asking.create_for_rule_in(conn, rule_id, key, now,
                                                     trigger=trigger)

    async def after_rule_charge(self, outcome: RuleCharge | RuleSkipped,
                                ) -> RuleCharge | RuleSkipped:
        return await self._asking.after_rule_charge(outcome)

    async def expire_due(self, now: datetime | None = None, limit: int = 100) -> int:
        return await self._asking.expire_due(now, limit)

    # --- answering --------------------------------------------------------------------------

    async def approve(self, user_id: int, charge_id: int, *, submit: bool = True,
                      ) -> (Approved | AlreadyHandled | InsufficientFunds | PriceChanged
                            | NotYours):
        return await self._answering.approve(user_id, charge_id, submit=submit)

    async def decline(self, user_id: int, charge_id: int) -> Declined | AlreadyHandled | NotYours:
        return await self._answering.decline(user_id, charge_id)

    # --- submitting and recovering ------------------------------------------------------------

    async def buy_esim(self, user_id: int, product_id: str, nonce: str,
                       ) -> EsimOrdered | CannotAfford | Invalid:
        """Buys a new eSIM from the wallet (the Confirm tap is the approval); ``submit`` it
        next, in the background."""
        return await self._buying.buy_esim(user_id, product_id, nonce)

    async def submit(self, charge_id: int) -> ChargeRecord | None:
        return await self._submission.submit(charge_id)

    async def warm_catalog(self) -> None:
        await self._recovery.warm_catalog()

    async def process_due(self, now: datetime | None = None, limit: int = 100) -> int:
        return await self._recovery.process_due(now, limit)

    async def sweep(self, now: datetime | None = None) -> tuple[int, int]:
        return await self._recovery.sweep(now)

    async def reconcile_on_start(self) -> ReconcileReport:
        return await self._recovery.reconcile_on_start()
