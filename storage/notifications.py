"""The notifications outbox: messages written with the change that causes them."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from storage.common import insert_ignoring_conflict
from storage.tables import notifications


class NotificationsRepository:
    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn

    async def enqueue(self, *, user_id: int, chat_id: int, dedupe_key: str, kind: str,
                      params: dict[str, Any], now: datetime) -> bool:
        """Queues one message; False when ``dedupe_key`` was queued before (nothing added).

        Call it inside the transaction of the state change the message reports, so the
        two are written together or not at all.
        """
        return await insert_ignoring_conflict(self._conn, notifications, {
            "user_id": user_id, "chat_id": chat_id, "dedupe_key": dedupe_key, "kind": kind,
            "params": params, "status": "pending", "attempts": 0, "next_attempt_at": now,
            "created_at": now,
        })
