"""Answering: the user's Approve (re-priced, funds held) or Decline under a request."""

from __future__ import annotations

import logging
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncConnection

from bot.domain.charges import ChargeState
from bot.domain.invariants import holds, present
from bot.services.charging.common import Deps, Phase
from bot.services.charging.outcomes import (
    AlreadyHandled,
    Approved,
    ChargeView,
    Declined,
    InsufficientFunds,
    NotYours,
    PriceChanged,
)
from bot.services.charging.policy import ApprovalReason
from bot.services.charging.submission import Submission
from storage.charges import ChargeRecord, lock_wallet_of
from storage.wallet import WalletRepository

log = logging.getLogger(__name__)


class Answering(Phase):
    def __init__(self, deps: Deps, submission: Submission) -> None:
        super().__init__(deps)
        self._submission = submission

    async def _answerable(self, conn: AsyncConnection, user_id: int, charge_id: int,
                          now: datetime) -> ChargeRecord | AlreadyHandled | NotYours:
        """The charge, locked, when ``user_id`` may still answer its request; else why not
        (a request past its expiry is expired here, in the caller's transaction)."""
        charge = await self._repo(conn).get(charge_id, lock=True)
        if charge is None or charge.user_id != user_id:
            return NotYours()
        if charge.state is not ChargeState.AWAITING_APPROVAL:
            return AlreadyHandled(ChargeView.of(charge))
        if charge.expires_at is not None and charge.expires_at <= now:
            expired = await self._expire(conn, charge, now, actor=f"user:{user_id}",
                                         notify=False)
            return AlreadyHandled(ChargeView.of(expired))
        return charge

    async def approve(self, user_id: int, charge_id: int, *, submit: bool = True,
                      ) -> (Approved | AlreadyHandled | InsufficientFunds | PriceChanged
                            | NotYours):
        """The user's "Approve": in one transaction the charge is locked, its owner and
        state checked, its plan re-priced from the catalog (dearer: asked again; cheaper:
        charged less), the wallet checked and the funds held; then (outside it) the charge
        is submitted. A second or concurrent tap finds it handled."""
        await self._catalog.warm()  # before the transaction, which reads today's price
        now = self._clock.now()
        async with self._db.write() as conn:
            repo = self._repo(conn)
            charge = await self._answerable(conn, user_id, charge_id, now)
            if not isinstance(charge, ChargeRecord):
                return charge
            repriced = await self._reprice(conn, charge, now)
            if isinstance(repriced, PriceChanged):
                return repriced
            charge = repriced
            await lock_wallet_of(conn, user_id)
            wallet = WalletRepository(conn)
            available = await wallet.available(user_id, charge.amount.currency)
            if available < charge.amount:
                # The request as it stands, with today's (short) wallet balance in it.
                reason = (ApprovalReason.MANUAL if charge.rule_id is None
                          else ApprovalReason.ASK)
                request = await self._approval_request(conn, charge, reason)
                return InsufficientFunds(ChargeView.of(charge), available, request)
            held = await wallet.hold(charge_id=charge.id, user_id=user_id, amount=charge.amount,
                                     now=now)
            moved = await repo.transition(charge.id, ChargeState.AWAITING_APPROVAL,
                                          ChargeState.APPROVED, now,
                                          next_attempt_at=now + self.retry.lease)
            # The row lock (or SQLite's write lock) is ours: nobody else can have moved it.
            holds(held and moved, f"charge {charge.id} was held and approved once")
            await self._audit(conn, now, f"user:{user_id}", "charge.approved", charge)
            approved = present(await repo.get(charge.id), f"charge {charge.id} exists")
        await self._point("approved", charge_id)
        if not submit:
            return Approved(ChargeView.of(approved))
        return Approved(ChargeView.of(await self._submission.submit(charge_id) or approved))

    async def _reprice(self, conn: AsyncConnection, charge: ChargeRecord,
                       now: datetime) -> ChargeRecord | PriceChanged:
        """The charge at its plan's price today (the locked charge, in the caller's
        transaction). A plan no longer listed keeps its price: the provider declines it."""
        plan = self._product(charge.product_id)
        if plan is None or plan.price == charge.amount \
                or plan.price.currency != charge.amount.currency:
            return charge
        repo = self._repo(conn)
        moved = await repo.reschedule(charge.id, ChargeState.AWAITING_APPROVAL, now,
                                      amount_minor=plan.price.minor)
        holds(moved, f"charge {charge.id} was re-priced while locked")
        await self._audit(conn, now, "system", "charge.repriced", charge,
                          was=charge.amount.plain(), price=plan.price.plain())
        repriced = present(await repo.get(charge.id), f"charge {charge.id} exists")
        if plan.price < charge.amount:
            return repriced  # cheaper: approved at the lower price
        reason = ApprovalReason.MANUAL if charge.rule_id is None else ApprovalReason.ASK
        return PriceChanged(ChargeView.of(repriced), was=charge.amount,
                            request=await self._approval_request(conn, repriced, reason))

    async def decline(self, user_id: int, charge_id: int) -> Declined | AlreadyHandled | NotYours:
        now = self._clock.now()
        async with self._db.write() as conn:
            repo = self._repo(conn)
            charge = await self._answerable(conn, user_id, charge_id, now)
            if not isinstance(charge, ChargeRecord):
                return charge
            moved = await repo.transition(charge.id, ChargeState.AWAITING_APPROVAL,
                                          ChargeState.DECLINED, now, next_attempt_at=None)
            holds(moved, f"charge {charge.id} was declined once")
            await WalletRepository(conn).release(charge.id, now=now)  # none is held yet
            await self._audit(conn, now, f"user:{user_id}", "charge.declined", charge)
            declined = present(await repo.get(charge.id), f"charge {charge.id} exists")
            return Declined(ChargeView.of(declined))
