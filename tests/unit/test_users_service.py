"""UsersService: language and zone in one read, kept for a minute, forgotten on change."""

from __future__ import annotations

from datetime import timedelta
from zoneinfo import ZoneInfo

from bot.clock import ManualClock
from bot.services.users import UsersService
from storage.db import Database
from storage.users import UsersRepository

PHNOM_PENH = ZoneInfo("Asia/Phnom_Penh")


async def test_an_unknown_user_gets_telegrams_language_and_the_default_zone(
        db: Database, clock: ManualClock) -> None:
    users = UsersService(db, clock, PHNOM_PENH)
    assert await users.preferences(1, "zh-hant") == ("zh_Hans", PHNOM_PENH)
    await users.greet(1, "km")  # created now: not hidden by an earlier answer
    assert await users.preferences(1, "zh-hant") == ("km", PHNOM_PENH)


async def test_changes_through_the_service_are_seen_at_once(db: Database,
                                                           clock: ManualClock) -> None:
    users = UsersService(db, clock, PHNOM_PENH)
    await users.greet(2, "en")
    assert await users.preferences(2, "en") == ("en", PHNOM_PENH)
    await users.set_language(2, "km")
    await users.set_timezone(2, "Asia/Bangkok")
    assert await users.preferences(2, "en") == ("km", ZoneInfo("Asia/Bangkok"))


async def test_a_change_made_elsewhere_is_seen_within_the_cache_time(
        db: Database, clock: ManualClock) -> None:
    users = UsersService(db, clock, PHNOM_PENH, cache_for=timedelta(minutes=1))
    await users.greet(3, "en")
    assert (await users.preferences(3, None))[0] == "en"
    async with db.write() as conn:  # another process changes the row
        await UsersRepository(conn).update(3, now=clock.now(), language="zh_Hans")

    assert (await users.preferences(3, None))[0] == "en"  # one read a minute, at most
    clock.advance(timedelta(minutes=1))
    assert (await users.preferences(3, None))[0] == "zh_Hans"
