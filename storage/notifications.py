"""The notifications outbox: messages written with the change that causes them, sent later
by the dispatcher under a lease."""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import exists, func, or_, select, update
from sqlalchemy.engine import RowMapping
from sqlalchemy.ext.asyncio import AsyncConnection

from storage.common import insert_ignoring_conflict
from storage.tables import notifications, users

MAX_ERROR_CHARS = 200


class NotificationStatus(enum.StrEnum):
    PENDING = "pending"
    SENT = "sent"
    FAILED = "failed"  # Telegram refused it for good, or it ran out of attempts
    DROPPED = "dropped"  # its chat blocked the bot


@dataclass(frozen=True)
class NotificationRecord:
    id: int
    user_id: int
    chat_id: int
    dedupe_key: str
    kind: str
    params: dict[str, Any]
    status: NotificationStatus
    attempts: int
    next_attempt_at: datetime
    message_id: int | None
    last_error: str | None
    created_at: datetime
    sent_at: datetime | None


def _record(row: RowMapping) -> NotificationRecord:
    return NotificationRecord(
        id=row["id"], user_id=row["user_id"], chat_id=row["chat_id"],
        dedupe_key=row["dedupe_key"], kind=row["kind"], params=dict(row["params"]),
        status=NotificationStatus(row["status"]), attempts=row["attempts"],
        next_attempt_at=row["next_attempt_at"], message_id=row["message_id"],
        last_error=row["last_error"], created_at=row["created_at"], sent_at=row["sent_at"])


def _pending() -> Any:
    return notifications.c.status == NotificationStatus.PENDING.value


def _lease_free(now: datetime) -> Any:
    return or_(notifications.c.claimed_until.is_(None), notifications.c.claimed_until <= now)


