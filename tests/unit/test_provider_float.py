"""Our float at the provider: below PROVIDER_FLOAT_ALERT the admins are told once per
episode, and again when it is back; each check of a low float lowers the episode's mark."""

from __future__ import annotations

from dataclasses import dataclass
from zoneinfo import ZoneInfo

from sqlalchemy import select

from bot.clock import ManualClock
from bot.domain.money import Money
from bot.services.provider_float import (
    FLOAT_LOW,
    FLOAT_RESTORED,
    FloatLow,
    ProviderFloatService,
)
from handlers.common import Ui
from handlers.outbox import render
from storage.db import Database
from storage.tables import notifications, provider_float_episodes

ADMINS = (4242, -100123)
THRESHOLD = Money(5000, "USD")


@dataclass
class Account:
    balance_now: Money

    async def balance(self) -> Money:
        return self.balance_now


async def sent(db: Database) -> list[tuple[str, int]]:
    async with db.read() as conn:
        rows = await conn.execute(select(notifications.c.kind, notifications.c.chat_id)
                                  .order_by(notifications.c.id))
        return [(row.kind, row.chat_id) for row in rows]


def service(db: Database, clock: ManualClock, account: Account) -> ProviderFloatService:
    return ProviderFloatService(db, account, clock, backend="reloadly", threshold=THRESHOLD,
                                admin_chat_ids=ADMINS)


async def test_a_low_float_is_told_once_per_episode(db: Database, clock: ManualClock) -> None:
    account = Account(Money(6000, "USD"))
    floats = service(db, clock, account)

    assert not (await floats.check()).low
    account.balance_now = Money(4000, "USD")
    first = await floats.check()
    account.balance_now = Money(1000, "USD")
    second = await floats.check()

    assert (first.low, first.alerted, second.low, second.alerted) == (True, True, True, False)
    assert await sent(db) == [(FLOAT_LOW, chat) for chat in ADMINS]
    async with db.read() as conn:
        [episode] = (await conn.execute(select(provider_float_episodes))).mappings().all()
    assert (episode["lowest_minor"], episode["closed_at"]) == (1000, None)

    account.balance_now = Money(50_000, "USD")
    back = await floats.check()
    assert back.alerted and not back.low
    assert await sent(db) == [(FLOAT_LOW, c) for c in ADMINS] + [(FLOAT_RESTORED, c)
                                                                   for c in ADMINS]

    account.balance_now = Money(10, "USD")  # a new episode: told again
    assert (await floats.check()).alerted
    assert len(await sent(db)) == 3 * len(ADMINS)


async def test_a_restart_does_not_tell_twice(db: Database, clock: ManualClock) -> None:
    account = Account(Money(100, "USD"))
    await service(db, clock, account).check()
    await service(db, clock, account).check()  # a new process, the same episode
    assert len(await sent(db)) == len(ADMINS)


async def test_a_float_in_another_currency_is_not_compared(db: Database,
                                                           clock: ManualClock) -> None:
    check = await service(db, clock, Account(Money(100, "KHR"))).check()
    assert not check.low and not check.alerted
    assert await sent(db) == []


def test_the_alert_reads_well(clock: ManualClock) -> None:
    ui = Ui(language="en", _=lambda m: m, locale="en", zone=ZoneInfo("Asia/Phnom_Penh"),
            now=clock.now())
    low = FloatLow(backend="reloadly", balance=Money(4000, "USD"),
                   threshold=Money(5000, "USD"), lowest=Money(4000, "USD"), at=clock.now())
    text, _ = render(FLOAT_LOW, ui, low.to_params())
    assert "reloadly is $40.00, below the alert level of $50.00" in text
