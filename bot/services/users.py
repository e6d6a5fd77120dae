"""Users: first contact and per-user preferences."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from bot.clock import Clock
from bot.domain.quiet_hours import QuietHours
from bot.i18n import SUPPORTED_LANGUAGES, negotiate
from storage.audit import AuditRepository
from storage.db import Database
from storage.users import UserRecord, UsersRepository


def zone_and_quiet_hours(user: UserRecord | None,
                         default_zone: ZoneInfo) -> tuple[ZoneInfo, QuietHours | None]:
    """A user's time zone (``default_zone`` when they chose none, or one this system no
    longer knows) and their quiet hours (None: not set), for what is sent to them."""
    zone = default_zone
    if user is not None and user.timezone:
        try:
            zone = ZoneInfo(user.timezone)
        except (ZoneInfoNotFoundError, ValueError):
            zone = default_zone
    quiet = (QuietHours(user.quiet_start_minute, user.quiet_end_minute)
             if user is not None and user.quiet_start_minute is not None
             and user.quiet_end_minute is not None else None)
    return zone, quiet


class UsersService:
    def __init__(self, db: Database, clock: Clock, default_zone: ZoneInfo, *,
                 cache_for: timedelta = timedelta(minutes=1)) -> None:
        self._db = db
        self.clock = clock
        self.default_zone = default_zone
        # Every update needs the user's language and zone; this service is the only one that
        # changes them and forgets its copy when it does. The expiry bounds how long another
        # process's change could go unseen.
        self._cache_for = cache_for
        self._preferences: dict[int, tuple[str | None, str | None, datetime]] = {}
        self._changes = 0  # counts changes made, so a read that overlapped one is not kept

    async def greet(self, user_id: int, telegram_language: str | None) -> UserRecord:
        """The user's record, created on first contact in their Telegram language."""
        now = self.clock.now()
        async with self._db.write() as conn:
            users = UsersRepository(conn)
            user = await users.ensure(user_id, language=negotiate(telegram_language), now=now)
            if not user.reachable:  # they blocked the bot, then came back with /start
                await users.update(user_id, now=now, reachable=True)
                user = replace(user, reachable=True)
        self._forget(user_id)  # after the commit: no read can fetch the old row again
        return user

    async def language_of(self, user_id: int, telegram_language: str | None) -> str:
        """The language the user chose (/language), else the one Telegram reports."""
        async with self._db.read() as conn:
            user = await UsersRepository(conn).get(user_id)
        if user is not None and user.language in SUPPORTED_LANGUAGES:
            return user.language
        return negotiate(telegram_language)

    async def preferences(self, user_id: int,
                          telegram_language: str | None) -> tuple[str, ZoneInfo]:
        """Language and time zone, read once a minute at most (every update needs both)."""
        now = self.clock.now()
        cached = self._preferences.get(user_id)
        if cached is None or cached[2] <= now:
            changes = self._changes
            async with self._db.read() as conn:
                user = await UsersRepository(conn).get(user_id)
            if user is None:
                return negotiate(telegram_language), self.default_zone  # not cached: /start
            fresh = (user.language, user.timezone, now + self._cache_for)
            if changes == self._changes:  # no change meanwhile: the read is current
                if len(self._preferences) > 100_000:
                    self._preferences.clear()
                self._preferences[user_id] = fresh
            cached = fresh
        language, zone_name, _expiry = cached
        return (language if language in SUPPORTED_LANGUAGES else negotiate(telegram_language),
                ZoneInfo(zone_name) if zone_name else self.default_zone)

    async def zone_of(self, user_id: int) -> ZoneInfo:
        async with self._db.read() as conn:
            user = await UsersRepository(conn).get(user_id)
        return zone_and_quiet_hours(user, self.default_zone)[0]

    async def set_language(self, user_id: int, language: str) -> bool:
        if language not in SUPPORTED_LANGUAGES:
            return False
        await self._update(user_id, "user.language", language=language)
        return True

    async def settings_of(self, user_id: int) -> UserRecord | None:
        async with self._db.read() as conn:
            return await UsersRepository(conn).get(user_id)

    async def set_timezone(self, user_id: int, zone_name: str) -> ZoneInfo | None:
        """Stores an IANA zone; None (nothing stored) when the name is not one."""
        try:
            zone = ZoneInfo(zone_name)
        except (ZoneInfoNotFoundError, ValueError):
            return None
        await self._update(user_id, "user.timezone", timezone=zone.key)
        return zone

    async def set_quiet_hours(self, user_id: int, quiet: QuietHours | None) -> None:
        await self._update(user_id, "user.quiet_hours",
                           quiet_start_minute=quiet.start_minute if quiet else None,
                           quiet_end_minute=quiet.end_minute if quiet else None)

    def drop_cached(self, user_id: int) -> None:
        """Forgets this service's copy of the user's language and zone: another service
        changed their row (/forget)."""
        self._forget(user_id)

    def _forget(self, user_id: int) -> None:
        self._changes += 1
        self._preferences.pop(user_id, None)

    async def _update(self, user_id: int, action: str, **changes: object) -> None:
        now = self.clock.now()
        async with self._db.write() as conn:
            users = UsersRepository(conn)
            await users.ensure(user_id, language=None, now=now)
            await users.update(user_id, now=now, **changes)
            await AuditRepository(conn).record(at=now, actor=f"user:{user_id}", action=action,
                                               details={k: v for k, v in changes.items()})
        self._forget(user_id)  # after the commit: no read can fetch the old row again
