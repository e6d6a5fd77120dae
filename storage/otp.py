"""OTP challenges. Only a keyed hash of each code is stored, never the code itself."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, func, insert, or_, select, update
from sqlalchemy.engine import RowMapping
from sqlalchemy.ext.asyncio import AsyncConnection

from bot.domain.invariants import present
from bot.domain.otp import CAP_WINDOW
from storage.crypto import FieldCipher
from storage.tables import otp_challenges

# PostgreSQL advisory locks of OTP numbers use the two-int4 key space with this first key
# (the one-bigint key space does not overlap it).
_NUMBER_LOCK_SPACE = 0x0709  # "OTP"


@dataclass(frozen=True)
class OtpChallenge:
    id: int
    user_id: int | None  # None: its user was forgotten; it still counts against the number
    phone_index: str
    purpose: str
    subject: str | None
    attempts: int
    created_at: datetime
    expires_at: datetime
    locked_until: datetime | None
    consumed_at: datetime | None


def _record(row: RowMapping) -> OtpChallenge:
    return OtpChallenge(id=row["id"], user_id=row["user_id"], phone_index=row["phone_index"],
                        purpose=row["purpose"], subject=row["subject"], attempts=row["attempts"],
                        created_at=row["created_at"], expires_at=row["expires_at"],
                        locked_until=row["locked_until"], consumed_at=row["consumed_at"])


class OtpRepository:
    def __init__(self, conn: AsyncConnection, cipher: FieldCipher) -> None:
        self._conn = conn
        self._cipher = cipher

    async def create(self, *, user_id: int, phone_e164: str, purpose: str, subject: str | None,
                     code: str, now: datetime, expires_at: datetime) -> OtpChallenge:
        # The hash binds the code to its challenge id, so the id is taken first.
        result = await self._conn.execute(insert(otp_challenges).values(
            user_id=user_id, phone_index=self._cipher.blind_index(phone_e164), purpose=purpose,
            subject=subject, code_hash="", attempts=0, created_at=now, expires_at=expires_at,
        ).returning(otp_challenges.c.id))
        challenge_id = result.scalar_one()
        await self._conn.execute(update(otp_challenges).where(
            otp_challenges.c.id == challenge_id).values(
            code_hash=self._cipher.otp_hash(challenge_id, code)))
        return present(await self.get(challenge_id), f"code {challenge_id} just made exists")

    async def get(self, challenge_id: int) -> OtpChallenge | None:
        row = (await self._conn.execute(
            select(otp_challenges).where(otp_challenges.c.id == challenge_id))).mappings().first()
        return _record(row) if row else None

    async def latest(self, *, user_id: int, phone_e164: str, purpose: str,
                     lock: bool = False) -> OtpChallenge | None:
        """The newest challenge; ``lock`` holds its row until the transaction ends, so
        concurrent checks count tries one after another."""
        query = (select(otp_challenges)
                 .where(otp_challenges.c.user_id == user_id,
                        otp_challenges.c.phone_index == self._cipher.blind_index(phone_e164),
                        otp_challenges.c.purpose == purpose)
                 .order_by(otp_challenges.c.id.desc()).limit(1))
        if lock:
            query = query.with_for_update()
        row = (await self._conn.execute(query)).mappings().first()
        return _record(row) if row else None

    async def lock_number(self, phone_e164: str) -> None:
        """Holds the number until the transaction ends: whatever sends a code to it, or
        locks it after a wrong code, runs one at a time, so the hourly cap and a lockout
        cannot be raced past by two accounts at once.

        PostgreSQL: a transaction-scoped advisory lock on 32 bits of the number's blind
        index (a row lock cannot hold a number that has no challenge yet); two numbers
        that share those bits merely queue behind each other. SQLite: nothing to do, every
        write transaction is ``BEGIN IMMEDIATE`` and so already holds the database.
        """
        if self._conn.dialect.name != "postgresql":
            return
        key = int(self._cipher.blind_index(phone_e164)[:8], 16) - 2 ** 31  # an int4
        await self._conn.execute(select(func.pg_advisory_xact_lock(_NUMBER_LOCK_SPACE, key)))

    async def number_locked_until(self, *, phone_e164: str, now: datetime) -> datetime | None:
        """When the number's lockout ends, if any challenge to it (any account, any
        purpose) is locked at ``now``; None when it is not locked."""
        value: datetime | None = (await self._conn.execute(
            select(func.max(otp_challenges.c.locked_until)).where(
                otp_challenges.c.phone_index == self._cipher.blind_index(phone_e164),
                otp_challenges.c.locked_until > now))).scalar_one()
        return value

    async def user_locked_until(self, *, user_id: int, now: datetime) -> datetime | None:
        """When the latest lockout the user ran into with wrong codes ends (any number,
        any purpose); None when none of their challenges is locked at ``now``."""
        value: datetime | None = (await self._conn.execute(
            select(func.max(otp_challenges.c.locked_until)).where(
                otp_challenges.c.user_id == user_id,
                otp_challenges.c.locked_until > now))).scalar_one()
        return value

    async def sent_since(self, *, phone_e164: str, since: datetime) -> int:
        """Codes sent to a number after ``since`` by every account, for every purpose (the
        hourly cap counts these)."""
        return int((await self._conn.execute(
            select(func.count()).select_from(otp_challenges).where(
                otp_challenges.c.phone_index == self._cipher.blind_index(phone_e164),
                otp_challenges.c.created_at > since))).scalar_one())

    async def oldest_since(self, *, phone_e164: str, since: datetime) -> datetime | None:
        """When the oldest code in the window was sent (the hourly cap lifts an hour later)."""
        value: datetime | None = (await self._conn.execute(
            select(func.min(otp_challenges.c.created_at)).where(
                otp_challenges.c.phone_index == self._cipher.blind_index(phone_e164),
                otp_challenges.c.created_at > since))).scalar_one()
        return value

    async def check_code(self, challenge: OtpChallenge, code: str) -> bool:
        stored = (await self._conn.execute(select(otp_challenges.c.code_hash).where(
            otp_challenges.c.id == challenge.id))).scalar_one()
        return self._cipher.otp_matches(challenge.id, code, stored)

    async def record_failure(self, challenge_id: int, *, locked_until: datetime | None) -> None:
        await self._conn.execute(update(otp_challenges).where(
            otp_challenges.c.id == challenge_id).values(
            attempts=otp_challenges.c.attempts + 1, locked_until=locked_until))

    async def consume(self, challenge_id: int, *, now: datetime) -> bool:
        """Marks the code used; False when it was already used (a double submit)."""
        result = await self._conn.execute(update(otp_challenges).where(
            otp_challenges.c.id == challenge_id,
            otp_challenges.c.consumed_at.is_(None)).values(consumed_at=now))
        return bool(result.rowcount)

    async def purge(self, *, now: datetime, limit: int | None = 1000,
                    user_id: int | None = None) -> int:
        """Deletes up to ``limit`` (None: all) codes that decide nothing any more at ``now``
        (the negation of ``bot.domain.otp.still_counts``: out of the hourly cap's window,
        expired, no lockout running), oldest first, whoever they were for (``user_id``:
        only that user's); how many. The row holds the number's blind index."""
        stale = (select(otp_challenges.c.id)
                 .where(otp_challenges.c.created_at <= now - CAP_WINDOW,
                        otp_challenges.c.expires_at <= now,
                        or_(otp_challenges.c.locked_until.is_(None),
                            otp_challenges.c.locked_until <= now))
                 .order_by(otp_challenges.c.id).limit(limit))
        if user_id is not None:
            stale = stale.where(otp_challenges.c.user_id == user_id)
        ids = list((await self._conn.execute(stale)).scalars())
        if not ids:
            return 0
        result = await self._conn.execute(delete(otp_challenges).where(
            otp_challenges.c.id.in_(ids)))
        return int(result.rowcount or 0)

    async def discard(self, challenge_id: int) -> None:
        """Removes a challenge whose code never left (the SMS failed): it blocks no resend."""
        await self._conn.execute(delete(otp_challenges).where(otp_challenges.c.id == challenge_id))
