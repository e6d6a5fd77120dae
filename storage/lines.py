"""Lines: a phone number (and, for an eSIM, its ICCID) bound to one user.

Numbers are stored encrypted; the UNIQUE blind index finds a number without decrypting.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, insert, select, update
from sqlalchemy.engine import RowMapping
from sqlalchemy.ext.asyncio import AsyncConnection

from bot.domain.operators import Operator
from bot.domain.phone import MobileNumber
from storage.crypto import FieldCipher
from storage.tables import lines


@dataclass(frozen=True)
class LineRecord:
    id: int
    owner_id: int
    number: MobileNumber
    iccid: str | None
    nickname: str | None
    verified_at: datetime | None
    next_check_at: datetime | None
    created_at: datetime

    @property
    def label(self) -> str:
        return self.nickname or self.number.masked


class LinesRepository:
    def __init__(self, conn: AsyncConnection, cipher: FieldCipher) -> None:
        self._conn = conn
        self._cipher = cipher

    def _record(self, row: RowMapping) -> LineRecord:
        number = MobileNumber(e164=self._cipher.decrypt(row["phone_enc"]),
                              operator=Operator(row["operator"]))
        iccid = self._cipher.decrypt(row["iccid_enc"]) if row["iccid_enc"] else None
        return LineRecord(id=row["id"], owner_id=row["owner_id"], number=number, iccid=iccid,
                          nickname=row["nickname"], verified_at=row["verified_at"],
                          next_check_at=row["next_check_at"], created_at=row["created_at"])

    async def add(self, *, owner_id: int, number: MobileNumber, now: datetime,
                  nickname: str | None = None, iccid: str | None = None,
                  verified_at: datetime | None = None) -> LineRecord:
        values = {
            "owner_id": owner_id, "operator": number.operator.value,
            "phone_enc": self._cipher.encrypt(number.e164),
            "phone_index": self._cipher.blind_index(number.e164),
            "iccid_enc": self._cipher.encrypt(iccid) if iccid else None,
            "iccid_index": self._cipher.blind_index(iccid) if iccid else None,
            "nickname": nickname, "verified_at": verified_at, "next_check_at": now,
            "created_at": now, "updated_at": now,
        }
        result = await self._conn.execute(insert(lines).values(**values).returning(lines.c.id))
        line_id = result.scalar_one()
        record = await self.get(line_id)
        assert record is not None
        return record

    async def get(self, line_id: int, *, lock: bool = False) -> LineRecord | None:
        query = select(lines).where(lines.c.id == line_id)
        if lock:
            query = query.with_for_update()
        row = (await self._conn.execute(query)).mappings().first()
        return self._record(row) if row else None

    async def by_number(self, e164: str, *, lock: bool = False) -> LineRecord | None:
        query = select(lines).where(lines.c.phone_index == self._cipher.blind_index(e164))
        if lock:
            query = query.with_for_update()
        row = (await self._conn.execute(query)).mappings().first()
        return self._record(row) if row else None

    async def for_owner(self, owner_id: int) -> list[LineRecord]:
        query = select(lines).where(lines.c.owner_id == owner_id).order_by(lines.c.id)
        return [self._record(r) for r in (await self._conn.execute(query)).mappings()]

    async def transfer(self, line_id: int, *, new_owner_id: int, now: datetime) -> None:
        await self._conn.execute(update(lines).where(lines.c.id == line_id).values(
            owner_id=new_owner_id, nickname=None, verified_at=now, updated_at=now))

    async def rename(self, line_id: int, nickname: str | None, *, now: datetime) -> None:
        await self._conn.execute(update(lines).where(lines.c.id == line_id).values(
            nickname=nickname, updated_at=now))

    async def set_next_check(self, line_id: int, at: datetime | None, *, now: datetime) -> None:
        await self._conn.execute(update(lines).where(lines.c.id == line_id).values(
            next_check_at=at, updated_at=now))

    async def remove(self, line_id: int) -> None:
        await self._conn.execute(delete(lines).where(lines.c.id == line_id))
