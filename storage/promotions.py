"""Promotions: who opted in (``users.promotions``, off by default), who an offer is for,
and the broadcasts themselves.

A broadcast has no table of its own: it is kept in the audit log. The preview is an
``broadcast.draft`` row whose id is the broadcast's id (its text, audience, who and
where); what happens to it later is more rows with the subject ``broadcast:<id>``
(``broadcast.confirmed``, ``.queued``, ``.cancelled``, ``.finished``). Its copies are
outbox rows keyed ``broadcast:<id>:<user>``, so what became of them is read from the
outbox. Only this module knows that layout: a table of its own would change nothing
above it.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import exists, func, insert, or_, select, true, update
from sqlalchemy.ext.asyncio import AsyncConnection

from bot.domain.broadcasts import (
    OFFER_KIND,
    OPTED_OUT_REASON,
    Broadcast,
    Tally,
    audience_word,
    offer_key_pattern,
    parse_audience,
)
from bot.domain.operators import Operator
from storage.notifications import NotificationStatus
from storage.tables import audit_log, lines, notifications, users
from storage.users import OptIn, UserRecord, user_record

DRAFT = "broadcast.draft"
CONFIRMED = "broadcast.confirmed"
QUEUED = "broadcast.queued"
CANCELLED = "broadcast.cancelled"
FINISHED = "broadcast.finished"
# A later row of a broadcast is written after its draft; this much slack in the time index
# covers a system clock set back meanwhile.
_CLOCK_SLACK = timedelta(days=1)
# PostgreSQL's advisory lock of confirmations (two-int4 key space, as storage/otp.py's).
_CONFIRM_LOCK_SPACE, _CONFIRM_LOCK_KEY = 0x0B0C, 0


def subject_of(broadcast_id: int) -> str:
    return f"broadcast:{broadcast_id}"


# --- who an offer is for (the opt-in itself is UsersRepository's) ---------------------------


class PromotionsRepository:
    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn

    @staticmethod
    def _audience(operator: Operator | None) -> list[Any]:
        """Reachable users who opted in; with ``operator``, only those with a bound line of
        it."""
        where: list[Any] = [users.c[OptIn.PROMOTIONS.value].is_(true()),
                            users.c.reachable.is_(true())]
        if operator is not None:
            where.append(exists().where(lines.c.owner_id == users.c.id,
                                        lines.c.operator == operator.value,
                                        lines.c.unbound_at.is_(None)))
        return where

    async def count_audience(self, operator: Operator | None) -> int:
        return int((await self._conn.execute(
            select(func.count()).select_from(users).where(*self._audience(operator)))
        ).scalar_one())

    async def audience(self, operator: Operator | None, *, after: int,
                       limit: int) -> list[UserRecord]:
        """The audience by user id from ``after`` (a batch at a time)."""
        rows = (await self._conn.execute(
            select(users).where(*self._audience(operator), users.c.id > after)
            .order_by(users.c.id).limit(limit))).mappings()
        return [user_record(row) for row in rows]

    async def withdraw_offers(self, user_id: int, *, now: datetime) -> int:
        """Drops the offers still waiting for a user who turned promotions off (not one a
        dispatcher is sending right now); how many."""
        result = await self._conn.execute(
            update(notifications)
            .where(notifications.c.chat_id == user_id, notifications.c.user_id == user_id,
                   notifications.c.kind == OFFER_KIND,
                   notifications.c.status == NotificationStatus.PENDING.value,
                   or_(notifications.c.claimed_until.is_(None),
                       notifications.c.claimed_until <= now))
            .values(status=NotificationStatus.DROPPED.value, claimed_until=None,
                    last_error=OPTED_OUT_REASON))
        return int(result.rowcount or 0)


# --- broadcasts -----------------------------------------------------------------------------


class BroadcastsRepository:
    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn

    async def create(self, *, text: str, operator: Operator | None, audience: int,
                     actor: str, chat_id: int | None, now: datetime) -> int:
        """A previewed broadcast; its id."""
        details = {"text": text, "to": audience_word(operator), "audience": audience,
                   "chat_id": chat_id}
        broadcast_id = int((await self._conn.execute(
            insert(audit_log).values(at=now, actor=actor, action=DRAFT, details=details)
            .returning(audit_log.c.id))).scalar_one())
        await self._conn.execute(update(audit_log).where(audit_log.c.id == broadcast_id)
                                 .values(subject=subject_of(broadcast_id)))
        return broadcast_id

    async def note(self, broadcast_id: int, action: str, *, actor: str, now: datetime,
                   details: dict[str, Any] | None = None) -> None:
        """What happened to a broadcast (CONFIRMED, QUEUED, CANCELLED, FINISHED)."""
        await self._conn.execute(insert(audit_log).values(
            at=now, actor=actor, action=action, subject=subject_of(broadcast_id),
            details=details or {}))

    async def get(self, broadcast_id: int, *, lock: bool = False) -> Broadcast | None:
        """The broadcast as its rows tell it. ``lock``: its draft row is locked until the
        transaction ends (PostgreSQL; SQLite's writers queue anyway), so two confirmations
        cannot both pass."""
        query = select(audit_log).where(audit_log.c.id == broadcast_id,
                                        audit_log.c.action == DRAFT)
        if lock:
            query = query.with_for_update()
        draft = (await self._conn.execute(query)).mappings().first()
        if draft is None:
            return None
        details = dict(draft["details"])
        later = (await self._conn.execute(
            select(audit_log.c.action, audit_log.c.actor, audit_log.c.at,
                   audit_log.c.details)
            .where(audit_log.c.at >= draft["at"] - _CLOCK_SLACK,
                   audit_log.c.id > broadcast_id,
                   audit_log.c.subject == subject_of(broadcast_id))
            .order_by(audit_log.c.id))).all()
        found: dict[str, Any] = {}
        for action, actor, at, row_details in later:
            if action == CONFIRMED and "confirmed_at" not in found:
                found.update(confirmed_at=at, confirmed_by=actor)
            elif action == QUEUED and "queued" not in found:
                found["queued"] = int(dict(row_details).get("queued", 0))
            elif action == CANCELLED and "cancelled_at" not in found:
                found["cancelled_at"] = at
            elif action == FINISHED and "finished_at" not in found:
                found["finished_at"] = at
        chat_id = details.get("chat_id")
        return Broadcast(
            id=broadcast_id, text=str(details.get("text", "")),
            operator=parse_audience(str(details.get("to", "all"))),
            audience=int(details.get("audience", 0)), created_at=draft["at"],
            created_by=draft["actor"], chat_id=int(chat_id) if chat_id is not None else None,
            **found)

    async def lock_confirmations(self) -> None:
        """Confirmations (and cancellations) run one at a time until the transaction ends,
        so two broadcasts of the same offer cannot both be confirmed. PostgreSQL: an
        advisory lock (they are rare: one lock for all); SQLite's writers queue anyway."""
        if self._conn.dialect.name == "postgresql":
            await self._conn.execute(select(func.pg_advisory_xact_lock(_CONFIRM_LOCK_SPACE,
                                                                       _CONFIRM_LOCK_KEY)))

    async def with_text(self, text: str, *, since: datetime) -> list[int]:
        """The broadcasts of exactly this offer previewed since then, oldest first."""
        rows = await self._conn.execute(
            select(audit_log.c.id).where(audit_log.c.action == DRAFT, audit_log.c.at >= since,
                                         audit_log.c.details["text"].as_string() == text)
            .order_by(audit_log.c.id))
        return [int(found) for found in rows.scalars()]

    async def confirmed_since(self, since: datetime) -> list[int]:
        """The broadcasts confirmed since then, oldest first."""
        rows = await self._conn.execute(
            select(audit_log.c.subject).where(audit_log.c.action == CONFIRMED,
                                              audit_log.c.at >= since)
            .order_by(audit_log.c.id))
        ids = [subject.rpartition(":")[2] for subject in rows.scalars() if subject]
        return list(dict.fromkeys(int(found) for found in ids if found.isdigit()))

    async def has_pending(self, broadcast_id: int) -> bool:
        return bool((await self._conn.execute(select(exists().where(
            notifications.c.status == NotificationStatus.PENDING.value,
            notifications.c.kind == OFFER_KIND,
            notifications.c.dedupe_key.like(offer_key_pattern(broadcast_id)))))).scalar())

    async def tally(self, broadcast_id: int) -> Tally:
        """How the broadcast's copies ended so far, from the outbox."""
        rows = await self._conn.execute(
            select(notifications.c.status, notifications.c.last_error, func.count())
            .where(notifications.c.kind == OFFER_KIND,
                   notifications.c.dedupe_key.like(offer_key_pattern(broadcast_id)))
            .group_by(notifications.c.status, notifications.c.last_error))
        return _tally([(str(status), error, int(count)) for status, error, count in rows])


def _tally(rows: Sequence[tuple[str, str | None, int]]) -> Tally:
    counts = {"delivered": 0, "blocked": 0, "failed": 0, "opted_out": 0, "pending": 0}
    for status, error, count in rows:
        if status == NotificationStatus.SENT:
            counts["delivered"] += count
        elif status == NotificationStatus.DROPPED:
            counts["opted_out" if error == OPTED_OUT_REASON else "blocked"] += count
        elif status == NotificationStatus.FAILED:
            counts["failed"] += count
        else:
            counts["pending"] += count
    return Tally(**counts)
