"""The simulated eSIM provider's own records: the eSIMs it made and the orders it took.

ICCIDs are kept as the bot keeps its own: encrypted, found by a blind index.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, insert, select, update
from sqlalchemy.engine import RowMapping
from sqlalchemy.ext.asyncio import AsyncConnection

from storage.crypto import FieldCipher
from storage.tables import sim_esim_orders, sim_esims


@dataclass(frozen=True)
class SimEsimRow:
    iccid: str
    order_id: int
    package_id: str
    matching_id: str
    total_mb: int | None  # None: unlimited
    used_mb: int  # as of ``as_of``
    daily_mb: int
    validity_days: int
    installed_at: datetime | None
    expires_at: datetime | None
    as_of: datetime
    created_at: datetime


@dataclass(frozen=True)
class SimEsimOrderRow:
    id: int
    description: str | None
    kind: str
    package_id: str
    iccid: str
    price_minor: int
    net_minor: int
    currency: str
    created_at: datetime


class SimEsimRepository:
    def __init__(self, conn: AsyncConnection, cipher: FieldCipher) -> None:
        self._conn = conn
        self._cipher = cipher

    def _index(self, iccid: str) -> str:
        return self._cipher.blind_index(f"sim-esim|{iccid}")

    async def add_order(self, *, description: str, kind: str, package_id: str, iccid: str,
                        price_minor: int, net_minor: int, currency: str,
                        now: datetime) -> int:
        result = await self._conn.execute(insert(sim_esim_orders).values(
            description=description, kind=kind, package_id=package_id,
            iccid_index=self._index(iccid), price_minor=price_minor, net_minor=net_minor,
            currency=currency, created_at=now).returning(sim_esim_orders.c.id))
        return int(result.scalar_one())

    async def add_esim(self, *, iccid: str, order_id: int, package_id: str, matching_id: str,
                       total_mb: int | None, daily_mb: int, validity_days: int,
                       now: datetime) -> None:
        await self._conn.execute(insert(sim_esims).values(
            iccid_index=self._index(iccid), iccid_enc=self._cipher.encrypt(iccid),
            order_id=order_id, package_id=package_id, matching_id=matching_id,
            total_mb=total_mb, used_mb=0, daily_mb=daily_mb, validity_days=validity_days,
            as_of=now, created_at=now))

    async def esim(self, iccid: str, *, lock: bool = False) -> SimEsimRow | None:
        query = select(sim_esims).where(sim_esims.c.iccid_index == self._index(iccid))
        row = (await self._conn.execute(query.with_for_update() if lock else query)
               ).mappings().first()
        return self._esim(row) if row else None

    async def update_esim(self, iccid: str, **values: Any) -> None:
        await self._conn.execute(update(sim_esims).where(
            sim_esims.c.iccid_index == self._index(iccid)).values(**values))

    async def orders_described(self, description: str) -> list[SimEsimOrderRow]:
        rows = (await self._conn.execute(select(sim_esim_orders).where(
            sim_esim_orders.c.description == description).order_by(sim_esim_orders.c.id))
        ).mappings().all()
        return [await self._order(row) for row in rows]

    async def orders_between(self, start: datetime, end: datetime) -> list[SimEsimOrderRow]:
        rows = (await self._conn.execute(select(sim_esim_orders).where(
            sim_esim_orders.c.created_at >= start, sim_esim_orders.c.created_at < end)
            .order_by(sim_esim_orders.c.id))).mappings().all()
        return [await self._order(row) for row in rows]

    async def spent_minor(self) -> int:
        return int((await self._conn.execute(
            select(func.coalesce(func.sum(sim_esim_orders.c.net_minor), 0)))).scalar_one())

    def _esim(self, row: RowMapping) -> SimEsimRow:
        values = {name: row[name] for name in SimEsimRow.__dataclass_fields__ if name != "iccid"}
        return SimEsimRow(iccid=self._cipher.decrypt(row["iccid_enc"]), **values)

    async def _order(self, row: RowMapping) -> SimEsimOrderRow:
        iccid_enc = (await self._conn.execute(select(sim_esims.c.iccid_enc).where(
            sim_esims.c.iccid_index == row["iccid_index"]))).scalar_one()
        values = {name: row[name] for name in SimEsimOrderRow.__dataclass_fields__
                  if name != "iccid"}
        return SimEsimOrderRow(iccid=self._cipher.decrypt(iccid_enc), **values)
