"""The audit log: who did what to which object, appended in the same transaction."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncConnection

from storage.tables import audit_log


@dataclass(frozen=True)
class AuditEntry:
    at: datetime
    actor: str
    action: str
    subject: str | None
    details: dict[str, Any]


_APPEND = insert(audit_log)  # built once: appended to by most writes


class AuditRepository:
    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn

    async def record(self, *, at: datetime, actor: str, action: str,
                     subject: str | None = None, details: dict[str, Any] | None = None) -> None:
        await self._conn.execute(_APPEND, {"at": at, "actor": actor, "action": action,
                                           "subject": subject, "details": details or {}})

    async def latest(self, limit: int = 50, *, action: str | None = None) -> list[AuditEntry]:
        query = select(audit_log).order_by(audit_log.c.id.desc()).limit(limit)
        if action is not None:
            query = query.where(audit_log.c.action == action)
        rows = (await self._conn.execute(query)).mappings().all()
        return [AuditEntry(at=r["at"], actor=r["actor"], action=r["action"],
                           subject=r["subject"], details=r["details"]) for r in rows]
