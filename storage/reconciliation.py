"""Daily reconciliation runs and the differences each found (one run per backend and day:
running it again replaces it)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, insert, select
from sqlalchemy.ext.asyncio import AsyncConnection

from storage.tables import reconciliation_differences as differences
from storage.tables import reconciliation_runs as runs


@dataclass(frozen=True)
class Difference:
    kind: str  # missing_at_provider, unknown_to_us, status_mismatch, amount_mismatch
    reference: str
    charge_id: int | None
    our_state: str | None
    their_status: str | None
    our_amount_minor: int | None
    their_amount_minor: int | None
    currency: str | None


@dataclass(frozen=True)
class RunRecord:
    id: int
    backend: str
    day: str
    ours: int
    theirs: int
    ran_at: datetime
    actor: str
    differences: list[Difference]


class ReconciliationRepository:
    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn

    async def replace(self, *, backend: str, day: str, ours: int, theirs: int,
                      found: list[Difference], now: datetime, actor: str) -> int:
        """Stores the day's run and its differences in place of an earlier run's."""
        await self._conn.execute(delete(runs).where(runs.c.backend == backend,
                                                    runs.c.day == day))
        run_id = int((await self._conn.execute(insert(runs).values(
            backend=backend, day=day, ours=ours, theirs=theirs, differences=len(found),
            ran_at=now, actor=actor[:64]).returning(runs.c.id))).scalar_one())
        if found:
            await self._conn.execute(insert(differences), [
                {"run_id": run_id, **vars(difference)} for difference in found])
        return run_id

    async def run_for(self, backend: str, day: str) -> RunRecord | None:
        row = (await self._conn.execute(select(runs).where(
            runs.c.backend == backend, runs.c.day == day))).mappings().first()
        if row is None:
            return None
        found = (await self._conn.execute(select(differences).where(
            differences.c.run_id == row["id"]).order_by(differences.c.id))).mappings()
        return RunRecord(
            id=row["id"], backend=row["backend"], day=row["day"], ours=row["ours"],
            theirs=row["theirs"], ran_at=row["ran_at"], actor=row["actor"],
            differences=[Difference(**{k: d[k] for k in Difference.__dataclass_fields__})
                         for d in found])
