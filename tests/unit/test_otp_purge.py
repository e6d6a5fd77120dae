"""SMS codes are purged once they decide nothing any more (bot.jobs.schedule_code_purge): a
code's row keeps its number's blind index, which is phone-derived. Before that the hourly
cap, the resend cooldown and a lockout read it, so it must stay. On every backend, with the
injected clock."""

from __future__ import annotations

import re
from dataclasses import replace
from datetime import UTC, datetime, timedelta

from sqlalchemy import select

from bot.clock import ManualClock
from bot.domain.otp import CAP_WINDOW, ChallengeView, CheckResult, still_counts
from bot.domain.phone import MobileNumber, parse_cambodian_mobile
from bot.services.otp import CodeSent, OtpPurpose, OtpService
from storage.crypto import FieldCipher
from storage.db import Database
from storage.otp import OtpRepository
from storage.tables import otp_challenges
from storage.users import UsersRepository

USER_A, USER_B = 1001, 1002
LINE = parse_cambodian_mobile("012345678")
OTHER_LINE = parse_cambodian_mobile("0971234567")
SMS_TEXT = "Your code is {code}."


class Sms:
    def __init__(self) -> None:
        self.codes: list[str] = []

    async def send(self, phone_e164: str, text: str) -> None:
        found = re.findall(r"\d{6}", text)
        assert len(found) == 1
        self.codes.append(found[0])


async def service(db: Database, cipher: FieldCipher, clock: ManualClock,
                  sms: Sms) -> OtpService:
    async with db.write() as conn:
        for user_id in (USER_A, USER_B):
            await UsersRepository(conn).ensure(user_id, language="en", now=clock.now())
    return OtpService(db, cipher, sms, clock)


async def send(otp: OtpService, user_id: int, number: MobileNumber) -> None:
    sent = await otp.send(user_id=user_id, number=number, purpose=OtpPurpose.BIND_LINE,
                          sms_text=SMS_TEXT)
    assert isinstance(sent, CodeSent)


async def ids(db: Database) -> list[int]:
    async with db.read() as conn:
        return list((await conn.execute(
            select(otp_challenges.c.id).order_by(otp_challenges.c.id))).scalars())


async def test_purge_deletes_only_codes_that_decide_nothing_any_more(
        db: Database, cipher: FieldCipher, clock: ManualClock) -> None:
    sms = Sms()
    otp = await service(db, cipher, clock, sms)
    start = clock.now()
    await send(otp, USER_A, LINE)  # typed right at once
    ok = await otp.check(user_id=USER_A, number=LINE, purpose=OtpPurpose.BIND_LINE,
                         typed=sms.codes[-1])
    assert ok.result is CheckResult.OK
    clock.advance(timedelta(minutes=10))
    await send(otp, USER_A, OTHER_LINE)  # left to expire
    clock.advance(timedelta(minutes=10))
    await send(otp, USER_B, LINE)  # five wrong tries: the number is locked for 15 minutes
    wrong = f"{(int(sms.codes[-1]) + 1) % 1_000_000:06d}"
    for _ in range(5):
        await otp.check(user_id=USER_B, number=LINE, purpose=OtpPurpose.BIND_LINE,
                        typed=wrong)
    used, expired, locked = await ids(db)

    # Each goes when its hour is out (the locked one: its lockout is over by then), and
    # not a second before.
    for moment, gone in ((start + CAP_WINDOW, used),
                         (start + timedelta(minutes=10) + CAP_WINDOW, expired),
                         (start + timedelta(minutes=20) + CAP_WINDOW, locked)):
        clock.set(moment - timedelta(seconds=1))
        before = await ids(db)
        assert await otp.purge() == 0
        clock.set(moment)
        assert await otp.purge() == 1
        assert await ids(db) == [i for i in before if i != gone]
    assert await ids(db) == []


async def test_a_running_lockout_keeps_its_code_past_the_hour(
        db: Database, cipher: FieldCipher, clock: ManualClock) -> None:
    otp = await service(db, cipher, clock, Sms())
    now = clock.now()
    async with db.write() as conn:
        repo = OtpRepository(conn, cipher)
        code = await repo.create(user_id=USER_A, phone_e164=LINE.e164, purpose="bind",
                                 subject=None, code="123456", now=now,
                                 expires_at=now + timedelta(minutes=5))
        await repo.record_failure(code.id, locked_until=now + timedelta(hours=2))
    clock.set(now + timedelta(hours=2) - timedelta(seconds=1))
    assert await otp.purge() == 0
    async with db.read() as conn:
        assert await OtpRepository(conn, cipher).number_locked_until(
            phone_e164=LINE.e164, now=clock.now()) == now + timedelta(hours=2)
    clock.set(now + timedelta(hours=2))
    assert await otp.purge() == 1


async def test_purge_goes_in_batches_until_nothing_is_left(
        db: Database, cipher: FieldCipher, clock: ManualClock) -> None:
    otp = await service(db, cipher, clock, Sms())
    async with db.write() as conn:
        repo = OtpRepository(conn, cipher)
        for n in range(7):
            await repo.create(user_id=USER_A, phone_e164=LINE.e164, purpose="bind",
                              subject=None, code=f"{n:06d}", now=clock.now(),
                              expires_at=clock.now() + timedelta(minutes=5))
    clock.advance(CAP_WINDOW)
    assert await otp.purge(batch=3) == 7
    assert await ids(db) == []


def test_a_code_still_counts_while_in_its_hour_typeable_or_locked() -> None:
    now = datetime(2026, 12, 9, 9, 0, tzinfo=UTC)
    old = now - CAP_WINDOW
    view = ChallengeView(created_at=old, expires_at=old + timedelta(minutes=5), attempts=0,
                         locked_until=None, consumed_at=None)
    assert not still_counts(now, view)
    assert still_counts(now, replace(view, created_at=old + timedelta(seconds=1)))
    assert still_counts(now, replace(view, locked_until=now + timedelta(seconds=1)))
    assert still_counts(now, replace(view, expires_at=now + timedelta(seconds=1)))
    assert not still_counts(now, replace(view, locked_until=now))
