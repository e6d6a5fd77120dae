"""The notifications dispatcher: sends what the outbox holds, once, in order per chat.

Messages are written to the outbox in the same transaction as the change they report
(``storage.notifications``); this service leases the due ones, hands each to a
``Deliverer`` (the Telegram side renders and sends it) and records the outcome:

* sent: the Telegram message id is kept (a later message may replace it by editing it);
* throttled (Telegram's 429): tried again after ``retry_after``, not counted as a failure;
* a transient fault: tried again with exponential back-off, at most ``max_attempts`` times;
* refused for good: marked failed;
* the chat blocked the bot: the user is marked unreachable and their waiting messages are
  dropped, so nobody is retried forever (/start makes them reachable again).

A crash between sending and recording leaves the lease to run out and the message is sent
again, with the same dedupe key; so does a send that timed out although Telegram delivered
it (the Bot API cannot be asked whether it did). Those are the only duplicates. Telegram's overall
rate (about 30 messages/s) is kept by the bot's rate limiter; the 1 message/s per chat
is kept here, by waiting ``per_chat_interval`` between two messages to one chat.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol

from sqlalchemy.ext.asyncio import AsyncConnection

from bot.clock import Clock
from bot.services.notices import REPLACES
from storage.db import Database
from storage.notifications import NotificationRecord, NotificationsRepository
from storage.users import UsersRepository

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Outgoing:
    """One message to deliver: what the outbox holds, plus the message it replaces."""

    id: int
    user_id: int
    chat_id: int
    kind: str
    params: dict[str, Any]
    dedupe_key: str
    replaces_message_id: int | None = None


@dataclass(frozen=True)
class Delivered:
    message_id: int | None


@dataclass(frozen=True)
class Throttled:
    retry_after: float


@dataclass(frozen=True)
class Unreachable:
    reason: str


@dataclass(frozen=True)
class Transient:
    reason: str


@dataclass(frozen=True)
class Rejected:
    reason: str


Delivery = Delivered | Throttled | Unreachable | Transient | Rejected


class Deliverer(Protocol):
    async def __call__(self, message: Outgoing) -> Delivery: ...


@dataclass
class DispatchReport:
    sent: int = 0
    throttled: int = 0
    retried: int = 0
    failed: int = 0
    dropped: int = 0
    deferred: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def handled(self) -> int:
        return self.sent + self.throttled + self.retried + self.failed + self.dropped

    def add(self, other: DispatchReport) -> None:
        self.sent += other.sent
        self.throttled += other.throttled
        self.retried += other.retried
        self.failed += other.failed
        self.dropped += other.dropped
        self.deferred += other.deferred
        self.problems.extend(other.problems)


@dataclass(frozen=True)
class DispatchPolicy:
    batch: int = 100  # messages leased per round (one per chat)
    concurrency: int = 30  # sends in flight; the rate limiter paces them
    lease: timedelta = timedelta(minutes=2)  # longer than any send, retries included
    max_attempts: int = 8
    first_delay: timedelta = timedelta(seconds=5)
    max_delay: timedelta = timedelta(minutes=30)
    per_chat_interval: timedelta = timedelta(seconds=1)
    budget_seconds: float = 5.0  # one run's drain, so shutdown never waits long for it

    def delay(self, attempts: int) -> timedelta:
        seconds = self.first_delay.total_seconds() * 2 ** min(max(0, attempts - 1), 20)
        return min(self.max_delay, timedelta(seconds=seconds))


class NotificationDispatcher:
    def __init__(self, db: Database, clock: Clock, deliver: Deliverer, *,
                 policy: DispatchPolicy | None = None,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self._db = db
        self._clock = clock
        self._deliver = deliver
        self.policy = policy or DispatchPolicy()
        self._monotonic = monotonic
        self._last_sent: dict[int, datetime] = {}  # chat -> when this process last sent
        self._running = False

    async def run(self) -> DispatchReport:
        """What the repeating job calls: drains due messages round after round for at most
        ``budget_seconds``. A run that finds another one of this process still draining
        returns at once (the job may fire again before the last run ended)."""
        report = DispatchReport()
        if self._running:
            return report
        self._running = True
        try:
            deadline = self._monotonic() + self.policy.budget_seconds
            while self._monotonic() < deadline:
                round_report = await self.dispatch_round()
                report.add(round_report)
                if round_report.handled == 0:
                    break
        finally:
            self._running = False
        return report

    async def dispatch_round(self) -> DispatchReport:
        """Leases one batch of due messages (the next one of each chat), sends them
        concurrently and records each outcome."""
        now = self._clock.now()
        async with self._db.write() as conn:
            repo = NotificationsRepository(conn)
            claimed = await repo.claim_due(now, now + self.policy.lease, self.policy.batch)
            unreachable = await repo.unreachable_among(
                [n.user_id for n in claimed if n.chat_id == n.user_id])
            replaced = await repo.message_ids(
                [str(n.params[REPLACES]) for n in claimed if n.params.get(REPLACES)])
        report = DispatchReport()
        gate = asyncio.Semaphore(self.policy.concurrency)

        async def one(note: NotificationRecord) -> None:
            async with gate:
                try:
                    await self._one(note, now, report, unreachable, replaced)
                except Exception as exc:
                    # A fault of ours (a renderer, the database): counted like a transient
                    # one, so a message that always fails ends as failed instead of holding
                    # back its chat's later messages for ever.
                    log.exception("Notification %s could not be dispatched", note.id)
                    report.problems.append(f"{note.id}: {exc!r}")
                    await self._record_fault(note, exc, report)

        await asyncio.gather(*(one(note) for note in claimed))
        return report

    async def _record_fault(self, note: NotificationRecord, error: Exception,
                            report: DispatchReport) -> None:
        try:
            async with self._db.write() as conn:
                await self._record(NotificationsRepository(conn), conn, note,
                                   Transient(f"error: {error!r}"), self._clock.now(), report)
        except Exception:  # the lease runs out and the message is tried again
            log.exception("Notification %s: the fault could not be recorded", note.id)

    async def _one(self, note: NotificationRecord, now: datetime, report: DispatchReport,
                   unreachable: set[int], replaced: dict[str, int]) -> None:
        if note.chat_id == note.user_id and note.user_id in unreachable:
            async with self._db.write() as conn:
                report.dropped += await NotificationsRepository(conn).drop_pending_for_chat(
                    note.chat_id, "the user blocked the bot")
            return
        last = self._last_sent.get(note.chat_id)
        if last is not None and now - last < self.policy.per_chat_interval:
            async with self._db.write() as conn:
                await NotificationsRepository(conn).retry_at(
                    note.id, last + self.policy.per_chat_interval, "paced: 1 message/s per chat",
                    count_attempt=False)
            report.deferred += 1
            return
        replaces = note.params.get(REPLACES)
        outcome = await self._deliver(Outgoing(
            id=note.id, user_id=note.user_id, chat_id=note.chat_id, kind=note.kind,
            params=note.params, dedupe_key=note.dedupe_key,
            replaces_message_id=replaced.get(str(replaces)) if replaces else None))
        done = self._clock.now()
        async with self._db.write() as conn:
            await self._record(NotificationsRepository(conn), conn, note, outcome, done, report)

    async def _record(self, repo: NotificationsRepository, conn: AsyncConnection,
                      note: NotificationRecord, outcome: Delivery, now: datetime,
                      report: DispatchReport) -> None:
        match outcome:
            case Delivered(message_id=message_id):
                self._last_sent[note.chat_id] = now
                await repo.mark_sent(note.id, message_id=message_id, now=now)
                report.sent += 1
            case Throttled(retry_after=seconds):
                self._last_sent[note.chat_id] = now + timedelta(seconds=seconds)
                await repo.retry_at(note.id, now + timedelta(seconds=max(seconds, 1.0)),
                                    f"throttled: retry after {seconds:g} s",
                                    count_attempt=False)
                report.throttled += 1
            case Transient(reason=reason) if note.attempts + 1 < self.policy.max_attempts:
                await repo.retry_at(note.id, now + self.policy.delay(note.attempts + 1),
                                    reason, count_attempt=True)
                report.retried += 1
            case Transient(reason=reason) | Rejected(reason=reason):
                await repo.mark_failed(note.id, reason)
                log.warning("Notification %s (%s to chat %s) failed: %s", note.id, note.kind,
                            note.chat_id, reason)
                report.failed += 1
            case Unreachable(reason=reason):
                if note.chat_id == note.user_id:
                    await UsersRepository(conn).update(note.user_id, now=now, reachable=False)
                    report.dropped += await repo.drop_pending_for_chat(note.chat_id, reason)
                    log.info("User %s blocked the bot: their waiting messages are dropped",
                             note.user_id)
                else:  # an admin chat, or a group: the subject user is not to blame
                    await repo.mark_failed(note.id, reason)
                    report.failed += 1
