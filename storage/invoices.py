"""Wallet invoices as issued, and the Telegram payments that did not match one (disputes).

An invoice is paid at most once: ``mark_paid`` only claims an unpaid one, under a row lock
on PostgreSQL (SQLite serialises writers). A disputed payment is kept once per Telegram
charge id (its blind index is UNIQUE); the charge ids themselves are stored encrypted.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from bot.domain.money import Money
from storage.common import insert_ignoring_conflict
from storage.crypto import FieldCipher
from storage.tables import payment_disputes, wallet_invoices


@dataclass(frozen=True)
class InvoiceRecord:
    id: int
    user_id: int
    amount: Money  # what paying it adds to the wallet
    price: Money  # what Telegram was asked to charge (XTR or the provider currency)
    created_at: datetime
    paid_at: datetime | None
    payment_id: int | None


@dataclass(frozen=True)
class DisputeRecord:
    id: int
    user_id: int
    charge_id: str  # Telegram's, decrypted
    invoice_id: int | None
    paid_minor: int  # as the payment said
    paid_currency: str
    reason: str
    status: str  # held, refunded
    created_at: datetime


class InvoicesRepository:
    def __init__(self, conn: AsyncConnection, cipher: FieldCipher) -> None:
        self._conn = conn
        self._cipher = cipher

    async def create(self, *, user_id: int, amount: Money, price: Money, now: datetime) -> int:
        result = await self._conn.execute(insert(wallet_invoices).values(
            user_id=user_id, amount_minor=amount.minor, currency=amount.currency,
            price_minor=price.minor, price_currency=price.currency, created_at=now)
            .returning(wallet_invoices.c.id))
        return int(result.scalar_one())

    async def get(self, invoice_id: int, *, lock: bool = False) -> InvoiceRecord | None:
        query = select(wallet_invoices).where(wallet_invoices.c.id == invoice_id)
        if lock and self._conn.dialect.name == "postgresql":
            query = query.with_for_update()
        row = (await self._conn.execute(query)).mappings().first()
        if row is None:
            return None
        return InvoiceRecord(
            id=row["id"], user_id=row["user_id"],
            amount=Money(row["amount_minor"], row["currency"]),
            price=Money(row["price_minor"], row["price_currency"]),
            created_at=row["created_at"], paid_at=row["paid_at"], payment_id=row["payment_id"])

    async def mark_paid(self, invoice_id: int, *, payment_id: int, now: datetime) -> bool:
        """Claims an unpaid invoice for ``payment_id``; False when it was paid already."""
        result = await self._conn.execute(update(wallet_invoices).where(
            wallet_invoices.c.id == invoice_id, wallet_invoices.c.paid_at.is_(None))
            .values(paid_at=now, payment_id=payment_id))
        return bool(result.rowcount)

    # --- disputes -----------------------------------------------------------------------

    def charge_index(self, charge_id: str) -> str:
        return self._cipher.blind_index(f"telegram-charge|{charge_id}")

    async def record_dispute(self, *, user_id: int, charge_id: str,
                             provider_charge_id: str | None, invoice_id: int | None,
                             paid_minor: int, paid_currency: str, reason: str,
                             now: datetime) -> int | None:
        """The dispute's id; None when this charge id was disputed before (a replay)."""
        inserted = await insert_ignoring_conflict(self._conn, payment_disputes, {
            "user_id": user_id, "charge_index": self.charge_index(charge_id),
            "charge_enc": self._cipher.encrypt(charge_id),
            "provider_charge_enc": (self._cipher.encrypt(provider_charge_id)
                                    if provider_charge_id else None),
            "invoice_id": invoice_id, "paid_minor": paid_minor,
            "paid_currency": paid_currency, "reason": reason, "status": "held",
            "created_at": now})
        if not inserted:
            return None
        dispute = await self.dispute_by_charge(charge_id)
        return dispute.id if dispute is not None else None

    async def dispute_by_charge(self, charge_id: str) -> DisputeRecord | None:
        row = (await self._conn.execute(select(payment_disputes).where(
            payment_disputes.c.charge_index == self.charge_index(charge_id)))).mappings().first()
        if row is None:
            return None
        return DisputeRecord(
            id=row["id"], user_id=row["user_id"], charge_id=self._cipher.decrypt(
                row["charge_enc"]), invoice_id=row["invoice_id"], paid_minor=row["paid_minor"],
            paid_currency=row["paid_currency"], reason=row["reason"], status=row["status"],
            created_at=row["created_at"])

    async def resolve_dispute(self, dispute_id: int, *, status: str, actor: str,
                              now: datetime) -> bool:
        """Moves a held dispute to ``status``; False when it was not held any more."""
        result = await self._conn.execute(update(payment_disputes).where(
            payment_disputes.c.id == dispute_id, payment_disputes.c.status == "held")
            .values(status=status, resolved_at=now, resolved_by=actor[:64]))
        return bool(result.rowcount)
