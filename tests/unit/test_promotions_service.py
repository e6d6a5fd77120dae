"""PromotionsService on every backend: the audience (opted in, reachable, a bound line of
the operator), confirming once under a race, the same offer never confirmed twice (two
previews of it, confirmed at once), queuing again adding nothing, pacing, a broadcast a
dead process left half-queued, the tally read from the outbox (pending copies hold the
report back), and an opt-out withdrawing what still waits."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select, update

from bot.clock import ManualClock
from bot.domain.broadcasts import OfferTextError, Tally
from bot.domain.operators import Operator
from bot.domain.phone import parse_cambodian_mobile
from bot.services.promotions import (
    PACE,
    QUEUING_GRACE,
    REPEAT_WINDOW,
    AlreadyConfirmed,
    AlreadySent,
    Confirmed,
    NobodyToTell,
    Previewed,
    PromotionsService,
)
from storage.crypto import FieldCipher
from storage.db import Database
from storage.lines import LinesRepository
from storage.notifications import NotificationsRepository
from storage.tables import notifications
from storage.users import UsersRepository

ZONE = ZoneInfo("Asia/Phnom_Penh")


@pytest.fixture
def promotions(db: Database, clock: ManualClock) -> PromotionsService:
    return PromotionsService(db, clock, default_zone=ZONE)


async def people(db: Database, cipher: FieldCipher, clock: ManualClock,
                 promotions: PromotionsService) -> None:
    """1 Cellcard, 2 Cellcard (unbound), 3 Smart + Cellcard, 4 no line, 5 Cellcard but did
    not opt in, 6 Cellcard but unreachable: all but 5 opted in."""
    now = clock.now()
    numbers = {1: ["012345678"], 2: ["012345679"], 3: ["010345678", "011345678"], 4: [],
               5: ["092345678"], 6: ["092345679"]}
    async with db.write() as conn:
        users, lines = UsersRepository(conn), LinesRepository(conn, cipher)
        for user_id, phones in numbers.items():
            await users.ensure(user_id, language="en", now=now)
            for phone in phones:
                line = await lines.add(owner_id=user_id, number=parse_cambodian_mobile(phone),
                                       now=now)
                if user_id == 2:
                    await lines.unbind(line.id, now=now)
        await users.update(6, now=now, reachable=False)
    for user_id in (1, 2, 3, 4, 6):
        await promotions.set_opted_in(user_id, True)


async def offer_rows(db: Database) -> list[tuple[int, str]]:
    async with db.read() as conn:
        rows = await conn.execute(select(notifications.c.user_id, notifications.c.status)
                                  .where(notifications.c.kind == "promotion")
                                  .order_by(notifications.c.user_id))
        return [(int(user), str(status)) for user, status in rows]


async def confirmed(promotions: PromotionsService, operator: Operator | None,
                    text: str = "Offer") -> int:
    previewed = await promotions.preview(operator, text, actor="cli", chat_id=None)
    assert isinstance(previewed, Previewed)
    assert isinstance(await promotions.confirm(previewed.broadcast.id, actor="cli",
                                               chat_id=None), Confirmed)
    return previewed.broadcast.id


async def test_the_audience_is_the_reachable_opted_in_users_with_a_bound_line(
        db: Database, cipher: FieldCipher, clock: ManualClock,
        promotions: PromotionsService) -> None:
    await people(db, cipher, clock, promotions)

    assert await promotions.count_audience(Operator.CELLCARD) == 2  # 1 and 3
    assert await promotions.count_audience(Operator.SMART) == 1
    assert await promotions.count_audience(None) == 4  # 1, 2, 3, 4
    assert isinstance(await promotions.preview(Operator.SEATEL, "Hi", actor="cli",
                                               chat_id=None), NobodyToTell)
    with pytest.raises(OfferTextError):
        await promotions.preview(None, " \n ", actor="cli", chat_id=None)

    broadcast_id = await confirmed(promotions, Operator.CELLCARD)
    assert await promotions.queue_offers(broadcast_id) == 2
    assert await offer_rows(db) == [(1, "pending"), (3, "pending")]


async def test_two_confirmations_at_once_confirm_once(
        db: Database, cipher: FieldCipher, clock: ManualClock,
        promotions: PromotionsService) -> None:
    await people(db, cipher, clock, promotions)
    previewed = await promotions.preview(None, "Offer", actor="admin:1", chat_id=77)
    assert isinstance(previewed, Previewed)
    broadcast_id = previewed.broadcast.id

    answers = await asyncio.gather(*(promotions.confirm(broadcast_id, actor="admin:1",
                                                        chat_id=77) for _ in range(4)))

    assert sorted(type(answer).__name__ for answer in answers) == [
        "AlreadyConfirmed", "AlreadyConfirmed", "AlreadyConfirmed", "Confirmed"]
    counts = await asyncio.gather(*(promotions.queue_offers(broadcast_id) for _ in range(2)))
    assert sorted(counts) == [4, 4]
    assert len(await offer_rows(db)) == 4
    assert await promotions.queue_offers(broadcast_id) == 4  # the record says: done
    status = await promotions.status(broadcast_id)
    assert status is not None and status.broadcast.queued == 4
    assert isinstance(await promotions.confirm(broadcast_id, actor="cli", chat_id=None),
                      AlreadyConfirmed)


async def test_the_same_offer_is_confirmed_once_however_often_it_is_previewed(
        db: Database, cipher: FieldCipher, clock: ManualClock,
        promotions: PromotionsService) -> None:
    await people(db, cipher, clock, promotions)
    drafts = []
    for operator in (None, Operator.CELLCARD, None):  # a /broadcast sent three times
        previewed = await promotions.preview(operator, "Offer", actor="admin:1", chat_id=77)
        assert isinstance(previewed, Previewed)
        drafts.append(previewed.broadcast.id)
    other = await promotions.preview(None, "Another offer", actor="admin:1", chat_id=77)
    assert isinstance(other, Previewed)

    answers = await asyncio.gather(*(promotions.confirm(draft, actor="admin:1", chat_id=77)
                                     for draft in drafts))

    [sender] = [draft for draft, answer in zip(drafts, answers, strict=True)
                if isinstance(answer, Confirmed)]
    assert all(answer.broadcast.id == sender for answer in answers
               if isinstance(answer, AlreadySent))
    assert sum(isinstance(answer, AlreadySent) for answer in answers) == 2
    again = await promotions.preview(Operator.SMART, "Offer", actor="cli", chat_id=None)
    assert isinstance(again, AlreadySent) and again.broadcast.id == sender
    assert isinstance(await promotions.confirm(other.broadcast.id, actor="admin:1",
                                               chat_id=77), Confirmed)  # another text
    for draft in drafts:
        await promotions.queue_offers(draft)
    async with db.read() as conn:
        keys = list((await conn.execute(select(notifications.c.dedupe_key).where(
            notifications.c.kind == "promotion"))).scalars())
    assert sorted(key for key in keys if key.startswith(f"broadcast:{sender}:")) == [
        f"broadcast:{sender}:{user}" for user in
        ((1, 3) if drafts.index(sender) == 1 else (1, 2, 3, 4))]
    assert all(key.split(":")[1] in (str(sender), str(other.broadcast.id)) for key in keys)

    clock.advance(REPEAT_WINDOW + timedelta(minutes=1))  # next week: the offer may go again
    assert isinstance(await promotions.preview(None, "Offer", actor="cli", chat_id=None),
                      Previewed)


async def test_pending_copies_hold_the_report_back_and_are_counted_as_pending(
        db: Database, cipher: FieldCipher, clock: ManualClock,
        promotions: PromotionsService) -> None:
    await people(db, cipher, clock, promotions)
    broadcast_id = await confirmed(promotions, None)
    assert await promotions.queue_offers(broadcast_id) == 4
    async with db.write() as conn:  # two sent, one refused, one waiting (quiet hours)
        await conn.execute(update(notifications).where(notifications.c.user_id.in_([1, 2]))
                           .values(status="sent"))
        await conn.execute(update(notifications).where(notifications.c.user_id == 3)
                           .values(status="failed", last_error="Bad Request"))

    assert await promotions.advance() == 0
    status = await promotions.status(broadcast_id)
    assert status is not None and status.broadcast.finished_at is None
    assert status.tally == Tally(delivered=2, failed=1, pending=1)
    assert not status.tally.final

    async with db.write() as conn:
        await conn.execute(update(notifications).where(notifications.c.user_id == 4)
                           .values(status="sent"))
    assert await promotions.advance() == 1
    status = await promotions.status(broadcast_id)
    assert status is not None and status.tally == Tally(delivered=3, failed=1)
    assert status.broadcast.finished_at is not None


async def test_copies_are_paced(db: Database, cipher: FieldCipher, clock: ManualClock,
                                promotions: PromotionsService) -> None:
    await people(db, cipher, clock, promotions)
    start = clock.now()
    broadcast_id = await confirmed(promotions, None)
    await promotions.queue_offers(broadcast_id)

    async with db.read() as conn:
        times = list((await conn.execute(select(notifications.c.next_attempt_at).where(
            notifications.c.kind == "promotion").order_by(notifications.c.user_id))).scalars())
    assert times == [start + PACE * n for n in range(4)]


async def test_a_broadcast_left_half_queued_is_queued_on_after_the_grace(
        db: Database, cipher: FieldCipher, clock: ManualClock,
        promotions: PromotionsService) -> None:
    await people(db, cipher, clock, promotions)
    broadcast_id = await confirmed(promotions, None)  # and the process died: nothing queued

    assert await promotions.advance() == 0
    assert await offer_rows(db) == []  # it may still be queuing
    clock.advance(QUEUING_GRACE)
    assert await promotions.advance() == 0  # queued now; not sent yet
    assert len(await offer_rows(db)) == 4

    async with db.write() as conn:  # as the dispatcher would end them
        await conn.execute(update(notifications).where(notifications.c.user_id.in_([1, 2]))
                           .values(status="sent"))
        await conn.execute(update(notifications).where(notifications.c.user_id == 3)
                           .values(status="failed", last_error="Bad Request"))
        await conn.execute(update(notifications).where(notifications.c.user_id == 4)
                           .values(status="dropped", last_error="Forbidden: bot was blocked"))
    status = await promotions.status(broadcast_id)
    assert status is not None
    assert status.tally == Tally(delivered=2, blocked=1, failed=1)
    assert await promotions.advance() == 1  # finished (no chat to report to)
    assert await promotions.advance() == 0
    status = await promotions.status(broadcast_id)
    assert status is not None and status.broadcast.finished_at == clock.now()


async def test_opting_out_withdraws_the_offers_still_waiting_but_not_one_being_sent(
        db: Database, cipher: FieldCipher, clock: ManualClock,
        promotions: PromotionsService) -> None:
    await people(db, cipher, clock, promotions)
    first = await confirmed(promotions, None)
    await promotions.queue_offers(first)
    async with db.write() as conn:  # a dispatcher leased the first one's copies: on their way
        await NotificationsRepository(conn).claim_due(
            clock.now() + timedelta(seconds=1), clock.now() + timedelta(minutes=2), 100)
    second = await confirmed(promotions, None, "Another offer")
    await promotions.queue_offers(second)

    await promotions.set_opted_in(3, False)
    await promotions.set_opted_in(1, False)

    status = await promotions.status(second)
    assert status is not None
    assert status.tally == Tally(opted_out=2, pending=2)
    first_status = await promotions.status(first)
    assert first_status is not None
    assert (first_status.tally.opted_out, first_status.tally.pending) == (0, 4)  # leased
    assert not await promotions.opted_in(3)
