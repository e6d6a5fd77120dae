"""Readings of a line's balance, data and validity, each with its source and time.

Every reading is kept (history for charts); the newest by ``read_at`` is the current one.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import bindparam, func, insert, select
from sqlalchemy.engine import RowMapping
from sqlalchemy.ext.asyncio import AsyncConnection

from bot.domain.money import Money
from bot.domain.readings import LineReading, ReadingSource
from storage.tables import line_readings


def _reading(row: RowMapping) -> LineReading:
    balance = (Money(row["balance_minor"], row["currency"])
               if row["balance_minor"] is not None else None)
    return LineReading(source=ReadingSource(row["source"]), read_at=row["read_at"],
                       balance=balance, data_mb=row["data_mb"],
                       validity_end=row["validity_end"])


# Built once (reused statement objects skip SQLAlchemy's construction and cache-key work).
_ADD = insert(line_readings)
_LATEST = (select(line_readings).where(line_readings.c.line_id == bindparam("line_id"))
           .order_by(line_readings.c.read_at.desc(), line_readings.c.id.desc()).limit(1))


def _row(line_id: int, reading: LineReading, recorded_at: datetime) -> dict[str, object]:
    return {
        "line_id": line_id, "source": reading.source.value, "read_at": reading.read_at,
        "balance_minor": reading.balance.minor if reading.balance is not None else None,
        "currency": reading.balance.currency if reading.balance is not None else None,
        "data_mb": reading.data_mb, "validity_end": reading.validity_end,
        "recorded_at": recorded_at}


class ReadingsRepository:
    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn

    async def add(self, line_id: int, reading: LineReading, *, recorded_at: datetime) -> None:
        await self._conn.execute(_ADD, _row(line_id, reading, recorded_at))

    async def add_many(self, readings: list[tuple[int, LineReading]], *,
                       recorded_at: datetime) -> None:
        """Stores many (line id, reading) pairs in one statement."""
        if readings:
            await self._conn.execute(_ADD, [_row(line_id, reading, recorded_at)
                                            for line_id, reading in readings])

    async def latest(self, line_id: int) -> LineReading | None:
        """The newest reading (by ``read_at``; the later recorded wins a tie)."""
        row = (await self._conn.execute(_LATEST, {"line_id": line_id})).mappings().first()
        return _reading(row) if row else None

    async def latest_for_lines(self, line_ids: list[int]) -> dict[int, LineReading]:
        """The newest reading of each line that has one, in one query."""
        if not line_ids:
            return {}
        rank = func.row_number().over(
            partition_by=line_readings.c.line_id,
            order_by=(line_readings.c.read_at.desc(), line_readings.c.id.desc()),
        ).label("rank")
        ranked = (select(line_readings, rank)
                  .where(line_readings.c.line_id.in_(sorted(set(line_ids)))).subquery())
        query = select(ranked).where(ranked.c.rank == 1)
        rows = (await self._conn.execute(query)).mappings().all()
        return {row["line_id"]: _reading(row) for row in rows}

    async def history(self, line_id: int, since: datetime) -> list[LineReading]:
        """Readings taken at or after ``since``, oldest first."""
        query = (select(line_readings)
                 .where(line_readings.c.line_id == line_id, line_readings.c.read_at >= since)
                 .order_by(line_readings.c.read_at, line_readings.c.id))
        return [_reading(row) for row in (await self._conn.execute(query)).mappings()]
