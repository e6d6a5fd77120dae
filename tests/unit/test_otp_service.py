"""OtpService on every backend: codes go out by SMS, are checked once, and the policy holds."""

from __future__ import annotations

import asyncio
import contextlib
import re
from dataclasses import fields
from datetime import datetime, timedelta

import pytest
from sqlalchemy import select

from bot.clock import ManualClock
from bot.domain.otp import CheckResult, Refused, SendRefusal
from bot.domain.phone import MobileNumber, parse_cambodian_mobile
from bot.services.otp import CheckOutcome, CodeNotSent, CodeSent, OtpPurpose, OtpService
from storage.audit import AuditRepository
from storage.crypto import FieldCipher
from storage.db import Database
from storage.otp import OtpChallenge, OtpRepository
from storage.tables import audit_log, otp_challenges
from storage.users import UsersRepository
from tests.fakes.sms import RecordingSms

USER_A = 1001
USER_B = 1002
LINE = parse_cambodian_mobile("012345678")
OTHER_LINE = parse_cambodian_mobile("0971234567")
SMS_TEXT = "Your top-up code is {code}. It expires in 5 minutes."
KHMER_DIGITS = "០១២៣៤៥៦៧៨៩"


@pytest.fixture
def sms() -> RecordingSms:
    return RecordingSms()


@pytest.fixture
async def otp(db: Database, cipher: FieldCipher, sms: RecordingSms,
              clock: ManualClock) -> OtpService:
    async with db.write() as conn:
        for user_id in (USER_A, USER_B):
            await UsersRepository(conn).ensure(user_id, language="en", now=clock.now())
    return OtpService(db, cipher, sms, clock)


async def send(otp: OtpService, *, user_id: int = USER_A, number: MobileNumber = LINE,
               purpose: OtpPurpose = OtpPurpose.BIND_LINE,
               subject: str | None = None) -> CodeSent | CodeNotSent:
    return await otp.send(user_id=user_id, number=number, purpose=purpose, sms_text=SMS_TEXT,
                          subject=subject)


async def check(otp: OtpService, typed: str, *, user_id: int = USER_A,
                number: MobileNumber = LINE,
                purpose: OtpPurpose = OtpPurpose.BIND_LINE) -> CheckOutcome:
    return await otp.check(user_id=user_id, number=number, purpose=purpose, typed=typed)


def wrong(code: str, step: int = 1) -> str:
    return f"{(int(code) + step) % 1_000_000:06d}"


async def challenges(db: Database) -> list[OtpChallenge]:
    async with db.read() as conn:
        rows = (await conn.execute(select(otp_challenges).order_by(
            otp_challenges.c.id))).mappings().all()
    return [OtpChallenge(**{f.name: row[f.name] for f in fields(OtpChallenge)}) for row in rows]


async def audit_actions(db: Database) -> list[str]:
    async with db.read() as conn:
        return [e.action for e in reversed(await AuditRepository(conn).latest(500))]


# --- sending -----------------------------------------------------------------------------

async def test_send_texts_one_six_digit_code(otp: OtpService, sms: RecordingSms,
                                             clock: ManualClock) -> None:
    sent = await send(otp)

    assert sent == CodeSent(expires_at=clock.now() + timedelta(minutes=5),
                            resend_at=clock.now() + timedelta(seconds=60))
    assert len(sms.sent) == 1
    phone, text = sms.sent[0]
    assert phone == LINE.e164 == "+85512345678"
    assert re.fullmatch(r"\d{6}", sms.last_code())
    assert text == SMS_TEXT.format(code=sms.last_code())


