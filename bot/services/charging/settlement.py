"""Settling: what the provider says becomes a succeeded, failed or pending charge, with the
receipt or the failure in the outbox in the same transaction."""

from __future__ import annotations

import logging
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncConnection

from bot.domain.charges import ChargeState
from bot.domain.invariants import holds, present
from bot.domain.money import Money
from bot.domain.readings import LineReading, ReadingSource
from bot.domain.references import masked_reference
from bot.gateways.topup import TopUpResult, TopUpStatus
from bot.services.charging.common import Phase
from bot.services.charging.notices import (
    ChargeFailed,
    ChargeProcessing,
    EsimReady,
    Receipt,
    TriggerShown,
)
from bot.services.charging.policy import ESIM_PURCHASE, FIRST_ESIM_CHECK
from bot.services.notices import Audience, queue
from storage.charges import ChargeRecord, ProviderMoney
from storage.lines import LinesRepository
from storage.notifications import NotificationsRepository
from storage.readings import ReadingsRepository
from storage.wallet import WalletRepository

log = logging.getLogger(__name__)


def _provider_money(result: TopUpResult) -> ProviderMoney | None:
    """The provider's cost, fee and discount, kept when they share one currency."""
    reported = [m for m in (result.provider_cost, result.provider_fee,
                            result.provider_discount) if m is not None]
    if not reported or len({m.currency for m in reported}) != 1:
        return None
    return ProviderMoney(
        currency=reported[0].currency,
        cost_minor=result.provider_cost.minor if result.provider_cost else None,
        fee_minor=result.provider_fee.minor if result.provider_fee else None,
        discount_minor=result.provider_discount.minor if result.provider_discount else None)


