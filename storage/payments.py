"""Wallet payments after the fact: find one by its external id, record its refund once.

A payment is credited by ``WalletRepository.record_payment``; this module reads it back
(for a repeated operator credit, a refund) and adds the refund's ledger entry. The unique
(payment, kind) index on the ledger makes a second refund of one payment impossible.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import and_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from bot.domain.money import Money
from storage.common import insert_ignoring_conflict
from storage.tables import ledger_entries, wallet_payments
from storage.wallet import EntryKind


@dataclass(frozen=True)
class PaymentRecord:
    id: int
    user_id: int
    source: str  # telegram, operator
    external_id: str
    amount: Money  # what the wallet was credited
    payload: str | None
    actor: str
    created_at: datetime
    refunded_at: datetime | None
    credit_memo: str | None  # the memo of the crediting ledger entry


class PaymentsRepository:
    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn

    async def by_external_id(self, external_id: str) -> PaymentRecord | None:
        credit = ledger_entries.alias("credit")
        query = (
            select(wallet_payments, credit.c.memo.label("credit_memo"))
            .select_from(wallet_payments.outerjoin(credit, and_(
                credit.c.payment_id == wallet_payments.c.id,
                credit.c.kind.in_((EntryKind.PAYMENT.value, EntryKind.OPERATOR_CREDIT.value)))))
            .where(wallet_payments.c.external_id == external_id))
        row = (await self._conn.execute(query)).mappings().first()
        if row is None:
            return None
        return PaymentRecord(
            id=row["id"], user_id=row["user_id"], source=row["source"],
            external_id=row["external_id"], amount=Money(row["amount_minor"], row["currency"]),
            payload=row["payload"], actor=row["actor"], created_at=row["created_at"],
            refunded_at=row["refunded_at"], credit_memo=row["credit_memo"])

    async def record_refund(self, payment: PaymentRecord, *, now: datetime,
                            memo: str | None = None) -> bool:
        """Debits the refunded payment from the wallet; False when it was refunded before."""
        inserted = await insert_ignoring_conflict(self._conn, ledger_entries, {
            "user_id": payment.user_id, "currency": payment.amount.currency,
            "amount_minor": -payment.amount.minor, "kind": EntryKind.REFUND.value,
            "payment_id": payment.id, "memo": memo, "created_at": now,
        })
        if inserted:
            await self._conn.execute(update(wallet_payments).where(
                wallet_payments.c.id == payment.id, wallet_payments.c.refunded_at.is_(None))
                .values(refunded_at=now))
        return inserted
