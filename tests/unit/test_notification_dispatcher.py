"""The notifications dispatcher with a fake deliverer, on SQLite and PostgreSQL: every message
goes out once and in order per chat; throttling, faults, blocked users and crashes."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select

from bot.clock import ManualClock
from bot.services.notifications import (
    Delivered,
    Delivery,
    DispatchPolicy,
    NotificationDispatcher,
    Outgoing,
    Rejected,
    Throttled,
    Transient,
    Unreachable,
)
from storage.db import Database
from storage.notifications import NotificationsRepository, NotificationStatus
from storage.tables import notifications
from storage.users import UsersRepository

USER, OTHER, ADMIN = 11, 22, 9001


class Crash(BaseException):
    """The process dies while sending: nothing after it runs, nothing is recorded."""


@dataclass
class FakeTelegram:
    """Records deliveries; ``script`` maps a dedupe key to the outcomes of its next sends."""

    script: dict[str, list[Delivery | type[Exception]]] = field(default_factory=dict)
    delivered: list[Outgoing] = field(default_factory=list)
    calls: list[str] = field(default_factory=list)
    in_flight: int = 0
    most_in_flight: int = 0
    next_message_id: int = 1000

    async def __call__(self, message: Outgoing) -> Delivery:
        self.calls.append(message.dedupe_key)
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            await asyncio.sleep(0)  # let concurrent sends interleave
            planned = self.script.get(message.dedupe_key)
            if planned:
                outcome = planned.pop(0)
                if isinstance(outcome, type):
                    raise outcome("injected")
                if not isinstance(outcome, Delivered):
                    return outcome
            self.delivered.append(message)
            self.next_message_id += 1
            return Delivered(message.replaces_message_id or self.next_message_id)
        finally:
            self.in_flight -= 1

    def keys(self, chat_id: int | None = None) -> list[str]:
        return [m.dedupe_key for m in self.delivered if chat_id in (None, m.chat_id)]


async def add_users(db: Database, clock: ManualClock, *ids: int) -> None:
    async with db.write() as conn:
        for user_id in ids:
            await UsersRepository(conn).ensure(user_id, language="en", now=clock.now())


async def enqueue(db: Database, clock: ManualClock, key: str, *, user: int = USER,
                  chat: int | None = None, kind: str = "receipt",
                  params: dict[str, Any] | None = None) -> bool:
    async with db.write() as conn:
        return await NotificationsRepository(conn).enqueue(
            user_id=user, chat_id=user if chat is None else chat, dedupe_key=key, kind=kind,
            params=params or {}, now=clock.now())


async def statuses(db: Database) -> dict[str, str]:
    async with db.read() as conn:
        rows = await conn.execute(select(notifications.c.dedupe_key, notifications.c.status))
        return {row.dedupe_key: row.status for row in rows}


def dispatcher(db: Database, clock: ManualClock, telegram: FakeTelegram,
               **policy: Any) -> NotificationDispatcher:
    return NotificationDispatcher(db, clock, telegram, policy=DispatchPolicy(**policy))


async def drain(service: NotificationDispatcher, clock: ManualClock, *, step: timedelta,
                rounds: int = 50) -> None:
    """Runs rounds, moving the clock on by ``step`` after each (no sleeping)."""
    for _ in range(rounds):
        await service.dispatch_round()
        clock.advance(step)


async def test_queued_messages_are_sent_once_and_marked_sent(
        db: Database, clock: ManualClock) -> None:
    await add_users(db, clock, USER, OTHER)
    for n in range(3):
        await enqueue(db, clock, f"u{n}", user=USER)
        await enqueue(db, clock, f"o{n}", user=OTHER)
    telegram = FakeTelegram()
    service = dispatcher(db, clock, telegram)

    await drain(service, clock, step=timedelta(seconds=1), rounds=5)

    assert telegram.keys(USER) == ["u0", "u1", "u2"]
    assert telegram.keys(OTHER) == ["o0", "o1", "o2"]
    assert set((await statuses(db)).values()) == {"sent"}
    async with db.read() as conn:
        sent = await NotificationsRepository(conn).by_key("u0")
    assert sent is not None and sent.message_id is not None and sent.sent_at == sent.created_at


async def test_a_duplicate_dedupe_key_is_queued_once(db: Database, clock: ManualClock) -> None:
    await add_users(db, clock, USER)
    assert await enqueue(db, clock, "receipt:1")
    assert not await enqueue(db, clock, "receipt:1")
    telegram = FakeTelegram()
    await drain(dispatcher(db, clock, telegram), clock, step=timedelta(seconds=1), rounds=3)
    assert telegram.keys() == ["receipt:1"]


async def test_one_message_per_chat_per_second(db: Database, clock: ManualClock) -> None:
    await add_users(db, clock, USER)
    for n in range(3):
        await enqueue(db, clock, f"m{n}")
    telegram = FakeTelegram()
    service = dispatcher(db, clock, telegram)

    await service.run()  # the clock does not move: one message, the next one waits a second
    assert telegram.keys() == ["m0"]
    clock.advance(timedelta(milliseconds=500))
    await service.run()
    assert telegram.keys() == ["m0"]
    clock.advance(timedelta(milliseconds=500))
    await service.run()
    assert telegram.keys() == ["m0", "m1"]


async def test_throttled_message_waits_and_holds_back_the_chats_later_ones(
        db: Database, clock: ManualClock) -> None:
    await add_users(db, clock, USER, OTHER)
    await enqueue(db, clock, "first")
    await enqueue(db, clock, "second")
    await enqueue(db, clock, "other", user=OTHER)
    telegram = FakeTelegram(script={"first": [Throttled(7)]})
    service = dispatcher(db, clock, telegram)

    for _ in range(6):
        await service.dispatch_round()
        clock.advance(timedelta(seconds=1))
    assert telegram.keys() == ["other"]  # "second" never overtakes "first"

    await drain(service, clock, step=timedelta(seconds=1), rounds=5)
    assert telegram.keys(USER) == ["first", "second"]
    async with db.read() as conn:
        first = await NotificationsRepository(conn).by_key("first")
    assert first is not None and first.attempts == 0  # a 429 is not a failed attempt


async def test_transient_faults_back_off_then_fail_after_max_attempts(
        db: Database, clock: ManualClock) -> None:
    await add_users(db, clock, USER)
    await enqueue(db, clock, "flaky")
    await enqueue(db, clock, "doomed")
    telegram = FakeTelegram(script={"flaky": [Transient("timed out")] * 2,
                                    "doomed": [Transient("timed out")] * 10})
    service = dispatcher(db, clock, telegram, max_attempts=3,
                         first_delay=timedelta(seconds=5))

    await service.dispatch_round()
    assert telegram.calls == ["flaky"]
    clock.advance(timedelta(seconds=4))
    await service.dispatch_round()
    assert telegram.calls == ["flaky"]  # back-off: 5 s after the first fault
    await drain(service, clock, step=timedelta(seconds=5), rounds=20)

    assert (await statuses(db)) == {"flaky": "sent", "doomed": "failed"}
    assert telegram.calls.count("doomed") == 3
    async with db.read() as conn:
        doomed = await NotificationsRepository(conn).by_key("doomed")
    assert doomed is not None and doomed.last_error == "timed out" and doomed.attempts == 3


async def test_a_rejected_message_fails_at_once_and_the_next_one_goes(
        db: Database, clock: ManualClock) -> None:
    await add_users(db, clock, USER)
    await enqueue(db, clock, "bad")
    await enqueue(db, clock, "good")
    telegram = FakeTelegram(script={"bad": [Rejected("message is too long")]})
    await drain(dispatcher(db, clock, telegram), clock, step=timedelta(seconds=1), rounds=4)
    assert (await statuses(db)) == {"bad": "failed", "good": "sent"}
    assert telegram.calls == ["bad", "good"]


async def test_a_user_who_blocked_the_bot_is_unreachable_and_their_queue_dropped(
        db: Database, clock: ManualClock) -> None:
    await add_users(db, clock, USER, OTHER)
    for n in range(3):
        await enqueue(db, clock, f"u{n}")
    await enqueue(db, clock, "o0", user=OTHER)
    telegram = FakeTelegram(script={"u0": [Unreachable("Forbidden: bot was blocked by the user")]})
    service = dispatcher(db, clock, telegram)

    await drain(service, clock, step=timedelta(seconds=1), rounds=4)
    assert (await statuses(db)) == {"u0": "dropped", "u1": "dropped", "u2": "dropped",
                                    "o0": "sent"}
    async with db.read() as conn:
        user = await UsersRepository(conn).get(USER)
    assert user is not None and not user.reachable

    # Messages queued later for them are dropped without a call to Telegram.
    await enqueue(db, clock, "u3")
    calls = len(telegram.calls)
    await drain(service, clock, step=timedelta(seconds=1), rounds=2)
    assert len(telegram.calls) == calls
    assert (await statuses(db))["u3"] == "dropped"


async def test_a_blocked_admin_chat_fails_its_message_and_not_the_user(
        db: Database, clock: ManualClock) -> None:
    await add_users(db, clock, USER)
    await enqueue(db, clock, "alert", user=USER, chat=ADMIN)
    await enqueue(db, clock, "receipt", user=USER)
    telegram = FakeTelegram(script={"alert": [Unreachable("Forbidden: bot was kicked")]})
    await drain(dispatcher(db, clock, telegram), clock, step=timedelta(seconds=1), rounds=3)
    assert (await statuses(db)) == {"alert": "failed", "receipt": "sent"}
    async with db.read() as conn:
        user = await UsersRepository(conn).get(USER)
    assert user is not None and user.reachable


async def test_a_message_that_replaces_another_edits_it(db: Database,
                                                          clock: ManualClock) -> None:
    await add_users(db, clock, USER)
    await enqueue(db, clock, "approval:7", kind="approval_request")
    telegram = FakeTelegram()
    service = dispatcher(db, clock, telegram)
    await drain(service, clock, step=timedelta(seconds=1), rounds=2)
    await enqueue(db, clock, "expired:7", kind="charge_expired",
                  params={"replaces": "approval:7"})
    await drain(service, clock, step=timedelta(seconds=1), rounds=2)

    approval, expired = telegram.delivered
    assert approval.replaces_message_id is None
    async with db.read() as conn:
        sent = await NotificationsRepository(conn).by_key("approval:7")
    assert sent is not None and expired.replaces_message_id == sent.message_id


async def test_a_crash_while_sending_resends_after_the_lease_with_the_same_key(
        db: Database, clock: ManualClock) -> None:
    await add_users(db, clock, USER)
    await enqueue(db, clock, "receipt:9")
    telegram = FakeTelegram(script={"receipt:9": [Crash]})
    service = dispatcher(db, clock, telegram, lease=timedelta(minutes=2))

    with pytest.raises(Crash):
        await service.dispatch_round()
    assert (await statuses(db)) == {"receipt:9": "pending"}
    clock.advance(timedelta(minutes=1))
    await service.dispatch_round()
    assert telegram.calls == ["receipt:9"]  # leased: nobody sends it meanwhile
    clock.advance(timedelta(minutes=1, seconds=1))
    await service.dispatch_round()
    assert telegram.keys() == ["receipt:9"]
    assert (await statuses(db)) == {"receipt:9": "sent"}


async def test_a_message_sent_but_not_recorded_is_sent_again_once(
        db: Database, clock: ManualClock, monkeypatch: pytest.MonkeyPatch) -> None:
    """The process dies between Telegram's answer and the write that records it: the only
    duplicate allowed, with the same dedupe key; afterwards it is recorded once."""
    await add_users(db, clock, USER)
    await enqueue(db, clock, "receipt:5")
    telegram = FakeTelegram()
    service = dispatcher(db, clock, telegram)
    original = NotificationsRepository.mark_sent

    async def die(*_args: Any, **_kwargs: Any) -> bool:
        raise Crash("killed before the write")

    monkeypatch.setattr(NotificationsRepository, "mark_sent", die)
    with pytest.raises(Crash):
        await service.dispatch_round()
    monkeypatch.setattr(NotificationsRepository, "mark_sent", original)
    clock.advance(timedelta(minutes=3))
    restarted = dispatcher(db, clock, telegram)
    await drain(restarted, clock, step=timedelta(seconds=1), rounds=3)

    assert telegram.keys() == ["receipt:5", "receipt:5"]
    assert (await statuses(db)) == {"receipt:5": "sent"}


async def test_two_dispatchers_never_send_one_message_twice(db: Database,
                                                            clock: ManualClock) -> None:
    users = list(range(100, 140))
    await add_users(db, clock, *users)
    for user in users:
        for n in range(3):
            await enqueue(db, clock, f"{user}:{n}", user=user)
    telegram = FakeTelegram()
    first, second = dispatcher(db, clock, telegram), dispatcher(db, clock, telegram)

    for _ in range(8):
        await asyncio.gather(first.dispatch_round(), second.dispatch_round())
        clock.advance(timedelta(seconds=1))

    assert sorted(telegram.keys()) == sorted(f"{u}:{n}" for u in users for n in range(3))
    for user in users:
        assert telegram.keys(user) == [f"{user}:0", f"{user}:1", f"{user}:2"]


async def test_sends_run_concurrently_up_to_the_limit(db: Database, clock: ManualClock) -> None:
    users = list(range(300, 350))
    await add_users(db, clock, *users)
    for user in users:
        await enqueue(db, clock, f"{user}", user=user)
    telegram = FakeTelegram()
    await dispatcher(db, clock, telegram, concurrency=8).dispatch_round()
    assert len(telegram.delivered) == 50
    assert 1 < telegram.most_in_flight <= 8


async def test_run_drains_within_its_budget_and_a_second_run_returns_at_once(
        db: Database, clock: ManualClock) -> None:
    await add_users(db, clock, *range(400, 410))
    for user in range(400, 410):
        await enqueue(db, clock, f"{user}", user=user)
    ticks = iter(range(1000))
    telegram = FakeTelegram()
    service = NotificationDispatcher(db, clock, telegram,
                                     policy=DispatchPolicy(batch=3, budget_seconds=3),
                                     monotonic=lambda: float(next(ticks)))
    report = await service.run()  # deadline 0 + 3; a round at 1 and 2; stop at 3
    assert report.sent == 6 and len(telegram.delivered) == 6

    service._running = True  # another run of this process is draining
    assert (await service.run()).handled == 0
    service._running = False
    assert NotificationStatus.PENDING.value in (await statuses(db)).values()


async def test_an_error_of_ours_is_retried_then_fails_and_the_chat_goes_on(
        db: Database, clock: ManualClock) -> None:
    await add_users(db, clock, USER)
    await enqueue(db, clock, "broken")
    await enqueue(db, clock, "after")
    telegram = FakeTelegram(script={"broken": [RuntimeError] * 10})
    service = dispatcher(db, clock, telegram, max_attempts=3,
                         first_delay=timedelta(seconds=5))

    await drain(service, clock, step=timedelta(seconds=5), rounds=20)

    assert telegram.calls.count("broken") == 3
    assert (await statuses(db)) == {"broken": "failed", "after": "sent"}
    async with db.read() as conn:
        broken = await NotificationsRepository(conn).by_key("broken")
    assert broken is not None and "RuntimeError" in str(broken.last_error)
