"""Privacy: what /forget would delete and keep, what stands in its way, and the forget itself.

A forget deletes the user's lines, readings, rules, support requests, drafts, messages and
settings, and keeps what the accounts need (charges, payments, wallet movements: amounts,
dates and references) under their Telegram id, with nothing that names them or their lines
(storage/privacy.py decides per table). It is refused while the wallet holds money or a
hold, a charge is open, a KHQR may still be paid, or a payment waits for a refund: the user
is told how to settle it first.

The confirmation button carries when it was asked; a press is honoured within
``confirm_within`` of that and only when the user has not been forgotten since (a button
left over from before a forget changes nothing for the user who came back).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from bot.clock import Clock
from bot.domain.privacy import Erased, Obstacles, Stored
from bot.services.users import UsersService
from storage.audit import AuditRepository
from storage.crypto import FieldCipher
from storage.db import Database
from storage.privacy import PrivacyRepository

# A code counts against its number for the hourly cap this long (bot.domain.otp.may_send).
CODES_COUNT_FOR = timedelta(hours=1)
# A button's moment may be this far ahead of our clock (another worker's clock).
CLOCK_SLACK = timedelta(minutes=1)


@dataclass(frozen=True)
class Ready:
    """Nothing stands in the way: this is what a forget would delete and keep."""

    stored: Stored


@dataclass(frozen=True)
class Blocked:
    obstacles: Obstacles


@dataclass(frozen=True)
class Stale:
    """The confirmation was asked too long ago, or before the user was last forgotten."""


@dataclass(frozen=True)
class Forgotten:
    erased: Erased


class PrivacyService:
    def __init__(self, db: Database, cipher: FieldCipher, clock: Clock, users: UsersService,
                 *, khqr_grace_minutes: int,
                 confirm_within: timedelta = timedelta(minutes=15)) -> None:
        self._db = db
        self._cipher = cipher
        self._clock = clock
        self._users = users
        self._khqr_grace = khqr_grace_minutes
        self.confirm_within = confirm_within

    async def review(self, user_id: int) -> Ready | Blocked:
        """What stands in the way of forgetting the user, else what it would do."""
        async with self._db.read() as conn:
            repo = PrivacyRepository(conn, self._cipher)
            obstacles = await repo.obstacles(user_id, khqr_grace_minutes=self._khqr_grace)
            if obstacles.any:
                return Blocked(obstacles)
            return Ready(await repo.stored(user_id))

    async def forget(self, user_id: int, *, asked_at: datetime) -> Forgotten | Blocked | Stale:
        """Forgets the user, re-checking everything in the same transaction; ``asked_at``:
        when the confirmation was asked (the button says)."""
        now = self._clock.now()
        if not now - self.confirm_within <= asked_at <= now + CLOCK_SLACK:
            return Stale()
        # The audit log is long: the rows about the user are looked for before the write
        # transaction, which then reads only the rows written since.
        async with self._db.read() as conn:
            audit_ids, seen_up_to = await PrivacyRepository(conn, self._cipher).audit_about(
                user_id)
        async with self._db.write() as conn:
            repo = PrivacyRepository(conn, self._cipher)
            _known, forgotten_at = await repo.forgotten_at(user_id, lock=True)
            if forgotten_at is not None and asked_at <= forgotten_at:
                return Stale()
            obstacles = await repo.obstacles(user_id, khqr_grace_minutes=self._khqr_grace,
                                             lock=True)
            if obstacles.any:
                return Blocked(obstacles)
            erased = await repo.forget(user_id, now=now, codes_count_since=now - CODES_COUNT_FOR,
                                       audit_ids=audit_ids, audit_seen_up_to=seen_up_to)
            await AuditRepository(conn).record(at=now, actor=f"user:{user_id}",
                                               action="user.forgotten",
                                               details=erased.as_details())
        self._users.drop_cached(user_id)  # after the commit: their language and zone are gone
        return Forgotten(erased)
