"""Wallet payments: record one and credit it, find it again by its external id, record its
refund once.

The external id (Telegram's charge id, or "operator:<reference>") is a payment reference:
it is stored encrypted, and found through its blind index (UNIQUE: a replayed update or a
repeated operator credit credits nothing). The unique (payment, kind) index on the ledger
makes a second refund of one payment impossible.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import and_, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from bot.domain.money import Money
from bot.domain.wallet import CREDIT_KIND_OF_SOURCE, EntryKind
from storage.common import insert_ignoring_conflict
from storage.crypto import FieldCipher
from storage.tables import ledger_entries, wallet_payments

_INDEX_LABEL = "wallet-payment"  # migration 0007 computes the same index for old rows


@dataclass(frozen=True)
class PaymentRecord:
    id: int
    user_id: int
    source: str  # telegram, operator
    external_id: str  # decrypted
    amount: Money  # what the wallet was credited
    payload: str | None
    actor: str
    created_at: datetime
    refunded_at: datetime | None
    credit_memo: str | None  # the memo of the crediting ledger entry


class PaymentsRepository:
    def __init__(self, conn: AsyncConnection, cipher: FieldCipher) -> None:
        self._conn = conn
        self._cipher = cipher

    def external_index(self, external_id: str) -> str:
        return self._cipher.blind_index(f"{_INDEX_LABEL}|{external_id}")

    async def record_payment(self, *, user_id: int, source: str, external_id: str,
                             amount: Money, now: datetime, actor: str,
                             provider_charge_id: str | None = None,
                             payload: str | None = None, memo: str | None = None) -> int | None:
        """Records a payment and credits it; None (nothing credited) when ``external_id``
        was recorded before - a replayed update or a repeated operator credit."""
        index = self.external_index(external_id)
        inserted = await insert_ignoring_conflict(self._conn, wallet_payments, {
            "user_id": user_id, "source": source, "external_id": index,
            "external_ref_enc": self._cipher.encrypt(external_id),
            "provider_charge_enc": (self._cipher.encrypt(provider_charge_id)
                                    if provider_charge_id else None),
            "amount_minor": amount.minor, "currency": amount.currency, "payload": payload,
            "actor": actor, "created_at": now,
        })
        if not inserted:
            return None
        payment_id = int((await self._conn.execute(select(wallet_payments.c.id).where(
            wallet_payments.c.external_id == index))).scalar_one())
        kind = CREDIT_KIND_OF_SOURCE[source]
        await self._conn.execute(insert(ledger_entries).values(
            user_id=user_id, currency=amount.currency, amount_minor=amount.minor,
            kind=kind.value, payment_id=payment_id, memo=memo, created_at=now))
        return payment_id

    async def by_external_id(self, external_id: str) -> PaymentRecord | None:
        credit = ledger_entries.alias("credit")
        query = (
            select(wallet_payments, credit.c.memo.label("credit_memo"))
            .select_from(wallet_payments.outerjoin(credit, and_(
                credit.c.payment_id == wallet_payments.c.id,
                credit.c.kind.in_([kind.value for kind in CREDIT_KIND_OF_SOURCE.values()]))))
            .where(wallet_payments.c.external_id == self.external_index(external_id)))
        row = (await self._conn.execute(query)).mappings().first()
        if row is None:
            return None
        return PaymentRecord(
            id=row["id"], user_id=row["user_id"], source=row["source"],
            external_id=self._cipher.decrypt(row["external_ref_enc"]),
            amount=Money(row["amount_minor"], row["currency"]),
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
