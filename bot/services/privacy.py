"""Privacy: what /forget would delete and keep, what stands in its way, and the forget itself.

A forget deletes the user's lines, readings, rules, support requests, drafts, messages and
settings, and keeps what the accounts need (charges, payments, wallet movements: amounts,
dates and references) under their Telegram id, with nothing that names them or their lines
(storage/privacy.py decides per table). It is refused while something is not settled: a
wallet below zero, money held for a top-up, a charge open, a KHQR that may still be paid,
or a payment waiting for its refund. Money in the wallet does not stop it, but the user is
told how to get it out first and confirms knowing that it stays in the ledger under their
id (nothing in the bot can pay cash, a transfer or a KHQR back, and a leftover below the
smallest top-up could never be spent: refusing would keep such a user for ever).

The confirmation button carries when it was asked; a press is honoured within
``confirm_within`` of that and only when the user has not been forgotten since (a button
left over from before a forget changes nothing for the user who came back). A press that
leaves money behind is honoured only when the wallet holds the amount the question showed
(the button carries a token of it); otherwise the question is asked again.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from bot.clock import Clock
from bot.domain.money import Money
from bot.domain.privacy import Erased, Obstacles, Stored, money_token
from bot.services.users import UsersService
from storage.audit import AuditRepository
from storage.crypto import FieldCipher
from storage.db import Database
from storage.privacy import PrivacyRepository

# A button's moment may be this far ahead of our clock (another worker's clock).
CLOCK_SLACK = timedelta(minutes=1)


@dataclass(frozen=True)
class Ready:
    """Nothing stands in the way: this is what a forget would delete and keep, and the
    money it would leave in the wallet (the question must show it)."""

    stored: Stored
    money_left: tuple[Money, ...] = ()


@dataclass(frozen=True)
class Blocked:
    obstacles: Obstacles


@dataclass(frozen=True)
class Stale:
    """The confirmation was asked too long ago, or before the user was last forgotten."""


@dataclass(frozen=True)
class Forgotten:
    erased: Erased
    money_left: tuple[Money, ...] = ()  # still in the wallet, under the user's id


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
            if obstacles.blocking:
                return Blocked(obstacles)
            return Ready(await repo.stored(user_id), obstacles.money_left)

    async def forget(self, user_id: int, *, asked_at: datetime,
                     money_shown: str | None = None) -> Forgotten | Ready | Blocked | Stale:
        """Forgets the user, re-checking everything in the same transaction; ``asked_at``:
        when the confirmation was asked, ``money_shown``: the ``money_token`` of the money
        in the wallet it showed (the button says both). Ready: the wallet holds money the
        question did not show, ask again."""
        now = self._clock.now()
        if not now - self.confirm_within <= asked_at <= now + CLOCK_SLACK:
            return Stale()
        # The audit log is long: the rows about the user are looked for before the write
        # transaction, which then reads only the rows written since.
        async with self._db.read() as conn:
            audit = await PrivacyRepository(conn, self._cipher).audit_about(user_id)
        async with self._db.write() as conn:
            repo = PrivacyRepository(conn, self._cipher)
            _known, forgotten_at = await repo.forgotten_at(user_id, lock=True)
            if forgotten_at is not None and asked_at <= forgotten_at:
                return Stale()
            obstacles = await repo.obstacles(user_id, khqr_grace_minutes=self._khqr_grace,
                                             lock=True)
            if obstacles.blocking:
                return Blocked(obstacles)
            money_left = obstacles.money_left
            if money_left and money_shown != money_token(money_left):
                return Ready(await repo.stored(user_id), money_left)
            erased = await repo.forget(user_id, now=now, audit=audit)
            await AuditRepository(conn).record(at=now, actor=f"user:{user_id}",
                                               action="user.forgotten",
                                               details=erased.as_details())
        self._users.drop_cached(user_id)  # after the commit: their language and zone are gone
        return Forgotten(erased, money_left)