async def test_send_records_a_challenge_and_an_audit_entry(db: Database, otp: OtpService,
                                                           clock: ManualClock) -> None:
    await send(otp)

    [challenge] = await challenges(db)
    assert challenge.user_id == USER_A
    assert challenge.purpose == "bind"
    assert challenge.attempts == 0
    assert challenge.created_at == clock.now()
    assert challenge.expires_at == clock.now() + timedelta(minutes=5)
    assert challenge.locked_until is None
    assert challenge.consumed_at is None
    async with db.read() as conn:
        [entry] = await AuditRepository(conn).latest(action="otp.sent")
    assert entry.actor == f"user:{USER_A}"
    assert entry.subject == str(challenge.id)
    assert entry.details == {"purpose": "bind", "line": LINE.masked}


async def test_code_is_never_stored_in_clear(db: Database, otp: OtpService,
                                             sms: RecordingSms) -> None:
    await send(otp)
    code = sms.last_code()
    await check(otp, wrong(code))
    assert (await check(otp, code)).result is CheckResult.OK

    async with db.read() as conn:
        challenge_rows = (await conn.execute(select(otp_challenges))).mappings().all()
        audit_rows = (await conn.execute(select(audit_log))).mappings().all()
    assert challenge_rows
    assert audit_rows
    for row in [*challenge_rows, *audit_rows]:
        as_text = " ".join(str(value) for value in row.values())
        assert code not in as_text
        assert "12345678" not in as_text  # the full number is not in clear either
    assert re.fullmatch(r"[0-9a-f]{64}", challenge_rows[0]["code_hash"])


# --- checking ----------------------------------------------------------------------------

async def test_right_code_is_ok_once_then_used(db: Database, otp: OtpService,
                                               sms: RecordingSms, clock: ManualClock) -> None:
    await send(otp)
    code = sms.last_code()
    clock.advance(timedelta(seconds=30))

    assert await check(otp, code) == CheckOutcome(CheckResult.OK)
    again = await check(otp, code)

    assert again.result is CheckResult.USED
    [challenge] = await challenges(db)
    assert challenge.consumed_at == clock.now()
    assert challenge.attempts == 0


async def test_subject_comes_back_with_an_ok(otp: OtpService, sms: RecordingSms) -> None:
    await send(otp, purpose=OtpPurpose.CONFIRM_RULE, subject="rule-42")
    outcome = await check(otp, sms.last_code(), purpose=OtpPurpose.CONFIRM_RULE)
    assert outcome == CheckOutcome(CheckResult.OK, subject="rule-42")


async def test_purposes_are_separate(otp: OtpService, sms: RecordingSms) -> None:
    await send(otp, purpose=OtpPurpose.CONFIRM_RULE, subject="rule-1")
    code = sms.last_code()

    assert (await check(otp, code)).result is CheckResult.EXPIRED  # no BIND_LINE challenge
    assert (await check(otp, code, purpose=OtpPurpose.CONFIRM_RULE)).result is CheckResult.OK


async def test_check_without_any_code_sent_is_expired(otp: OtpService) -> None:
    assert await check(otp, "123456") == CheckOutcome(CheckResult.EXPIRED)


async def test_wrong_codes_count_down_then_lock(db: Database, otp: OtpService, sms: RecordingSms,
                                                clock: ManualClock) -> None:
    await send(otp)
    code = sms.last_code()

    for step, left in enumerate([4, 3, 2, 1], start=1):
        clock.advance(timedelta(seconds=10))
        assert await check(otp, wrong(code, step)) == CheckOutcome(CheckResult.WRONG, left)
    clock.advance(timedelta(seconds=10))
    locked = await check(otp, wrong(code, 5))

    locked_until = clock.now() + timedelta(minutes=15)
    assert locked == CheckOutcome(CheckResult.LOCKED, 0, locked_until)
    clock.advance(timedelta(seconds=5))
    during = await check(otp, code)
    assert during.result is CheckResult.LOCKED
    assert during.locked_until == locked_until
    assert during.tries_left == 0
    [challenge] = await challenges(db)
    assert challenge.attempts == 5
    assert challenge.consumed_at is None
    assert (await audit_actions(db)).count("otp.wrong") == 5


