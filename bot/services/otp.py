"""Sending and checking one-time codes (SMS to the line being proven or confirmed)."""

from __future__ import annotations

import enum
import logging
import secrets
from dataclasses import dataclass
from datetime import datetime

from bot.clock import Clock
from bot.domain import otp as policy_rules
from bot.domain.otp import CheckResult, OtpPolicy, Refused
from bot.domain.phone import MobileNumber
from bot.gateways.sms import SmsSender
from storage.audit import AuditRepository
from storage.crypto import FieldCipher
from storage.db import Database
from storage.otp import OtpChallenge, OtpRepository

log = logging.getLogger(__name__)


class OtpPurpose(enum.StrEnum):
    BIND_LINE = "bind"
    CONFIRM_RULE = "rule"


@dataclass(frozen=True)
class CodeSent:
    expires_at: datetime
    resend_at: datetime


@dataclass(frozen=True)
class CodeNotSent:
    refused: Refused | None  # None: the SMS gateway failed; nothing to wait for


@dataclass(frozen=True)
class CheckOutcome:
    result: CheckResult
    tries_left: int = 0
    locked_until: datetime | None = None
    subject: str | None = None


def _view(challenge: OtpChallenge) -> policy_rules.ChallengeView:
    return policy_rules.ChallengeView(
        created_at=challenge.created_at, expires_at=challenge.expires_at,
        attempts=challenge.attempts, locked_until=challenge.locked_until,
        consumed_at=challenge.consumed_at)


class OtpService:
    def __init__(self, db: Database, cipher: FieldCipher, sms: SmsSender, clock: Clock,
                 policy: OtpPolicy | None = None) -> None:
        self._db = db
        self._cipher = cipher
        self._sms = sms
        self._clock = clock
        self.policy = policy or OtpPolicy()

    async def send(self, *, user_id: int, number: MobileNumber, purpose: OtpPurpose,
                   sms_text: str, subject: str | None = None) -> CodeSent | CodeNotSent:
        """Sends a fresh code unless locked out, too soon, or over the hourly cap.

        The lockout and the hourly cap belong to the number: five wrong codes from any
        account, for any purpose, stop every code to it until the lock ends, and every
        account's codes count towards the cap. The cooldown is the asking account's own.
        ``sms_text`` is the localized message with ``{code}`` where the code goes.
        """
        now = self._clock.now()
        code = f"{secrets.randbelow(10 ** policy_rules.CODE_DIGITS):0{policy_rules.CODE_DIGITS}d}"
        async with self._db.write() as conn:
            repo = OtpRepository(conn, self._cipher)
            await repo.lock_number(number.e164)  # sends and lockouts of a number queue
            latest = await repo.latest(user_id=user_id, phone_e164=number.e164, purpose=purpose)
            hour_ago = now - policy_rules.CAP_WINDOW
            refused = policy_rules.may_send(
                self.policy, now, _view(latest) if latest else None,
                await repo.sent_since(phone_e164=number.e164, since=hour_ago),
                await repo.oldest_since(phone_e164=number.e164, since=hour_ago),
                number_locked_until=await repo.number_locked_until(phone_e164=number.e164,
                                                                   now=now))
            if refused is not None:
                return CodeNotSent(refused)
            challenge = await repo.create(
                user_id=user_id, phone_e164=number.e164, purpose=purpose, subject=subject,
                code=code, now=now, expires_at=now + self.policy.lifetime)
            await AuditRepository(conn).record(
                at=now, actor=f"user:{user_id}", action="otp.sent", subject=str(challenge.id),
                details={"purpose": purpose.value, "line": number.masked})
        try:
            await self._sms.send(number.e164, sms_text.format(code=code))
        except Exception:
            log.exception("SMS gateway failed to send a code to %s", number.masked)
            async with self._db.write() as conn:
                await OtpRepository(conn, self._cipher).discard(challenge.id)
                await AuditRepository(conn).record(
                    at=now, actor="system", action="otp.sms_failed", subject=str(challenge.id),
                    details={"line": number.masked})
            return CodeNotSent(None)
        return CodeSent(expires_at=challenge.expires_at,
                        resend_at=now + self.policy.resend_cooldown)

    async def check(self, *, user_id: int, number: MobileNumber, purpose: OtpPurpose,
                    typed: str) -> CheckOutcome:
        """Checks a typed code against the latest challenge; a right code is used up."""
        now = self._clock.now()
        code = policy_rules.normalize_code(typed)
        async with self._db.write() as conn:
            repo = OtpRepository(conn, self._cipher)
            # Taken before the challenge row, as send() does: a wrong code that locks the
            # number and another account's send to it cannot overlap.
            await repo.lock_number(number.e164)
            challenge = await repo.latest(user_id=user_id, phone_e164=number.e164,
                                          purpose=purpose, lock=True)
            if challenge is None:
                return CheckOutcome(CheckResult.EXPIRED)
            verdict = policy_rules.precheck(self.policy, now, _view(challenge), code)
            if verdict is not None:
                return CheckOutcome(verdict, policy_rules.tries_left(self.policy,
                                                                     challenge.attempts),
                                    challenge.locked_until)
            if await repo.check_code(challenge, code):
                if await repo.consume(challenge.id, now=now):
                    return CheckOutcome(CheckResult.OK, subject=challenge.subject)
                return CheckOutcome(CheckResult.USED)  # a double submit lost the race
            locked_until = policy_rules.lock_after_failure(self.policy, now, challenge.attempts)
            await repo.record_failure(challenge.id, locked_until=locked_until)
            await AuditRepository(conn).record(
                at=now, actor=f"user:{user_id}", action="otp.wrong", subject=str(challenge.id),
                details={"locked": locked_until is not None})
        if locked_until is not None:
            return CheckOutcome(CheckResult.LOCKED, 0, locked_until)
        return CheckOutcome(CheckResult.WRONG,
                            policy_rules.tries_left(self.policy, challenge.attempts + 1))

    async def purge(self, *, batch: int = 1000) -> int:
        """Deletes the codes that decide nothing any more (sent over an hour ago, expired,
        no lockout running), ``batch`` per transaction; how many. A scheduled job runs it:
        a code's row keeps its number's blind index, which is phone-derived."""
        purged = 0
        while True:
            async with self._db.write() as conn:
                deleted = await OtpRepository(conn, self._cipher).purge(
                    now=self._clock.now(), limit=batch)
            purged += deleted
            if deleted < batch:
                return purged

    async def lockout_of(self, user_id: int) -> datetime | None:
        """When the lockout the user's own wrong codes caused ends (the latest one, any
        number or purpose); None when they are not locked out now."""
        async with self._db.read() as conn:
            return await OtpRepository(conn, self._cipher).user_locked_until(
                user_id=user_id, now=self._clock.now())
