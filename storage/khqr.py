"""Bakong KHQRs the wallet issued: create one, find it, lease the ones due a check, and record
what became of it (paid, expired, cancelled, no longer polled).

Paid is recorded at most once: ``mark_paid`` only claims a row that is not paid, under the
row's lock (PostgreSQL; SQLite has one writer), and the transaction hash's blind index is
UNIQUE, so one Bakong transaction never pays two QRs.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import and_, func, insert, select, update
from sqlalchemy.engine import RowMapping
from sqlalchemy.ext.asyncio import AsyncConnection

from bot.domain.money import Money
from bot.domain.wallet import KhqrState
from storage.common import claim_due
from storage.crypto import FieldCipher
from storage.tables import khqr_invoices

_HASH_LABEL = "khqr-transaction"


@dataclass(frozen=True)
class KhqrRecord:
    id: int
    user_id: int
    md5: str
    bill_number: str
    payload: str
    amount: Money  # what the QR asks
    credit: Money  # what paying it exactly adds to the wallet
    khr_per_usd: int | None
    state: KhqrState
    created_at: datetime
    expires_at: datetime
    next_check_at: datetime | None  # None: no longer polled
    checks: int
    last_checked_at: datetime | None
    closed_at: datetime | None  # when it was marked expired or cancelled
    paid_at: datetime | None
    paid: Money | None
    payer_bank: str | None
    amount_differs: bool
    payment_id: int | None

    @property
    def polled(self) -> bool:
        return self.next_check_at is not None


@dataclass(frozen=True)
class PaidRecord:
    """What is recorded of the transaction that paid a KHQR."""

    paid_at: datetime
    transaction_hash: str
    paid: Money
    payer_bank: str
    payer_account: str
    amount_differs: bool
    payment_id: int | None  # None: nothing could be credited (too small an amount)


class KhqrRepository:
    def __init__(self, conn: AsyncConnection, cipher: FieldCipher) -> None:
        self._conn = conn
        self._cipher = cipher

    def transaction_index(self, transaction_hash: str) -> str:
        return self._cipher.blind_index(f"{_HASH_LABEL}|{transaction_hash}")

    async def create(self, *, user_id: int, md5: str, bill_number: str, payload: str,
                     amount: Money, credit: Money, khr_per_usd: int | None, now: datetime,
                     expires_at: datetime, first_check_at: datetime) -> int:
        result = await self._conn.execute(insert(khqr_invoices).values(
            user_id=user_id, md5=md5, bill_number=bill_number, payload=payload,
            amount_minor=amount.minor, currency=amount.currency, credit_minor=credit.minor,
            credit_currency=credit.currency, khr_per_usd=khr_per_usd,
            state=KhqrState.OPEN.value, created_at=now, expires_at=expires_at,
            next_check_at=first_check_at).returning(khqr_invoices.c.id))
        return int(result.scalar_one())

    async def get(self, khqr_id: int, *, lock: bool = False) -> KhqrRecord | None:
        query = select(khqr_invoices).where(khqr_invoices.c.id == khqr_id)
        if lock and self._conn.dialect.name == "postgresql":
            query = query.with_for_update()
        row = (await self._conn.execute(query)).mappings().first()
        return _record(row) if row is not None else None

    async def open_count(self, user_id: int, now: datetime) -> int:
        """The user's KHQRs that can still be paid (open and not past their expiry)."""
        return int((await self._conn.execute(select(func.count()).where(
            khqr_invoices.c.user_id == user_id, khqr_invoices.c.state == KhqrState.OPEN.value,
            khqr_invoices.c.expires_at > now))).scalar_one())

    async def polled_count(self) -> int:
        """KHQRs still polled (open, expired or cancelled within their grace)."""
        return int((await self._conn.execute(select(func.count()).where(
            khqr_invoices.c.next_check_at.is_not(None)))).scalar_one())

    async def claim_due(self, now: datetime, due_by: datetime, until: datetime,
                        limit: int) -> list[KhqrRecord]:
        """Leases up to ``limit`` polled KHQRs whose check falls due by ``due_by``, the one
        looked at least recently first (never looked at: by age), in that order.

        Least recently looked at, not most overdue: after a pause (429) every postponed QR is
        due at the pause's end, later than the QRs the last round did reach, and ordering by
        due time would ask about those same QRs first again, round after round, while the
        rest went unanswered (bench/khqr.py saw QRs #251-300 wait 405 s)."""
        looked_at = func.coalesce(khqr_invoices.c.last_checked_at, khqr_invoices.c.created_at)
        rows = await claim_due(
            self._conn, khqr_invoices,
            due=and_(khqr_invoices.c.next_check_at.is_not(None),
                     khqr_invoices.c.next_check_at <= due_by),
            lease=khqr_invoices.c.claimed_until, oldest_first=looked_at,
            now=now, until=until, limit=limit)
        records = [_record(row) for row in rows]
        # UPDATE ... RETURNING keeps no order: the chunks are asked in this one.
        records.sort(key=lambda record: (record.last_checked_at or record.created_at,
                                         record.id))
        return records

    async def checked(self, khqr_id: int, *, now: datetime,
                      next_check_at: datetime | None) -> None:
        """A check found nothing: when to look again (None: never), the lease given back."""
        await self._conn.execute(update(khqr_invoices).where(
            khqr_invoices.c.id == khqr_id, khqr_invoices.c.state != KhqrState.PAID.value)
            .values(next_check_at=next_check_at, claimed_until=None, last_checked_at=now,
                    checks=khqr_invoices.c.checks + 1))

    async def postpone(self, khqr_id: int, next_check_at: datetime) -> None:
        """No answer this time (the API busy or refusing): the lease given back, the next
        check moved, the QR still polled."""
        await self._conn.execute(update(khqr_invoices).where(
            khqr_invoices.c.id == khqr_id, khqr_invoices.c.next_check_at.is_not(None))
            .values(next_check_at=next_check_at, claimed_until=None))

    async def close(self, khqr_id: int, state: KhqrState, now: datetime) -> bool:
        """Open -> expired or cancelled; False when it was not open."""
        result = await self._conn.execute(update(khqr_invoices).where(
            khqr_invoices.c.id == khqr_id, khqr_invoices.c.state == KhqrState.OPEN.value)
            .values(state=state.value, closed_at=now))
        return bool(result.rowcount)

    async def expired_open(self, now: datetime, limit: int) -> list[KhqrRecord]:
        """Open KHQRs past their expiry (to be marked expired)."""
        rows = (await self._conn.execute(select(khqr_invoices).where(
            khqr_invoices.c.state == KhqrState.OPEN.value, khqr_invoices.c.expires_at <= now)
            .order_by(khqr_invoices.c.expires_at).limit(limit))).mappings()
        return [_record(row) for row in rows]

    async def hash_used(self, transaction_hash: str) -> int | None:
        """The KHQR this Bakong transaction already paid, if any."""
        found = (await self._conn.execute(select(khqr_invoices.c.id).where(
            khqr_invoices.c.transaction_index == self.transaction_index(transaction_hash))
        )).scalar()
        return int(found) if found is not None else None

    async def mark_paid(self, khqr_id: int, paid: PaidRecord) -> bool:
        """Records the transaction that paid it and stops polling; False when it was
        recorded paid before."""
        result = await self._conn.execute(update(khqr_invoices).where(
            khqr_invoices.c.id == khqr_id, khqr_invoices.c.state != KhqrState.PAID.value)
            .values(state=KhqrState.PAID.value, paid_at=paid.paid_at, next_check_at=None,
                    claimed_until=None,
                    transaction_index=self.transaction_index(paid.transaction_hash),
                    transaction_hash_enc=self._cipher.encrypt(paid.transaction_hash),
                    paid_minor=paid.paid.minor, paid_currency=paid.paid.currency,
                    payer_bank=paid.payer_bank,
                    payer_account_enc=self._cipher.encrypt(paid.payer_account),
                    amount_differs=paid.amount_differs, payment_id=paid.payment_id))
        return bool(result.rowcount)

    async def stop_polling(self, khqr_id: int) -> None:
        await self._conn.execute(update(khqr_invoices).where(khqr_invoices.c.id == khqr_id)
                                 .values(next_check_at=None, claimed_until=None))

    async def transaction_hash(self, khqr_id: int) -> str | None:
        found = (await self._conn.execute(select(khqr_invoices.c.transaction_hash_enc).where(
            khqr_invoices.c.id == khqr_id))).scalar()
        return self._cipher.decrypt(found) if found else None


def _record(row: RowMapping) -> KhqrRecord:
    paid = (Money(row["paid_minor"], row["paid_currency"])
            if row["paid_minor"] is not None else None)
    return KhqrRecord(
        id=row["id"], user_id=row["user_id"], md5=row["md5"], bill_number=row["bill_number"],
        payload=row["payload"], amount=Money(row["amount_minor"], row["currency"]),
        credit=Money(row["credit_minor"], row["credit_currency"]),
        khr_per_usd=row["khr_per_usd"], state=KhqrState(row["state"]),
        created_at=row["created_at"], expires_at=row["expires_at"],
        next_check_at=row["next_check_at"], checks=row["checks"],
        last_checked_at=row["last_checked_at"], closed_at=row["closed_at"],
        paid_at=row["paid_at"], paid=paid,
        payer_bank=row["payer_bank"], amount_differs=bool(row["amount_differs"]),
        payment_id=row["payment_id"])
