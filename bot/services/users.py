"""Users: first contact and per-user preferences."""

from __future__ import annotations

from bot.clock import Clock
from storage.db import Database
from storage.users import UserRecord, UsersRepository


class UsersService:
    def __init__(self, db: Database, clock: Clock) -> None:
        self._db = db
        self._clock = clock

    async def greet(self, user_id: int, telegram_language: str | None) -> UserRecord:
        """The user's record, created on first contact with their Telegram language."""
        async with self._db.write() as conn:
            return await UsersRepository(conn).ensure(
                user_id, language=telegram_language, now=self._clock.now())