async def test_no_new_code_during_lockout_then_a_new_one_works(
        otp: OtpService, sms: RecordingSms, clock: ManualClock) -> None:
    await send(otp)
    code = sms.last_code()
    for step in range(1, 6):
        outcome = await check(otp, wrong(code, step))
    assert outcome.result is CheckResult.LOCKED
    locked_until = clock.now() + timedelta(minutes=15)

    clock.advance(timedelta(minutes=14, seconds=59))
    assert await send(otp) == CodeNotSent(Refused(SendRefusal.LOCKED, locked_until))
    assert len(sms.sent) == 1

    clock.advance(timedelta(seconds=1))
    sent = await send(otp)
    assert isinstance(sent, CodeSent)
    assert len(sms.sent) == 2
    assert await check(otp, sms.last_code()) == CheckOutcome(CheckResult.OK)


async def test_code_expires_after_five_minutes(otp: OtpService, sms: RecordingSms,
                                               clock: ManualClock) -> None:
    await send(otp)
    code = sms.last_code()
    clock.advance(timedelta(minutes=5))

    outcome = await check(otp, code)

    assert outcome.result is CheckResult.EXPIRED
    assert outcome.tries_left == 5


async def test_code_works_just_before_it_expires(otp: OtpService, sms: RecordingSms,
                                                 clock: ManualClock) -> None:
    await send(otp)
    clock.advance(timedelta(minutes=4, seconds=59))
    assert (await check(otp, sms.last_code())).result is CheckResult.OK


