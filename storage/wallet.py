"""Wallets: an append-only ledger per user and currency, holds for live charges, payments.

available = the sum of the user's ledger entries in that currency (a hold is a negative
entry, its release a positive one; a capture adds no entry: the held money is spent).
held = the sum of the user's open holds. Nothing here is ever updated in place except a
hold's status, which records what the ledger entries already say. Payments themselves
(Telegram charges, operator credits) are recorded by storage.payments.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import and_, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from bot.domain.money import Money
from bot.domain.wallet import EntryKind
from storage.common import insert_ignoring_conflict
from storage.crypto import FieldCipher
from storage.tables import holds, ledger_entries, wallet_payments

OPERATOR_PREFIX = "operator:"


def operator_reference(external_id: str) -> str:
    """The operator's reference inside a payment's external id ("operator:<reference>")."""
    return external_id.removeprefix(OPERATOR_PREFIX)


class HoldStatus(enum.StrEnum):
    OPEN = "open"
    CAPTURED = "captured"
    RELEASED = "released"


@dataclass(frozen=True)
class Entry:
    amount: Money
    kind: EntryKind
    charge_id: int | None
    payment_id: int | None
    memo: str | None  # a Telegram payment's "<minor> <CUR>" as paid
    reference: str | None  # an operator credit's reference (stored encrypted)
    created_at: datetime


@dataclass(frozen=True)
class Hold:
    charge_id: int
    user_id: int
    amount: Money
    status: HoldStatus


class WalletRepository:
    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn

    async def available(self, user_id: int, currency: str) -> Money:
        total = (await self._conn.execute(
            select(func.coalesce(func.sum(ledger_entries.c.amount_minor), 0)).where(
                ledger_entries.c.user_id == user_id, ledger_entries.c.currency == currency))
        ).scalar_one()
        return Money(int(total), currency)

    async def held(self, user_id: int, currency: str) -> Money:
        total = (await self._conn.execute(
            select(func.coalesce(func.sum(holds.c.amount_minor), 0)).where(
                holds.c.user_id == user_id, holds.c.currency == currency,
                holds.c.status == HoldStatus.OPEN.value))).scalar_one()
        return Money(int(total), currency)

    async def entries(self, user_id: int, currency: str, cipher: FieldCipher,
                      limit: int = 10) -> list[Entry]:
        """The newest entries; an operator credit's reference decrypted from its payment."""
        query = (
            select(ledger_entries, wallet_payments.c.external_ref_enc)
            .select_from(ledger_entries.outerjoin(wallet_payments, and_(
                wallet_payments.c.id == ledger_entries.c.payment_id,
                ledger_entries.c.kind == EntryKind.OPERATOR_CREDIT.value)))
            .where(ledger_entries.c.user_id == user_id, ledger_entries.c.currency == currency)
            .order_by(ledger_entries.c.id.desc()).limit(limit))
        rows = (await self._conn.execute(query)).mappings()
        return [Entry(amount=Money(r["amount_minor"], r["currency"]), kind=EntryKind(r["kind"]),
                      charge_id=r["charge_id"], payment_id=r["payment_id"], memo=r["memo"],
                      reference=(operator_reference(cipher.decrypt(r["external_ref_enc"]))
                                 if r["external_ref_enc"] else None),
                      created_at=r["created_at"]) for r in rows]

    async def hold(self, *, charge_id: int, user_id: int, amount: Money, now: datetime) -> bool:
        """Sets funds aside for a charge; False when this charge already has a hold."""
        inserted = await insert_ignoring_conflict(self._conn, holds, {
            "charge_id": charge_id, "user_id": user_id, "amount_minor": amount.minor,
            "currency": amount.currency, "status": HoldStatus.OPEN.value, "created_at": now,
        })
        if inserted:
            await self._conn.execute(insert(ledger_entries).values(
                user_id=user_id, currency=amount.currency, amount_minor=-amount.minor,
                kind=EntryKind.HOLD.value, charge_id=charge_id, created_at=now))
        return inserted

    async def hold_of(self, charge_id: int) -> Hold | None:
        row = (await self._conn.execute(select(holds).where(
            holds.c.charge_id == charge_id))).mappings().first()
        if row is None:
            return None
        return Hold(charge_id=row["charge_id"], user_id=row["user_id"],
                    amount=Money(row["amount_minor"], row["currency"]),
                    status=HoldStatus(row["status"]))

    async def capture(self, charge_id: int, *, now: datetime) -> bool:
        """The held money is spent; False when the hold is not open (already settled)."""
        return await self._settle(charge_id, HoldStatus.CAPTURED, now)

    async def release(self, charge_id: int, *, now: datetime) -> bool:
        """The held money comes back; False when the hold is not open (already settled)."""
        hold = await self.hold_of(charge_id)
        if hold is None or not await self._settle(charge_id, HoldStatus.RELEASED, now):
            return False
        await self._conn.execute(insert(ledger_entries).values(
            user_id=hold.user_id, currency=hold.amount.currency,
            amount_minor=hold.amount.minor, kind=EntryKind.RELEASE.value, charge_id=charge_id,
            created_at=now))
        return True

    async def _settle(self, charge_id: int, status: HoldStatus, now: datetime) -> bool:
        result = await self._conn.execute(update(holds).where(
            holds.c.charge_id == charge_id, holds.c.status == HoldStatus.OPEN.value).values(
            status=status.value, settled_at=now))
        return bool(result.rowcount)
