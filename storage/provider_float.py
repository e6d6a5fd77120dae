"""Episodes of a low float at the top-up provider: one open per backend at a time."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from bot.domain.money import Money
from storage.common import insert_ignoring_conflict
from storage.tables import provider_float_episodes as episodes


@dataclass(frozen=True)
class FloatEpisode:
    id: int
    backend: str
    lowest: Money
    threshold: Money
    opened_at: datetime


class FloatEpisodesRepository:
    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn

    async def open_episode(self, backend: str) -> FloatEpisode | None:
        row = (await self._conn.execute(select(episodes).where(
            episodes.c.backend == backend, episodes.c.closed_at.is_(None)))).mappings().first()
        if row is None:
            return None
        return FloatEpisode(id=row["id"], backend=row["backend"],
                            lowest=Money(row["lowest_minor"], row["currency"]),
                            threshold=Money(row["threshold_minor"], row["currency"]),
                            opened_at=row["opened_at"])

    async def open(self, backend: str, balance: Money, threshold: Money,
                   now: datetime) -> FloatEpisode | None:
        """A new episode; None when one is open already (another worker opened it)."""
        inserted = await insert_ignoring_conflict(self._conn, episodes, {
            "backend": backend, "currency": balance.currency,
            "threshold_minor": threshold.minor, "lowest_minor": balance.minor,
            "opened_at": now})
        return await self.open_episode(backend) if inserted else None

    async def lower(self, episode_id: int, balance: Money) -> None:
        await self._conn.execute(update(episodes).where(
            episodes.c.id == episode_id, episodes.c.lowest_minor > balance.minor)
            .values(lowest_minor=balance.minor))

    async def close(self, episode_id: int, now: datetime) -> bool:
        result = await self._conn.execute(update(episodes).where(
            episodes.c.id == episode_id, episodes.c.closed_at.is_(None)).values(closed_at=now))
        return bool(result.rowcount)