class Settlement(Phase):
    async def apply(self, charge_id: int, result: TopUpResult) -> ChargeRecord | None:
        """Settles a submitted charge with what the provider says (idempotent)."""
        if result.status is TopUpStatus.PENDING:
            return await self._pending(charge_id)
        now = self._clock.now()
        async with self._db.write() as conn:
            repo = self._repo(conn)
            charge = await repo.get(charge_id, lock=True)
            if charge is None or charge.state is not ChargeState.SUBMITTED:
                return charge  # settled already (another worker, a replay)
            if result.status is TopUpStatus.FAILED:
                return await self.fail_in(conn, charge, result.failure_reason or "declined",
                                           now)
            await self._succeed_in(conn, charge, result, now)
            settled = await repo.get(charge_id)
        await self._point("settled", charge_id)
        return settled

    async def _succeed_in(self, conn: AsyncConnection, charge: ChargeRecord,
                          result: TopUpResult, now: datetime) -> None:
        repo = self._repo(conn)
        wallet = WalletRepository(conn)
        captured = await wallet.capture(charge.id, now=now)
        if not captured:
            log.error("Charge %s succeeded without an open hold", charge.id)
        moved = await repo.transition(
            charge.id, ChargeState.SUBMITTED, ChargeState.SUCCEEDED, now,
            provider_tx=result.provider_tx_id, next_attempt_at=None, failure_reason=None,
            delivered=result.delivered, provider_money=_provider_money(result),
            balance_after_minor=(result.balance_after.minor
                                 if result.balance_after is not None else None),
            validity_end_after=result.validity_end)
        holds(moved, f"charge {charge.id} succeeded once")
        if (result.balance_after is not None or result.data_after_mb is not None
                or result.validity_end is not None):
            await ReadingsRepository(conn).add(charge.line_id, LineReading(
                source=ReadingSource.PROVIDER, read_at=result.at, balance=result.balance_after,
                data_mb=result.data_after_mb, validity_end=result.validity_end),
                recorded_at=now)
        if result.amount != charge.amount:
            log.warning("Charge %s: provider charged %s for %s", charge.id, result.amount,
                        charge.amount)
        await self._point("settling", charge.id)
        wallet_left = await wallet.available(charge.user_id, charge.amount.currency)
        if charge.cause == ESIM_PURCHASE:
            await self._esim_bought(conn, charge, result, wallet_left, now)
            return
        receipt = Receipt(
            charge=await self._facts(conn, charge), reference=charge.reference,
            balance_after=result.balance_after, data_after_mb=result.data_after_mb,
            validity_end=result.validity_end, wallet=wallet_left, at=result.at,
            delivered=result.delivered,
            provider_tx_shown=(masked_reference(result.provider_tx_id)
                               if result.provider_tx_id else None),
            trigger=TriggerShown.of(charge.trigger))
        await queue(NotificationsRepository(conn), receipt, user_id=charge.user_id,
                    chat_id=charge.user_id, dedupe_key=f"receipt:{charge.id}", now=now)
        await self._audit(conn, now, "system", "charge.succeeded", charge,
                          reference=charge.reference, attempts=charge.attempts)

    async def _esim_bought(self, conn: AsyncConnection, charge: ChargeRecord,
                           result: TopUpResult, wallet_left: Money, now: datetime) -> None:
        """The eSIM's line gets its ICCID (the purchase proves it) and the user their QR."""
        iccid = present(result.esim_iccid, f"the order of eSIM charge {charge.id} names its "
                                           "eSIM")
        attached = await LinesRepository(conn, self._cipher).attach_iccid(
            charge.line_id, iccid, now=now, check_at=now + FIRST_ESIM_CHECK)
        holds(attached, f"eSIM line {charge.line_id} got its ICCID once")
        ready = EsimReady(charge=await self._facts(conn, charge), line_id=charge.line_id,
                          wallet=wallet_left,
                          provider_tx_shown=(masked_reference(result.provider_tx_id)
                                             if result.provider_tx_id else None))
        await queue(NotificationsRepository(conn), ready, user_id=charge.user_id,
                    chat_id=charge.user_id, dedupe_key=f"esim-ready:{charge.id}", now=now)
        await self._audit(conn, now, "system", "charge.succeeded", charge,
                          reference=charge.reference, attempts=charge.attempts,
                          esim_line=charge.line_id)

    async def fail_in(self, conn: AsyncConnection, charge: ChargeRecord, reason: str,
                       now: datetime) -> ChargeRecord | None:
        """Fails an approved or submitted charge: hold released, user and admins told."""
        repo = self._repo(conn)
        current = await repo.get(charge.id, lock=True)
        if current is None or current.state not in (ChargeState.APPROVED,
                                                    ChargeState.SUBMITTED):
            return current
        reason = reason[:64]
        await WalletRepository(conn).release(current.id, now=now)
        moved = await repo.transition(current.id, current.state, ChargeState.FAILED, now,
                                      failure_reason=reason, next_attempt_at=None)
        holds(moved, f"charge {current.id} failed once")
        facts = await self._facts(conn, current)
        if current.cause == ESIM_PURCHASE:  # no eSIM came of it: its line goes
            await LinesRepository(conn, self._cipher).unbind(current.line_id, now=now)
        await queue(NotificationsRepository(conn),
                    ChargeFailed(charge=facts, reason=reason, attempts=current.attempts,
                                 audience=Audience.USER),
                    user_id=current.user_id, chat_id=current.user_id,
                    dedupe_key=f"failed:{current.id}", now=now)
        await self._tell_admins(
            conn, current,
            ChargeFailed(charge=facts, reason=reason, attempts=current.attempts,
                         audience=Audience.ADMIN, user_id=current.user_id,
                         reference=current.reference),
            now, dedupe=f"failed:{current.id}")
        await self._audit(conn, now, "system", "charge.failed", current, reason=reason,
                          attempts=current.attempts)
        return await repo.get(current.id)

    async def fail(self, charge: ChargeRecord, reason: str) -> ChargeRecord | None:
        async with self._db.write() as conn:
            return await self.fail_in(conn, charge, reason, self._clock.now())

    async def _pending(self, charge_id: int) -> ChargeRecord | None:
        now = self._clock.now()
        async with self._db.write() as conn:
            repo = self._repo(conn)
            charge = await repo.get(charge_id, lock=True)
            if charge is None or charge.state is not ChargeState.SUBMITTED:
                return charge
            await repo.reschedule(charge.id, ChargeState.SUBMITTED, now, failure_reason=None,
                                  next_attempt_at=now + self.retry.poll_interval)
            first = await queue(NotificationsRepository(conn),
                                ChargeProcessing(charge=await self._facts(conn, charge)),
                                user_id=charge.user_id, chat_id=charge.user_id,
                                dedupe_key=f"processing:{charge.id}", now=now)
            if first:
                await self._audit(conn, now, "system", "charge.pending", charge,
                                  reference=charge.reference)
            return await repo.get(charge.id)