class NotificationsRepository:
    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn

    async def enqueue(self, *, user_id: int, chat_id: int, dedupe_key: str, kind: str,
                      params: dict[str, Any], now: datetime,
                      send_at: datetime | None = None) -> bool:
        """Queues one message; False when ``dedupe_key`` was queued before (nothing added).

        Call it inside the transaction of the state change the message reports, so the
        two are written together or not at all. ``send_at``: not before then (quiet hours).
        """
        return await insert_ignoring_conflict(self._conn, notifications, {
            "user_id": user_id, "chat_id": chat_id, "dedupe_key": dedupe_key, "kind": kind,
            "params": params, "status": NotificationStatus.PENDING.value, "attempts": 0,
            "next_attempt_at": max(send_at or now, now), "created_at": now,
        })

    async def claim_due(self, now: datetime, until: datetime,
                        limit: int) -> list[NotificationRecord]:
        """Leases the due messages that are next in their chat (a chat's messages go out in
        the order they were queued: one waiting for a retry holds back the later ones), at
        most one per chat, oldest first. Another dispatcher skips what is leased; one that
        dies lets its lease run out and the message is sent again (same dedupe key)."""
        earlier = notifications.alias("earlier")
        earlier_pending = exists().where(
            earlier.c.chat_id == notifications.c.chat_id,
            earlier.c.status == NotificationStatus.PENDING.value,
            earlier.c.id < notifications.c.id,
            # A message held back on purpose (quiet hours: never tried, not yet due) does
            # not hold back what comes after it; one waiting for a retry does.
            or_(earlier.c.next_attempt_at <= now, earlier.c.last_error.is_not(None),
                earlier.c.attempts > 0))
        candidates = (select(notifications.c.id, notifications.c.chat_id)
                      .where(_pending(), notifications.c.next_attempt_at <= now,
                             _lease_free(now), ~earlier_pending)
                      .order_by(notifications.c.next_attempt_at, notifications.c.id)
                      .limit(limit))
        if self._conn.dialect.name == "postgresql":
            candidates = candidates.with_for_update(skip_locked=True,
                                                    of=notifications)
        rows = (await self._conn.execute(candidates)).all()
        ids = [row.id for row in rows]  # one per chat already: earlier_pending excludes others
        if not ids:
            return []
        claimed = (await self._conn.execute(
            update(notifications)
            .where(notifications.c.id.in_(ids), _pending(), _lease_free(now))
            .values(claimed_until=until)
            .returning(*notifications.c))).mappings().all()
        return sorted((_record(row) for row in claimed), key=lambda r: (r.next_attempt_at, r.id))

    async def get(self, notification_id: int) -> NotificationRecord | None:
        row = (await self._conn.execute(select(notifications).where(
            notifications.c.id == notification_id))).mappings().first()
        return _record(row) if row is not None else None

    async def by_key(self, dedupe_key: str) -> NotificationRecord | None:
        row = (await self._conn.execute(select(notifications).where(
            notifications.c.dedupe_key == dedupe_key))).mappings().first()
        return _record(row) if row is not None else None

    async def sent_as(self, chat_id: int, message_id: int,
                      kinds: Sequence[str]) -> NotificationRecord | None:
        """The message of one of ``kinds`` sent to ``chat_id`` as Telegram's ``message_id``
        (what a reply to it names); the newest when it was edited in place since."""
        row = (await self._conn.execute(
            select(notifications).where(notifications.c.chat_id == chat_id,
                                        notifications.c.message_id == message_id,
                                        notifications.c.kind.in_(list(kinds)))
            .order_by(notifications.c.id.desc()).limit(1))).mappings().first()
        return _record(row) if row is not None else None

    async def message_ids(self, dedupe_keys: Sequence[str]) -> dict[str, int]:
        """The Telegram message id of each sent message among ``dedupe_keys``."""
        if not dedupe_keys:
            return {}
        rows = await self._conn.execute(
            select(notifications.c.dedupe_key, notifications.c.message_id).where(
                notifications.c.dedupe_key.in_(list(dedupe_keys)),
                notifications.c.message_id.is_not(None)))
        return {row.dedupe_key: int(row.message_id) for row in rows}

    async def unreachable_among(self, user_ids: Sequence[int]) -> set[int]:
        if not user_ids:
            return set()
        rows = await self._conn.execute(select(users.c.id).where(
            users.c.id.in_(list(set(user_ids))), users.c.reachable.is_(False)))
        return {int(row.id) for row in rows}

    async def _finish(self, notification_id: int, **values: Any) -> bool:
        result = await self._conn.execute(
            update(notifications)
            .where(notifications.c.id == notification_id, _pending())
            .values(claimed_until=None, **values))
        return bool(result.rowcount)

    async def mark_sent(self, notification_id: int, *, message_id: int | None,
                        now: datetime) -> bool:
        return await self._finish(notification_id, status=NotificationStatus.SENT.value,
                                  message_id=message_id, sent_at=now, last_error=None)

    async def retry_at(self, notification_id: int, at: datetime, error: str, *,
                       count_attempt: bool) -> bool:
        values: dict[str, Any] = {"next_attempt_at": at, "last_error": error[:MAX_ERROR_CHARS]}
        if count_attempt:
            values["attempts"] = notifications.c.attempts + 1
        return await self._finish(notification_id, **values)

    async def mark_failed(self, notification_id: int, error: str) -> bool:
        return await self._finish(notification_id, status=NotificationStatus.FAILED.value,
                                  attempts=notifications.c.attempts + 1,
                                  last_error=error[:MAX_ERROR_CHARS])

    async def drop_pending_for_chat(self, chat_id: int, reason: str) -> int:
        """Every message still waiting for ``chat_id`` is dropped (the chat blocked us)."""
        result = await self._conn.execute(
            update(notifications)
            .where(notifications.c.chat_id == chat_id, _pending())
            .values(status=NotificationStatus.DROPPED.value, claimed_until=None,
                    last_error=reason[:MAX_ERROR_CHARS]))
        return int(result.rowcount or 0)

    async def due_summary(self, now: datetime) -> tuple[int, datetime | None]:
        """How many pending messages are due now, and the oldest due time."""
        row = (await self._conn.execute(
            select(func.count(), func.min(notifications.c.next_attempt_at))
            .where(_pending(), notifications.c.next_attempt_at <= now))).one()
        return int(row[0]), row[1]

    async def failed_since(self, since: datetime) -> int:
        return int((await self._conn.execute(
            select(func.count()).select_from(notifications)
            .where(notifications.c.status == NotificationStatus.FAILED.value,
                   notifications.c.created_at >= since))).scalar_one())

    async def counts(self) -> dict[str, int]:
        """How many messages are in each status (for operators)."""
        rows = await self._conn.execute(
            select(notifications.c.status, func.count()).group_by(notifications.c.status))
        return {str(status): int(count) for status, count in rows}
