"""The simulated carrier's own records: its lines and the top-ups it has received."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import bindparam, exists, insert, select, update
from sqlalchemy.engine import RowMapping
from sqlalchemy.ext.asyncio import AsyncConnection

from storage.common import insert_ignoring_conflict
from storage.crypto import FieldCipher
from storage.tables import sim_lines, sim_topups


@dataclass(frozen=True)
class SimLineRow:
    phone_index: str
    phone_e164: str
    operator: str
    balance_minor: int  # as of ``as_of``; usage since then is applied when read
    currency: str
    data_mb: int
    validity_end: datetime
    data_expires_at: datetime | None
    last_topup_at: datetime | None
    as_of: datetime
    spend_carry: int
    data_carry: int
    daily_spend_minor: int
    daily_data_mb: int
    created_at: datetime


@dataclass(frozen=True)
class SimTopupRow:
    id: int
    reference: str
    provider_tx_id: str
    phone_index: str
    product_id: str | None
    amount_minor: int
    currency: str
    status: str
    failure_reason: str | None
    duplicate: bool
    created_at: datetime
    settle_at: datetime | None
    settled_at: datetime | None
    balance_after_minor: int | None
    data_after_mb: int | None
    validity_end_after: datetime | None


def _topup(row: RowMapping) -> SimTopupRow:
    return SimTopupRow(**{field: row[field] for field in SimTopupRow.__dataclass_fields__})


# Balance reads: each line, and whether a top-up of it waits to settle (built once).
_TO_READ = select(
    sim_lines,
    exists().where(sim_topups.c.phone_index == sim_lines.c.phone_index,
                   sim_topups.c.status == "pending",
                   sim_topups.c.settle_at <= bindparam("now")).label("pending_due"),
).where(sim_lines.c.phone_index.in_(bindparam("phone_indexes", expanding=True)))


class SimCarrierRepository:
    def __init__(self, conn: AsyncConnection, cipher: FieldCipher) -> None:
        self._conn = conn
        self._cipher = cipher

    def index_of(self, phone_e164: str) -> str:
        return self._cipher.blind_index(phone_e164)

    def _line(self, row: RowMapping) -> SimLineRow:
        values = {field: row[field] for field in SimLineRow.__dataclass_fields__
                  if field != "phone_e164"}
        return SimLineRow(phone_e164=self._cipher.decrypt(row["phone_enc"]), **values)

    async def line(self, phone_e164: str, *, lock: bool = False) -> SimLineRow | None:
        query = select(sim_lines).where(sim_lines.c.phone_index == self.index_of(phone_e164))
        if lock:
            query = query.with_for_update()
        row = (await self._conn.execute(query)).mappings().first()
        return self._line(row) if row else None

    async def lines_to_read(self, numbers: list[str],
                            now: datetime) -> dict[str, tuple[SimLineRow, bool]]:
        """Each known line as stored, and whether a top-up of it is due to settle, by
        number: one query for them all, without decrypting (the caller knows the numbers).
        Unknown numbers are left out."""
        by_index = {self.index_of(number): number for number in numbers}
        rows = (await self._conn.execute(_TO_READ, {"phone_indexes": list(by_index),
                                                    "now": now})).mappings()
        found: dict[str, tuple[SimLineRow, bool]] = {}
        for row in rows:
            number = by_index[row["phone_index"]]
            values = {field: row[field] for field in SimLineRow.__dataclass_fields__
                      if field != "phone_e164"}
            found[number] = SimLineRow(phone_e164=number, **values), bool(row["pending_due"])
        return found

    async def line_by_index(self, phone_index: str, *, lock: bool = False) -> SimLineRow:
        query = select(sim_lines).where(sim_lines.c.phone_index == phone_index)
        if lock:
            query = query.with_for_update()
        return self._line((await self._conn.execute(query)).mappings().one())

    async def add_line(self, *, phone_e164: str, operator: str, balance_minor: int,
                       currency: str, data_mb: int, validity_end: datetime,
                       daily_spend_minor: int, daily_data_mb: int, now: datetime) -> None:
        """Adds the line unless a concurrent first call just did (then that one stands)."""
        await insert_ignoring_conflict(self._conn, sim_lines, {
            "phone_index": self.index_of(phone_e164),
            "phone_enc": self._cipher.encrypt(phone_e164), "operator": operator,
            "balance_minor": balance_minor, "currency": currency, "data_mb": data_mb,
            "validity_end": validity_end, "data_expires_at": None, "last_topup_at": None,
            "as_of": now, "spend_carry": 0, "data_carry": 0,
            "daily_spend_minor": daily_spend_minor, "daily_data_mb": daily_data_mb,
            "created_at": now})

    async def save_line(self, phone_index: str, **values: object) -> None:
        await self._conn.execute(
            update(sim_lines).where(sim_lines.c.phone_index == phone_index).values(**values))

    async def add_topup(self, **values: object) -> SimTopupRow:
        result = await self._conn.execute(insert(sim_topups).values(**values)
                                          .returning(sim_topups.c.id))
        topup_id = result.scalar_one()
        row = (await self._conn.execute(
            select(sim_topups).where(sim_topups.c.id == topup_id))).mappings().one()
        return _topup(row)

    async def topup_by_reference(self, reference: str) -> SimTopupRow | None:
        """The first top-up made under ``reference`` (not a paid-twice duplicate)."""
        row = (await self._conn.execute(select(sim_topups).where(
            sim_topups.c.reference == reference, sim_topups.c.duplicate.is_(False)
        ))).mappings().first()
        return _topup(row) if row else None

    async def pending_due(self, phone_index: str, now: datetime) -> list[SimTopupRow]:
        rows = (await self._conn.execute(select(sim_topups).where(
            sim_topups.c.phone_index == phone_index, sim_topups.c.status == "pending",
            sim_topups.c.settle_at <= now).order_by(sim_topups.c.id))).mappings()
        return [_topup(r) for r in rows]

    async def topups_for(self, phone_index: str, limit: int = 10) -> list[SimTopupRow]:
        rows = (await self._conn.execute(select(sim_topups).where(
            sim_topups.c.phone_index == phone_index).order_by(sim_topups.c.id.desc())
            .limit(limit))).mappings()
        return [_topup(r) for r in rows]

    async def topups_between(self, start: datetime, end: datetime) -> list[SimTopupRow]:
        """Every top-up made in [start, end), oldest first (the simulator's "reports")."""
        rows = (await self._conn.execute(select(sim_topups).where(
            sim_topups.c.created_at >= start, sim_topups.c.created_at < end)
            .order_by(sim_topups.c.id))).mappings()
        return [_topup(r) for r in rows]

    async def count_topups(self, reference: str) -> int:
        """How many times a reference was paid (more than 1 only under the pay-twice fault)."""
        rows = (await self._conn.execute(select(sim_topups.c.id).where(
            sim_topups.c.reference == reference, sim_topups.c.status != "failed"))).all()
        return len(rows)

    async def settle(self, topup_id: int, **values: object) -> None:
        await self._conn.execute(
            update(sim_topups).where(sim_topups.c.id == topup_id).values(**values))
