"""Promotions: users opt in (or out) in /settings, off by default; an admin broadcasts an
offer to the opted-in users of one operator, or all of them, and hears how it went.

A broadcast is previewed (its audience counted, a record made), confirmed once, and then
queued through the outbox one copy per user under the key ``broadcast:<id>:<user>``, so a
second confirmation, a second worker or a resumed queuing adds nothing. The same offer
broadcast again (the same text within ``REPEAT_WINDOW``: a /broadcast sent twice, a command
line run again after a crash) is refused at preview and at confirmation, naming the
broadcast that sends it; the command line then resumes that one, so nobody gets it twice.
Copies are paced (``PACE`` apart, a third of Telegram's overall rate, so receipts and
warnings still go out between them) and each waits for the end of its user's quiet hours:
an offer is not a warning, and should not wake anyone. Queuing goes in batches of
``BATCH`` users, one short transaction each; a process that dies half-way leaves a
confirmed broadcast that ``advance`` queues again after ``QUEUING_GRACE`` (the keys skip
what is there).

When every copy is final (sent, dropped because the user blocked the bot or opted out
meanwhile, or failed), ``advance`` (a repeating job) records the tally and queues the
report to the admin chat that confirmed it. ``status`` tells the same at any time.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import ClassVar
from zoneinfo import ZoneInfo

from bot.clock import Clock
from bot.domain.broadcasts import (
    OFFER_KIND,
    REPORT_KIND,
    Broadcast,
    Tally,
    audience_word,
    check_offer_text,
    offer_key,
    offer_send_at,
    report_key,
)
from bot.domain.invariants import present
from bot.domain.operators import Operator
from bot.services.notices import Notice, queue
from bot.services.users import zone_and_quiet_hours
from storage.audit import AuditRepository
from storage.db import Database
from storage.notifications import NotificationsRepository
from storage.promotions import (
    CANCELLED,
    CONFIRMED,
    FINISHED,
    QUEUED,
    BroadcastsRepository,
    PromotionsRepository,
)
from storage.users import OptIn, UsersRepository

log = logging.getLogger(__name__)

PACE = timedelta(milliseconds=100)  # between two copies: 10 a second
BATCH = 500  # users queued per transaction
DRAFT_LIFETIME = timedelta(hours=1)  # a preview older than this is not confirmed
QUEUING_GRACE = timedelta(minutes=10)  # confirmed and still not all queued: taken up again
REPORT_WINDOW = timedelta(days=7)  # the job looks at broadcasts confirmed this recently
REPEAT_WINDOW = timedelta(days=7)  # the same text within this is the same offer, sent once


# --- notices ------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class PromotionOffer(Notice):
    """One user's copy of an offer (rendered by handlers/broadcast.py, with the opt-out
    line under it)."""

    KIND: ClassVar[str] = OFFER_KIND
    broadcast_id: int
    text: str


@dataclass(frozen=True, kw_only=True)
class BroadcastReport(Notice):
    """Admins: every copy of a broadcast is final."""

    KIND: ClassVar[str] = REPORT_KIND
    broadcast_id: int
    operator: Operator | None  # None: every opted-in user
    delivered: int
    blocked: int
    failed: int
    opted_out: int = 0


# --- outcomes -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Previewed:
    broadcast: Broadcast


@dataclass(frozen=True)
class NobodyToTell:
    """No opted-in user in the audience: nothing was recorded."""

    operator: Operator | None


@dataclass(frozen=True)
class Confirmed:
    broadcast: Broadcast


@dataclass(frozen=True)
class AlreadyConfirmed:
    broadcast: Broadcast


@dataclass(frozen=True)
class Cancelled:
    broadcast: Broadcast


@dataclass(frozen=True)
class WasCancelled:
    broadcast: Broadcast


@dataclass(frozen=True)
class PreviewExpired:
    broadcast: Broadcast


@dataclass(frozen=True)
class NoSuchBroadcast:
    broadcast_id: int


@dataclass(frozen=True)
class AlreadySent:
    """The same offer is (or was) sent by another broadcast, confirmed within
    REPEAT_WINDOW: nothing was recorded or confirmed."""

    broadcast: Broadcast  # the one that sends it


@dataclass(frozen=True)
class BroadcastStatus:
    broadcast: Broadcast
    tally: Tally


Answer = Confirmed | AlreadyConfirmed | Cancelled | WasCancelled | PreviewExpired \
    | NoSuchBroadcast | AlreadySent


class PromotionsService:
    def __init__(self, db: Database, clock: Clock, *, default_zone: ZoneInfo) -> None:
        self._db = db
        self._clock = clock
        self._default_zone = default_zone

    # --- the user's choice ------------------------------------------------------------

    async def opted_in(self, user_id: int) -> bool:
        async with self._db.read() as conn:
            return await UsersRepository(conn).opted_in(user_id, OptIn.PROMOTIONS)

    async def set_opted_in(self, user_id: int, on: bool) -> bool:
        """Turns promotions on or off (the audit log says who and when); turning them off
        also withdraws the offers still waiting for the user. The new setting."""
        now = self._clock.now()
        async with self._db.write() as conn:
            users = UsersRepository(conn)
            await users.ensure(user_id, language=None, now=now)
            await users.set_opted_in(user_id, OptIn.PROMOTIONS, on, now=now)
            withdrawn = 0 if on else await PromotionsRepository(conn).withdraw_offers(
                user_id, now=now)
            await AuditRepository(conn).record(
                at=now, actor=f"user:{user_id}", action="user.promotions",
                details={"on": on, **({"withdrawn": withdrawn} if withdrawn else {})})
        return on

    # --- a broadcast ------------------------------------------------------------------

    async def count_audience(self, operator: Operator | None) -> int:
        async with self._db.read() as conn:
            return await PromotionsRepository(conn).count_audience(operator)

    async def preview(self, operator: Operator | None, text: str, *, actor: str,
                      chat_id: int | None) -> Previewed | NobodyToTell | AlreadySent:
        """Counts the audience and records the broadcast, to be confirmed in ``chat_id``
        (None: only by ``confirm(chat_id=None)``, the command line). AlreadySent when
        another broadcast sends this offer. OfferTextError for a text that cannot be
        sent."""
        text = check_offer_text(text)
        now = self._clock.now()
        async with self._db.write() as conn:
            broadcasts = BroadcastsRepository(conn)
            earlier = await self._sending(broadcasts, text, now)
            if earlier is not None:
                return AlreadySent(earlier)
            audience = await PromotionsRepository(conn).count_audience(operator)
            if audience == 0:
                return NobodyToTell(operator)
            broadcast_id = await broadcasts.create(text=text, operator=operator,
                                                   audience=audience, actor=actor,
                                                   chat_id=chat_id, now=now)
            created = present(await broadcasts.get(broadcast_id),
                              f"broadcast {broadcast_id} written in this transaction")
        return Previewed(created)

    async def confirm(self, broadcast_id: int, *, actor: str,
                      chat_id: int | None) -> Answer:
        """Confirms a previewed broadcast once (a second confirmation, from anywhere, is
        AlreadyConfirmed; another broadcast of the same offer confirmed first makes it
        AlreadySent); ``queue_offers`` then queues it. Only the chat it was previewed in
        may confirm it."""
        now = self._clock.now()
        async with self._db.write() as conn:
            broadcasts = BroadcastsRepository(conn)
            await broadcasts.lock_confirmations()
            broadcast = await broadcasts.get(broadcast_id, lock=True)
            if broadcast is None:
                return NoSuchBroadcast(broadcast_id)
            refused = self._refused(broadcast, chat_id, now)
            if refused is not None:
                return refused
            earlier = await self._sending(broadcasts, broadcast.text, now)
            if earlier is not None:
                return AlreadySent(earlier)
            await broadcasts.note(broadcast_id, CONFIRMED, actor=actor, now=now,
                                  details={"chat_id": chat_id})
        log.info("Broadcast %s confirmed by %s", broadcast_id, actor)
        return Confirmed(broadcast)

    async def cancel(self, broadcast_id: int, *, actor: str, chat_id: int | None) -> Answer:
        now = self._clock.now()
        async with self._db.write() as conn:
            broadcasts = BroadcastsRepository(conn)
            await broadcasts.lock_confirmations()
            broadcast = await broadcasts.get(broadcast_id, lock=True)
            if broadcast is None:
                return NoSuchBroadcast(broadcast_id)
            refused = self._refused(broadcast, chat_id, now, expiry=False)
            if refused is not None:
                return refused
            await broadcasts.note(broadcast_id, CANCELLED, actor=actor, now=now)
        return Cancelled(broadcast)

    @staticmethod
    def _refused(broadcast: Broadcast, chat_id: int | None, now: datetime, *,
                 expiry: bool = True) -> Answer | None:
        """Why a broadcast cannot be confirmed (or cancelled) from ``chat_id`` now; None
        when it can. Another chat's broadcast is as good as unknown there."""
        if chat_id is not None and broadcast.chat_id != chat_id:
            return NoSuchBroadcast(broadcast.id)
        if broadcast.cancelled_at is not None:
            return WasCancelled(broadcast)
        if broadcast.confirmed_at is not None:
            return AlreadyConfirmed(broadcast)
        if expiry and now - broadcast.created_at > DRAFT_LIFETIME:
            return PreviewExpired(broadcast)
        return None

    @staticmethod
    async def _sending(broadcasts: BroadcastsRepository, text: str,
                       now: datetime) -> Broadcast | None:
        """The broadcast of this offer confirmed within REPEAT_WINDOW and not cancelled,
        if any: it reaches (or reached) the users once, and no other may."""
        for earlier_id in await broadcasts.with_text(text, since=now - REPEAT_WINDOW):
            earlier = await broadcasts.get(earlier_id)
            if earlier is not None and earlier.confirmed_at is not None \
                    and earlier.cancelled_at is None:
                return earlier
        return None

    async def queue_offers(self, broadcast_id: int) -> int:
        """Queues a confirmed broadcast's copies, a batch of users at a time; how many are
        in the outbox. Safe to run again (each user's key is queued once)."""
        async with self._db.read() as conn:
            broadcast = await BroadcastsRepository(conn).get(broadcast_id)
        if broadcast is None or broadcast.confirmed_at is None \
                or broadcast.cancelled_at is not None:
            return 0
        if broadcast.queued is not None:
            return broadcast.queued
        start = self._clock.now()
        offer = PromotionOffer(broadcast_id=broadcast_id, text=broadcast.text)
        after, total = 0, 0
        while True:
            now = self._clock.now()
            async with self._db.write() as conn:
                batch = await PromotionsRepository(conn).audience(
                    broadcast.operator, after=after, limit=BATCH)
                outbox = NotificationsRepository(conn)
                for user in batch:
                    zone, quiet = zone_and_quiet_hours(user, self._default_zone)
                    await queue(outbox, offer, user_id=user.id, chat_id=user.id,
                                dedupe_key=offer_key(broadcast_id, user.id), now=now,
                                send_at=offer_send_at(start, PACE * total, quiet, zone))
                    total += 1
            if len(batch) < BATCH:
                break
            after = batch[-1].id
        async with self._db.write() as conn:
            broadcasts = BroadcastsRepository(conn)
            current = await broadcasts.get(broadcast_id, lock=True)
            if current is not None and current.queued is None:
                await broadcasts.note(broadcast_id, QUEUED, actor="system",
                                      now=self._clock.now(), details={"queued": total})
        log.info("Broadcast %s: %d offers queued", broadcast_id, total)
        return total

    async def status(self, broadcast_id: int) -> BroadcastStatus | None:
        async with self._db.read() as conn:
            broadcasts = BroadcastsRepository(conn)
            broadcast = await broadcasts.get(broadcast_id)
            if broadcast is None:
                return None
            return BroadcastStatus(broadcast, await broadcasts.tally(broadcast_id))

    async def advance(self) -> int:
        """The repeating job: queues what a dead process left half-queued, and finishes
        each broadcast whose copies are all final: its tally recorded, and reported to the
        chat that confirmed it (once: the record says it is finished, and the report's key
        is queued once). How many were finished."""
        now = self._clock.now()
        async with self._db.read() as conn:
            recent = await BroadcastsRepository(conn).confirmed_since(now - REPORT_WINDOW)
        finished = 0
        for broadcast_id in recent:
            async with self._db.read() as conn:
                broadcast = await BroadcastsRepository(conn).get(broadcast_id)
            if broadcast is None or broadcast.finished_at is not None \
                    or broadcast.cancelled_at is not None or broadcast.confirmed_at is None:
                continue
            if broadcast.queued is None:
                if now - broadcast.confirmed_at >= QUEUING_GRACE:
                    log.warning("Broadcast %s was not queued to the end: queuing it again",
                                broadcast_id)
                    await self.queue_offers(broadcast_id)
                continue
            finished += await self._finish(broadcast_id)
        return finished

    async def _finish(self, broadcast_id: int) -> int:
        now = self._clock.now()
        async with self._db.write() as conn:
            broadcasts = BroadcastsRepository(conn)
            broadcast = await broadcasts.get(broadcast_id, lock=True)
            if broadcast is None or broadcast.finished_at is not None \
                    or await broadcasts.has_pending(broadcast_id):
                return 0
            tally = await broadcasts.tally(broadcast_id)
            await broadcasts.note(broadcast_id, FINISHED, actor="system", now=now, details={
                "delivered": tally.delivered, "blocked": tally.blocked,
                "failed": tally.failed, "opted_out": tally.opted_out})
            chat_id = broadcast.chat_id
            if chat_id is not None:
                # The chat is its own recipient (a users row for it), as other admin news.
                await UsersRepository(conn).ensure(chat_id, language=None, now=now)
                await queue(NotificationsRepository(conn), BroadcastReport(
                    broadcast_id=broadcast_id, operator=broadcast.operator,
                    delivered=tally.delivered, blocked=tally.blocked, failed=tally.failed,
                    opted_out=tally.opted_out),
                    user_id=chat_id, chat_id=chat_id,
                    dedupe_key=report_key(broadcast_id, chat_id), now=now)
        log.info("Broadcast %s (%s) finished: %s", broadcast_id,
                 audience_word(broadcast.operator), tally)
        return 1
