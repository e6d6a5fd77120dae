"""Binding a line to a user once they prove it is theirs (OTP by SMS, or their own contact)."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncConnection

from bot.clock import Clock
from bot.domain.invariants import present
from bot.domain.otp import CheckResult
from bot.domain.phone import MobileNumber
from bot.services.otp import CheckOutcome, CodeNotSent, CodeSent, OtpPurpose, OtpService
from storage.audit import AuditRepository
from storage.crypto import FieldCipher
from storage.db import Database
from storage.lines import LineRecord, LinesRepository
from storage.rules import RulesRepository
from storage.users import UsersRepository

MAX_LINES_PER_USER = 10


@dataclass(frozen=True)
class Bound:
    line: LineRecord
    previous_owner_id: int | None  # the line moved from this user, who must be told


@dataclass(frozen=True)
class AlreadyYours:
    line: LineRecord


@dataclass(frozen=True)
class TooManyLines:
    limit: int


BindStart = Bound | AlreadyYours | TooManyLines | CodeSent | CodeNotSent


@dataclass(frozen=True)
class BindConfirm:
    outcome: CheckOutcome
    bound: Bound | None = None
    too_many: TooManyLines | None = None  # the code was right but the user is at the limit


class BindingService:
    def __init__(self, db: Database, cipher: FieldCipher, otp: OtpService, clock: Clock) -> None:
        self._db = db
        self._cipher = cipher
        self._otp = otp
        self._clock = clock

    async def start(self, *, user_id: int, number: MobileNumber, own_contact: bool,
                    sms_text: str, language: str | None = None) -> BindStart:
        """Binds at once when the user shared their own contact for a free number;
        otherwise texts a code to the line."""
        async with self._db.write() as conn:
            await UsersRepository(conn).ensure(user_id, language=language,
                                               now=self._clock.now())
            lines = LinesRepository(conn, self._cipher)
            found = await lines.by_number(number.e164)
            # Unbound: free for anyone who proves it (binding it again moves the row).
            existing = found if found is not None and found.is_bound else None
            if existing is not None and existing.owner_id == user_id:
                return AlreadyYours(existing)
            owned = await lines.count_for_owner(user_id)
            if owned >= MAX_LINES_PER_USER:
                return TooManyLines(MAX_LINES_PER_USER)
            # Telegram vouches for a contact the user shared of themself; a line that is
            # someone else's still moves only after the code sent to it.
            if own_contact and existing is None:
                # Checked above in this same write transaction: nothing can have changed.
                return await self._bind(conn, user_id, number, proof="contact",
                                        checked=(found, owned))
        return await self._otp.send(user_id=user_id, number=number,
                                    purpose=OtpPurpose.BIND_LINE, sms_text=sms_text)

    async def resend(self, *, user_id: int, number: MobileNumber,
                     sms_text: str) -> CodeSent | CodeNotSent:
        return await self._otp.send(user_id=user_id, number=number,
                                    purpose=OtpPurpose.BIND_LINE, sms_text=sms_text)

    async def confirm(self, *, user_id: int, number: MobileNumber, typed: str) -> BindConfirm:
        outcome = await self._otp.check(user_id=user_id, number=number,
                                        purpose=OtpPurpose.BIND_LINE, typed=typed)
        if outcome.result is not CheckResult.OK:
            return BindConfirm(outcome)
        async with self._db.write() as conn:
            bound = await self._bind(conn, user_id, number, proof="otp")
        if isinstance(bound, TooManyLines):
            return BindConfirm(outcome, too_many=bound)
        return BindConfirm(outcome, bound)

    async def _bind(self, conn: AsyncConnection, user_id: int, number: MobileNumber, *,
                    proof: str, checked: tuple[LineRecord | None, int] | None = None,
                    ) -> Bound | TooManyLines:
        """``checked``: the line with that number and how many lines the user has, when the
        caller read them in this transaction already."""
        now = self._clock.now()
        lines = LinesRepository(conn, self._cipher)
        existing = (checked[0] if checked is not None
                    else await lines.by_number(number.e164, lock=True))
        already_mine = existing is not None and existing.owner_id == user_id and existing.is_bound
        # Checked again here, in the binding transaction: codes started below the limit
        # must not carry a user past it when they are all confirmed.
        owned = checked[1] if checked is not None else await lines.count_for_owner(user_id)
        if not already_mine and owned >= MAX_LINES_PER_USER:
            return TooManyLines(MAX_LINES_PER_USER)
        previous: int | None = None
        if existing is None:
            line = await lines.add(owner_id=user_id, number=number, now=now, verified_at=now)
        elif already_mine:
            line = existing
        else:
            previous = existing.owner_id if existing.is_bound else None
            # The previous owner's rules must never charge the new owner's line.
            await RulesRepository(conn).disable_for_line(existing.id, now)
            await lines.transfer(existing.id, new_owner_id=user_id, now=now)
            line = present(await lines.get(existing.id),  # locked above
                           f"line {existing.id} just transferred exists")
        await AuditRepository(conn).record(
            at=now, actor=f"user:{user_id}", action="line.bound", subject=str(line.id),
            details={"line": number.masked, "operator": number.operator.value, "proof": proof,
                     "from_user": previous})
        return Bound(line=line, previous_owner_id=previous)
