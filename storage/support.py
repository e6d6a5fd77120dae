"""Support requests and their messages.

A message's text is stored encrypted. Its ``source`` (the Telegram chat and message it came
from) is UNIQUE, so an update handled twice adds nothing the second time. A charge has at
most one open request (a partial unique index), and resolving is a compare-and-set on the
open status.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, insert, select, update
from sqlalchemy.engine import RowMapping
from sqlalchemy.ext.asyncio import AsyncConnection

from bot.domain.support import Direction, SupportCategory, TicketStatus
from storage.common import insert_ignoring_conflict
from storage.crypto import FieldCipher
from storage.tables import support_messages, support_tickets

_OPEN = support_tickets.c.status == TicketStatus.OPEN.value


@dataclass(frozen=True)
class TicketRecord:
    id: int
    user_id: int
    charge_id: int | None
    category: SupportCategory
    status: TicketStatus
    flagged: bool
    created_at: datetime
    updated_at: datetime
    resolved_at: datetime | None
    resolved_by: str | None


@dataclass(frozen=True)
class SupportMessageRecord:
    id: int
    ticket_id: int
    direction: Direction
    author: str
    text: str  # decrypted
    created_at: datetime


def _ticket(row: RowMapping) -> TicketRecord:
    return TicketRecord(
        id=row["id"], user_id=row["user_id"], charge_id=row["charge_id"],
        category=SupportCategory(row["category"]), status=TicketStatus(row["status"]),
        flagged=row["flagged"], created_at=row["created_at"], updated_at=row["updated_at"],
        resolved_at=row["resolved_at"], resolved_by=row["resolved_by"])


class SupportRepository:
    def __init__(self, conn: AsyncConnection, cipher: FieldCipher) -> None:
        self._conn = conn
        self._cipher = cipher

    def _message(self, row: RowMapping) -> SupportMessageRecord:
        return SupportMessageRecord(
            id=row["id"], ticket_id=row["ticket_id"], direction=Direction(row["direction"]),
            author=row["author"], text=self._cipher.decrypt(row["text_enc"]),
            created_at=row["created_at"])

    async def create(self, *, user_id: int, charge_id: int | None, category: SupportCategory,
                     now: datetime) -> int:
        result = await self._conn.execute(insert(support_tickets).values(
            user_id=user_id, charge_id=charge_id, category=category.value,
            status=TicketStatus.OPEN.value, flagged=category.flagged, created_at=now,
            updated_at=now).returning(support_tickets.c.id))
        return int(result.scalar_one())

    async def get(self, ticket_id: int, *, lock: bool = False) -> TicketRecord | None:
        query = select(support_tickets).where(support_tickets.c.id == ticket_id)
        if lock:
            query = query.with_for_update()
        row = (await self._conn.execute(query)).mappings().first()
        return _ticket(row) if row else None

    async def open_for_charge(self, charge_id: int) -> TicketRecord | None:
        row = (await self._conn.execute(select(support_tickets).where(
            support_tickets.c.charge_id == charge_id, _OPEN))).mappings().first()
        return _ticket(row) if row else None

    async def open_for_user(self, user_id: int) -> list[TicketRecord]:
        rows = await self._conn.execute(select(support_tickets).where(
            support_tickets.c.user_id == user_id, _OPEN).order_by(support_tickets.c.id))
        return [_ticket(row) for row in rows.mappings()]

    async def open_tickets(self, limit: int) -> list[TicketRecord]:
        """Open requests, flagged ones first, oldest first within each."""
        rows = await self._conn.execute(
            select(support_tickets).where(_OPEN)
            .order_by(support_tickets.c.flagged.desc(), support_tickets.c.id).limit(limit))
        return [_ticket(row) for row in rows.mappings()]

    async def count_open(self) -> int:
        return int((await self._conn.execute(
            select(func.count()).select_from(support_tickets).where(_OPEN))).scalar_one())

    async def add_message(self, *, ticket_id: int, direction: Direction, author: str,
                          text: str, source: str, now: datetime) -> int | None:
        """Adds a message; None (nothing added) when ``source`` was added before."""
        inserted = await insert_ignoring_conflict(self._conn, support_messages, {
            "ticket_id": ticket_id, "direction": direction.value, "author": author,
            "text_enc": self._cipher.encrypt(text), "source": source, "created_at": now})
        if not inserted:
            return None
        await self._conn.execute(update(support_tickets).where(
            support_tickets.c.id == ticket_id).values(updated_at=now))
        return int((await self._conn.execute(select(support_messages.c.id).where(
            support_messages.c.source == source))).scalar_one())

    async def message_by_source(self, source: str) -> SupportMessageRecord | None:
        row = (await self._conn.execute(select(support_messages).where(
            support_messages.c.source == source))).mappings().first()
        return self._message(row) if row else None

    async def message(self, message_id: int) -> SupportMessageRecord | None:
        row = (await self._conn.execute(select(support_messages).where(
            support_messages.c.id == message_id))).mappings().first()
        return self._message(row) if row else None

    async def messages(self, ticket_id: int) -> list[SupportMessageRecord]:
        rows = await self._conn.execute(select(support_messages).where(
            support_messages.c.ticket_id == ticket_id).order_by(support_messages.c.id))
        return [self._message(row) for row in rows.mappings()]

    async def flag(self, ticket_id: int, *, now: datetime) -> None:
        await self._conn.execute(update(support_tickets).where(
            support_tickets.c.id == ticket_id).values(flagged=True, updated_at=now))

    async def resolve(self, ticket_id: int, *, actor: str, now: datetime) -> bool:
        """Resolves an open request; False when it is not open (resolved before)."""
        result = await self._conn.execute(
            update(support_tickets).where(support_tickets.c.id == ticket_id, _OPEN)
            .values(status=TicketStatus.RESOLVED.value, resolved_at=now,
                    resolved_by=actor[:64], updated_at=now))
        return bool(result.rowcount)