async def test_new_code_replaces_the_old_one(otp: OtpService, sms: RecordingSms,
                                             clock: ManualClock,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    codes = iter([111111, 222222])
    monkeypatch.setattr("bot.services.otp.secrets.randbelow", lambda _n: next(codes))
    await send(otp)
    clock.advance(timedelta(seconds=60))
    await send(otp)

    assert (await check(otp, "111111")) == CheckOutcome(CheckResult.WRONG, 4)
    assert (await check(otp, "222222")).result is CheckResult.OK


# --- resend limits -----------------------------------------------------------------------

async def test_resend_within_a_minute_is_refused(otp: OtpService, sms: RecordingSms,
                                                 clock: ManualClock) -> None:
    first_at = clock.now()
    await send(otp)
    clock.advance(timedelta(seconds=59))

    assert await send(otp) == CodeNotSent(
        Refused(SendRefusal.COOLDOWN, first_at + timedelta(seconds=60)))
    assert len(sms.sent) == 1

    clock.advance(timedelta(seconds=1))
    assert isinstance(await send(otp), CodeSent)
    assert len(sms.sent) == 2
    assert (await check(otp, sms.last_code())).result is CheckResult.OK


async def test_resend_right_after_a_used_code_is_allowed(otp: OtpService, sms: RecordingSms,
                                                         clock: ManualClock) -> None:
    await send(otp)
    assert (await check(otp, sms.last_code())).result is CheckResult.OK
    clock.advance(timedelta(seconds=1))
    assert isinstance(await send(otp), CodeSent)


async def test_sixth_code_within_an_hour_is_refused(otp: OtpService, sms: RecordingSms,
                                                    clock: ManualClock) -> None:
    first_at = clock.now()
    for _ in range(5):
        assert isinstance(await send(otp), CodeSent)
        clock.advance(timedelta(seconds=60))

    assert await send(otp) == CodeNotSent(
        Refused(SendRefusal.HOURLY_CAP, first_at + timedelta(hours=1)))
    assert len(sms.sent) == 5

    clock.set(first_at + timedelta(hours=1, seconds=1))
    assert isinstance(await send(otp), CodeSent)
    assert len(sms.sent) == 6


async def test_hourly_cap_lifts_at_the_retry_time_it_gave(otp: OtpService,
                                                          clock: ManualClock) -> None:
    for _ in range(5):
        await send(otp)
        clock.advance(timedelta(seconds=60))
    refused = await send(otp)
    assert isinstance(refused, CodeNotSent)
    assert refused.refused is not None

    clock.set(refused.refused.retry_at)
    assert isinstance(await send(otp), CodeSent)


async def test_hourly_cap_counts_the_number_not_the_user(otp: OtpService, sms: RecordingSms,
                                                         clock: ManualClock) -> None:
    first_at = clock.now()
    for i in range(5):
        assert isinstance(await send(otp, user_id=USER_A if i % 2 else USER_B), CodeSent)
        clock.advance(timedelta(seconds=60))

    assert await send(otp, user_id=USER_A) == CodeNotSent(
        Refused(SendRefusal.HOURLY_CAP, first_at + timedelta(hours=1)))
    assert isinstance(await send(otp, number=OTHER_LINE), CodeSent)  # another number is free


async def test_hourly_cap_counts_every_account_and_every_purpose(
        otp: OtpService, sms: RecordingSms, clock: ManualClock) -> None:
    first_at = clock.now()
    askers = [(USER_A, OtpPurpose.BIND_LINE), (USER_B, OtpPurpose.BIND_LINE),
              (USER_A, OtpPurpose.CONFIRM_RULE), (USER_B, OtpPurpose.CONFIRM_RULE),
              (USER_B, OtpPurpose.BIND_LINE)]
    for user_id, purpose in askers:
        assert isinstance(await send(otp, user_id=user_id, purpose=purpose), CodeSent)
        clock.advance(timedelta(seconds=61))

    capped = CodeNotSent(Refused(SendRefusal.HOURLY_CAP, first_at + timedelta(hours=1)))
    for user_id, purpose in askers:
        assert await send(otp, user_id=user_id, purpose=purpose) == capped
    assert len(sms.sent) == 5


# --- the lockout belongs to the number ---------------------------------------------------

async def lock_out(otp: OtpService, sms: RecordingSms, clock: ManualClock, *,
                   user_id: int = USER_A, purpose: OtpPurpose = OtpPurpose.BIND_LINE,
                   ) -> datetime:
    """Five wrong codes from ``user_id``; when the number's lockout ends."""
    assert isinstance(await send(otp, user_id=user_id, purpose=purpose), CodeSent)
    code = sms.last_code()
    for step in range(1, 6):
        outcome = await check(otp, wrong(code, step), user_id=user_id, purpose=purpose)
    assert outcome.result is CheckResult.LOCKED
    return clock.now() + timedelta(minutes=15)


async def test_a_number_locked_for_one_account_gets_no_code_for_another(
        db: Database, otp: OtpService, sms: RecordingSms, clock: ManualClock) -> None:
    locked_until = await lock_out(otp, sms, clock, user_id=USER_A)
    clock.advance(timedelta(minutes=2))

    refused = await send(otp, user_id=USER_B)

    # the very refusal the locked-out account itself gets: nothing tells who locked it
    assert refused == CodeNotSent(Refused(SendRefusal.LOCKED, locked_until))
    assert await send(otp, user_id=USER_A) == refused
    assert len(sms.sent) == 1
    assert len(await challenges(db)) == 1
    assert isinstance(await send(otp, user_id=USER_B, number=OTHER_LINE), CodeSent)

    clock.set(locked_until)
    assert isinstance(await send(otp, user_id=USER_B), CodeSent)
    assert await check(otp, sms.last_code(), user_id=USER_B) == CheckOutcome(CheckResult.OK)


@pytest.mark.parametrize(("locked_by", "asked_for"), [
    (OtpPurpose.BIND_LINE, OtpPurpose.CONFIRM_RULE),
    (OtpPurpose.CONFIRM_RULE, OtpPurpose.BIND_LINE),
    (OtpPurpose.CONFIRM_RULE, OtpPurpose.CONFIRM_RULE),
])
@pytest.mark.parametrize("asker", [USER_A, USER_B])
async def test_the_lockout_holds_whatever_the_code_is_for(
        otp: OtpService, sms: RecordingSms, clock: ManualClock, locked_by: OtpPurpose,
        asked_for: OtpPurpose, asker: int) -> None:
    locked_until = await lock_out(otp, sms, clock, purpose=locked_by)
    clock.advance(timedelta(minutes=14, seconds=59))

    assert await send(otp, user_id=asker, purpose=asked_for, subject="rule-1") == CodeNotSent(
        Refused(SendRefusal.LOCKED, locked_until))
    assert len(sms.sent) == 1


async def test_a_code_sent_before_the_lockout_can_still_be_typed(
        otp: OtpService, sms: RecordingSms, clock: ManualClock) -> None:
    """The lockout stops new codes; a code already out keeps its own five tries, so an
    attacker locking the number cannot spoil the owner's binding in progress."""
    assert isinstance(await send(otp, user_id=USER_B), CodeSent)
    owners_code = sms.last_code()
    clock.advance(timedelta(seconds=1))
    await lock_out(otp, sms, clock, user_id=USER_A)

    assert await check(otp, owners_code, user_id=USER_B) == CheckOutcome(CheckResult.OK)


async def test_lockout_of_tells_the_locked_out_account_when_it_ends(
        otp: OtpService, sms: RecordingSms, clock: ManualClock) -> None:
    assert await otp.lockout_of(USER_A) is None
    locked_until = await lock_out(otp, sms, clock, user_id=USER_A)

    assert await otp.lockout_of(USER_A) == locked_until
    assert await otp.lockout_of(USER_B) is None  # refused at send, not locked by its codes
    clock.set(locked_until - timedelta(seconds=1))
    assert await otp.lockout_of(USER_A) == locked_until
    clock.set(locked_until)
    assert await otp.lockout_of(USER_A) is None


# --- what people type --------------------------------------------------------------------

@pytest.mark.parametrize("layout", ["spaced", "dashed", "khmer", "khmer_spaced", "padded"])
async def test_typed_variants_of_the_code_are_accepted(otp: OtpService, sms: RecordingSms,
                                                       layout: str) -> None:
    await send(otp)
    code = sms.last_code()
    khmer = "".join(KHMER_DIGITS[int(d)] for d in code)
    typed = {
        "spaced": f"{code[:2]} {code[2:4]} {code[4:]}",
        "dashed": f"{code[:3]}-{code[3:]}",
        "khmer": khmer,
        "khmer_spaced": f"{khmer[:3]} {khmer[3:]}",
        "padded": f"  {code}\n",
    }[layout]

    assert await check(otp, typed) == CheckOutcome(CheckResult.OK)


@pytest.mark.parametrize("typed", ["hello", "7" * 4000, "x" * 4000, "🙂🔢🙂", "12345",
                                   "1234567", ""])
async def test_malformed_text_does_not_use_up_a_try(db: Database, otp: OtpService,
                                                    sms: RecordingSms, typed: str) -> None:
    await send(otp)
    code = sms.last_code()

    outcome = await check(otp, typed)

    assert outcome.result is CheckResult.MALFORMED
    assert outcome.tries_left == 5
    [challenge] = await challenges(db)
    assert challenge.attempts == 0
    assert await check(otp, wrong(code)) == CheckOutcome(CheckResult.WRONG, 4)
    assert (await check(otp, code)).result is CheckResult.OK


# --- the SMS gateway failing -------------------------------------------------------------

async def test_gateway_failure_sends_nothing_and_blocks_no_resend(
        db: Database, otp: OtpService, sms: RecordingSms) -> None:
    sms.failing = True

    assert await send(otp) == CodeNotSent(None)
    assert sms.attempts == 1
    assert await challenges(db) == []
    assert (await audit_actions(db))[-1] == "otp.sms_failed"

    sms.failing = False
    assert isinstance(await send(otp), CodeSent)  # no cooldown to wait for
    assert (await check(otp, sms.last_code())).result is CheckResult.OK


async def test_failed_sends_do_not_count_towards_the_hourly_cap(
        otp: OtpService, sms: RecordingSms) -> None:
    sms.failing = True
    for _ in range(6):
        assert await send(otp) == CodeNotSent(None)
    sms.failing = False
    assert isinstance(await send(otp), CodeSent)


# --- users are separate ------------------------------------------------------------------

async def test_another_user_cannot_use_or_spend_a_users_code(db: Database, otp: OtpService,
                                                             sms: RecordingSms) -> None:
    await send(otp, user_id=USER_A)
    code = sms.last_code()

    assert await check(otp, code, user_id=USER_B) == CheckOutcome(CheckResult.EXPIRED)
    for step in range(1, 6):
        await check(otp, wrong(code, step), user_id=USER_B)

    [challenge] = await challenges(db)
    assert challenge.attempts == 0
    assert challenge.consumed_at is None
    assert await check(otp, code, user_id=USER_A) == CheckOutcome(CheckResult.OK)


async def test_two_users_proving_one_number_have_their_own_codes(
        db: Database, otp: OtpService, sms: RecordingSms, monkeypatch: pytest.MonkeyPatch) -> None:
    codes = iter([123123, 456456])
    monkeypatch.setattr("bot.services.otp.secrets.randbelow", lambda _n: next(codes))
    assert isinstance(await send(otp, user_id=USER_A), CodeSent)
    assert isinstance(await send(otp, user_id=USER_B), CodeSent)  # no cooldown across users

    assert await check(otp, "123123", user_id=USER_B) == CheckOutcome(CheckResult.WRONG, 4)
    assert await check(otp, "456456", user_id=USER_B) == CheckOutcome(CheckResult.OK)
    assert await check(otp, "123123", user_id=USER_A) == CheckOutcome(CheckResult.OK)
    first, second = await challenges(db)
    assert (first.user_id, first.attempts) == (USER_A, 0)
    assert (second.user_id, second.attempts) == (USER_B, 1)


# --- concurrent checks (PostgreSQL: SQLite's BEGIN IMMEDIATE already serializes them) ----

@pytest.fixture
def checks_meet(monkeypatch: pytest.MonkeyPatch) -> asyncio.Barrier:
    """Holds concurrent checks after they read the challenge until all of them have."""
    barrier = asyncio.Barrier(6)
    original = OtpRepository.check_code

    async def synchronized(self: OtpRepository, challenge: OtpChallenge, code: str) -> bool:
        matches = await original(self, challenge, code)
        # Without a row lock all checks meet here; with it (the fix) only one is here at a
        # time, so the wait gives up after a moment and the checks go on one by one.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(barrier.wait(), timeout=0.3)
        return matches

    monkeypatch.setattr(OtpRepository, "check_code", synchronized)
    return barrier


async def test_concurrent_wrong_codes_cannot_exceed_the_tries(
        db: Database, otp: OtpService, sms: RecordingSms, checks_meet: asyncio.Barrier) -> None:
    if db.is_sqlite:
        pytest.skip("SQLite write transactions never overlap")
    await send(otp)
    code = sms.last_code()

    async with asyncio.timeout(30):
        outcomes = await asyncio.gather(
            *(check(otp, wrong(code, step)) for step in range(1, checks_meet.parties + 1)))

    [challenge] = await challenges(db)
    assert [o.result for o in outcomes].count(CheckResult.WRONG) <= 4
    assert challenge.locked_until is not None


async def test_concurrent_double_submit_is_ok_then_used(
        db: Database, otp: OtpService, sms: RecordingSms, checks_meet: asyncio.Barrier) -> None:
    if db.is_sqlite:
        pytest.skip("SQLite write transactions never overlap")
    await send(otp)
    code = sms.last_code()

    async with asyncio.timeout(30):
        outcomes = await asyncio.gather(
            *(check(otp, code) for _ in range(checks_meet.parties)))

    results = sorted(o.result.value for o in outcomes)
    assert results == ["ok"] + ["used"] * (checks_meet.parties - 1)
    [challenge] = await challenges(db)
    assert challenge.attempts == 0


# --- concurrent sends to one number (PostgreSQL; SQLite writers never overlap) -----------

async def test_concurrent_accounts_cannot_send_past_the_hourly_cap(
        db: Database, otp: OtpService, sms: RecordingSms, clock: ManualClock,
        monkeypatch: pytest.MonkeyPatch) -> None:
    if db.is_sqlite:
        pytest.skip("SQLite write transactions never overlap")
    accounts = [USER_A + i for i in range(otp.policy.max_sends_per_hour + 1)]
    async with db.write() as conn:
        for user_id in accounts:
            await UsersRepository(conn).ensure(user_id, language="en", now=clock.now())
    barrier = asyncio.Barrier(len(accounts))
    original = OtpRepository.sent_since

    async def synchronized(self: OtpRepository, *, phone_e164: str, since: datetime) -> int:
        counted = await original(self, phone_e164=phone_e164, since=since)
        # Unserialised, every send counts 0 here at once; serialised (the fix), one is here
        # at a time and the wait gives up after a moment.
        with contextlib.suppress(TimeoutError, asyncio.BrokenBarrierError):
            await asyncio.wait_for(barrier.wait(), timeout=0.3)
        return counted

    monkeypatch.setattr(OtpRepository, "sent_since", synchronized)

    async with asyncio.timeout(30):
        outcomes = await asyncio.gather(*(send(otp, user_id=u) for u in accounts))

    assert len(sms.sent) == otp.policy.max_sends_per_hour
    assert [o for o in outcomes if isinstance(o, CodeNotSent)] == [
        CodeNotSent(Refused(SendRefusal.HOURLY_CAP, clock.now() + timedelta(hours=1)))]


async def test_a_send_overlapping_the_locking_wrong_code_waits_and_is_refused(
        db: Database, otp: OtpService, sms: RecordingSms, clock: ManualClock,
        monkeypatch: pytest.MonkeyPatch) -> None:
    if db.is_sqlite:
        pytest.skip("SQLite write transactions never overlap")
    assert isinstance(await send(otp, user_id=USER_A), CodeSent)
    code = sms.last_code()
    for step in range(1, 5):
        await check(otp, wrong(code, step))
    locking = asyncio.Event()  # the fifth wrong code is recorded, not yet committed
    read = asyncio.Event()  # the other account's send has read the number's state
    record_failure, sent_since = OtpRepository.record_failure, OtpRepository.sent_since

    async def failure_then_wait(self: OtpRepository, challenge_id: int, *,
                                locked_until: datetime | None) -> None:
        await record_failure(self, challenge_id, locked_until=locked_until)
        locking.set()
        # Unserialised, the send reads meanwhile (seeing no lock yet); serialised (the
        # fix), it waits for this transaction, so this wait gives up after a moment.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(read.wait(), timeout=0.3)

    async def count_then_tell(self: OtpRepository, *, phone_e164: str,
                              since: datetime) -> int:
        counted = await sent_since(self, phone_e164=phone_e164, since=since)
        read.set()
        return counted

    monkeypatch.setattr(OtpRepository, "record_failure", failure_then_wait)
    monkeypatch.setattr(OtpRepository, "sent_since", count_then_tell)

    async def other_account_asks() -> CodeSent | CodeNotSent:
        await locking.wait()
        return await send(otp, user_id=USER_B)

    async with asyncio.timeout(30):
        locked, asked = await asyncio.gather(check(otp, wrong(code, 5)), other_account_asks())

    assert locked.result is CheckResult.LOCKED
    assert asked == CodeNotSent(Refused(SendRefusal.LOCKED, clock.now() + timedelta(minutes=15)))
    assert len(sms.sent) == 1

