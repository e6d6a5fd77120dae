"""What each sweeper did in its last run, for `topup-bot status`."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from storage.tables import scheduler_runs


@dataclass(frozen=True)
class SchedulerRun:
    job: str
    worker: str
    started_at: datetime
    duration_ms: int
    processed: int
    failures: dict[str, int]


class SchedulerRunsRepository:
    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn

    async def record(self, run: SchedulerRun) -> None:
        module = postgresql if self._conn.dialect.name == "postgresql" else sqlite
        values = {"job": run.job, "worker": run.worker, "started_at": run.started_at,
                  "duration_ms": run.duration_ms, "processed": run.processed,
                  "failures": run.failures}
        statement = module.insert(scheduler_runs).values(**values)
        await self._conn.execute(statement.on_conflict_do_update(
            index_elements=["job", "worker"],
            set_={name: value for name, value in values.items()
                  if name not in ("job", "worker")}))

    async def all(self) -> list[SchedulerRun]:
        rows = await self._conn.execute(
            select(scheduler_runs).order_by(scheduler_runs.c.job, scheduler_runs.c.worker))
        return [SchedulerRun(job=r["job"], worker=r["worker"], started_at=r["started_at"],
                             duration_ms=r["duration_ms"], processed=r["processed"],
                             failures=dict(r["failures"])) for r in rows.mappings()]
