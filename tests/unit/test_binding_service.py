"""BindingService on every backend: a line is bound once its owner proves it."""

from __future__ import annotations

from datetime import timedelta

import pytest

from bot.clock import ManualClock
from bot.domain.money import Money
from bot.domain.operators import Operator
from bot.domain.otp import CheckResult
from bot.domain.phone import MobileNumber, parse_cambodian_mobile
from bot.domain.rules import Approval, RuleSpec, RuleStatus, Trigger
from bot.services.binding import (
    MAX_LINES_PER_USER,
    AlreadyYours,
    BindConfirm,
    BindingService,
    Bound,
    TooManyLines,
)
from bot.services.otp import CheckOutcome, CodeSent, OtpService
from storage.audit import AuditEntry, AuditRepository
from storage.crypto import FieldCipher
from storage.db import Database
from storage.lines import LineRecord, LinesRepository
from storage.rules import RulesRepository
from storage.users import UsersRepository
from tests.fakes.sms import RecordingSms

USER_A = 2001
USER_B = 2002
CELLCARD = parse_cambodian_mobile("012345678")
SMART = parse_cambodian_mobile("0969999999")
METFONE = parse_cambodian_mobile("0971234567")
# Distinct valid Cellcard numbers 012 345 600 ... 012 345 611.
MANY = [parse_cambodian_mobile(f"012 345 6{i:02d}") for i in range(12)]
SMS_TEXT = "Code {code}"


@pytest.fixture
def sms() -> RecordingSms:
    return RecordingSms()


@pytest.fixture
def binding(db: Database, cipher: FieldCipher, sms: RecordingSms,
            clock: ManualClock) -> BindingService:
    return BindingService(db, cipher, OtpService(db, cipher, sms, clock), clock)


async def start(binding: BindingService, user_id: int, number: MobileNumber, *,
                own_contact: bool = False) -> object:
    return await binding.start(user_id=user_id, number=number, own_contact=own_contact,
                               sms_text=SMS_TEXT, language="en")


async def owned(db: Database, cipher: FieldCipher, user_id: int) -> list[LineRecord]:
    async with db.read() as conn:
        return await LinesRepository(conn, cipher).for_owner(user_id)


async def line_of(db: Database, cipher: FieldCipher, number: MobileNumber) -> LineRecord | None:
    async with db.read() as conn:
        return await LinesRepository(conn, cipher).by_number(number.e164)


async def bound_audit(db: Database) -> list[AuditEntry]:
    async with db.read() as conn:
        return list(reversed(await AuditRepository(conn).latest(100, action="line.bound")))


def wrong(code: str) -> str:
    return f"{(int(code) + 1) % 1_000_000:06d}"


def test_numbers_used_here_are_distinct_and_valid() -> None:
    assert CELLCARD.operator is Operator.CELLCARD
    assert SMART.operator is Operator.SMART
    assert METFONE.operator is Operator.METFONE
    numbers = {n.e164 for n in [CELLCARD, SMART, METFONE, *MANY]}
    assert len(numbers) == 3 + len(MANY)
    assert all(n.operator is Operator.CELLCARD for n in MANY)


# --- own contact -------------------------------------------------------------------------

async def test_own_contact_of_a_free_number_binds_at_once(
        db: Database, cipher: FieldCipher, binding: BindingService, sms: RecordingSms,
        clock: ManualClock) -> None:
    result = await start(binding, USER_A, SMART, own_contact=True)

    assert isinstance(result, Bound)
    assert result.previous_owner_id is None
    assert result.line.owner_id == USER_A
    assert result.line.number == SMART
    assert result.line.verified_at == clock.now()
    assert sms.sent == []
    assert await owned(db, cipher, USER_A) == [result.line]
    [entry] = await bound_audit(db)
    assert entry.actor == f"user:{USER_A}"
    assert entry.subject == str(result.line.id)
    assert entry.details == {"line": SMART.masked, "operator": "smart", "proof": "contact",
                             "from_user": None}


async def test_start_creates_the_user(db: Database, binding: BindingService) -> None:
    await start(binding, USER_A, SMART, own_contact=True)
    async with db.read() as conn:
        user = await UsersRepository(conn).get(USER_A)
    assert user is not None
    assert user.language == "en"


# --- proof by code -----------------------------------------------------------------------

async def test_without_contact_a_code_is_sent_and_nothing_bound(
        db: Database, cipher: FieldCipher, binding: BindingService, sms: RecordingSms,
        clock: ManualClock) -> None:
    result = await start(binding, USER_A, CELLCARD)

    assert result == CodeSent(expires_at=clock.now() + timedelta(minutes=5),
                              resend_at=clock.now() + timedelta(seconds=60))
    assert sms.sent == [(CELLCARD.e164, SMS_TEXT.format(code=sms.last_code()))]
    assert await owned(db, cipher, USER_A) == []
    assert await line_of(db, cipher, CELLCARD) is None
    assert await bound_audit(db) == []


async def test_confirm_with_the_right_code_binds(
        db: Database, cipher: FieldCipher, binding: BindingService, sms: RecordingSms,
        clock: ManualClock) -> None:
    await start(binding, USER_A, METFONE)
    clock.advance(timedelta(minutes=2))

    confirmed = await binding.confirm(user_id=USER_A, number=METFONE, typed=sms.last_code())

    assert confirmed.outcome == CheckOutcome(CheckResult.OK)
    assert confirmed.bound is not None
    line = confirmed.bound.line
    assert confirmed.bound.previous_owner_id is None
    assert line.owner_id == USER_A
    assert line.number == METFONE
    assert line.verified_at == clock.now()
    assert await line_of(db, cipher, METFONE) == line
    [entry] = await bound_audit(db)
    assert entry.subject == str(line.id)
    assert entry.details == {"line": METFONE.masked, "operator": "metfone", "proof": "otp",
                             "from_user": None}


async def test_a_wrong_code_binds_nothing(db: Database, cipher: FieldCipher,
                                          binding: BindingService, sms: RecordingSms) -> None:
    await start(binding, USER_A, CELLCARD)

    confirmed = await binding.confirm(user_id=USER_A, number=CELLCARD,
                                      typed=wrong(sms.last_code()))

    assert confirmed == BindConfirm(CheckOutcome(CheckResult.WRONG, 4))
    assert await line_of(db, cipher, CELLCARD) is None
    assert await bound_audit(db) == []


async def test_a_used_code_binds_nothing_more(binding: BindingService, sms: RecordingSms) -> None:
    await start(binding, USER_A, CELLCARD)
    code = sms.last_code()
    assert (await binding.confirm(user_id=USER_A, number=CELLCARD, typed=code)).bound

    again = await binding.confirm(user_id=USER_A, number=CELLCARD, typed=code)
    assert again.outcome.result is CheckResult.USED
    assert again.bound is None


async def test_confirm_without_a_code_sent_binds_nothing(
        db: Database, cipher: FieldCipher, binding: BindingService) -> None:
    confirmed = await binding.confirm(user_id=USER_A, number=CELLCARD, typed="123456")
    assert confirmed == BindConfirm(CheckOutcome(CheckResult.EXPIRED))
    assert await line_of(db, cipher, CELLCARD) is None


async def test_code_for_one_number_does_not_bind_another(
        db: Database, cipher: FieldCipher, binding: BindingService, sms: RecordingSms) -> None:
    await start(binding, USER_A, CELLCARD)
    confirmed = await binding.confirm(user_id=USER_A, number=SMART, typed=sms.last_code())
    assert confirmed.bound is None
    assert await owned(db, cipher, USER_A) == []


async def test_resend_is_under_the_cooldown(binding: BindingService, sms: RecordingSms,
                                            clock: ManualClock) -> None:
    await start(binding, USER_A, CELLCARD)
    refused = await binding.resend(user_id=USER_A, number=CELLCARD, sms_text=SMS_TEXT)
    assert not isinstance(refused, CodeSent)
    clock.advance(timedelta(seconds=60))
    assert isinstance(await binding.resend(user_id=USER_A, number=CELLCARD, sms_text=SMS_TEXT),
                      CodeSent)
    assert len(sms.sent) == 2


# --- already bound -----------------------------------------------------------------------

@pytest.mark.parametrize("own_contact", [True, False])
async def test_binding_your_own_line_again_is_already_yours(
        binding: BindingService, sms: RecordingSms, own_contact: bool) -> None:
    first = await start(binding, USER_A, SMART, own_contact=True)
    assert isinstance(first, Bound)

    again = await start(binding, USER_A, SMART, own_contact=own_contact)

    assert again == AlreadyYours(first.line)
    assert sms.sent == []


async def test_anothers_line_moves_only_after_the_code(
        db: Database, cipher: FieldCipher, binding: BindingService, sms: RecordingSms,
        clock: ManualClock) -> None:
    first = await start(binding, USER_A, CELLCARD, own_contact=True)
    assert isinstance(first, Bound)
    async with db.write() as conn:
        await LinesRepository(conn, cipher).rename(first.line.id, "Mum", now=clock.now())

    started = await start(binding, USER_B, CELLCARD, own_contact=True)

    assert isinstance(started, CodeSent)  # a shared contact is not enough to take it
    assert [phone for phone, _ in sms.sent] == [CELLCARD.e164]
    line = await line_of(db, cipher, CELLCARD)
    assert line is not None
    assert line.owner_id == USER_A

    wrong_try = await binding.confirm(user_id=USER_B, number=CELLCARD,
                                      typed=wrong(sms.last_code()))
    assert wrong_try.bound is None
    assert [ln.id for ln in await owned(db, cipher, USER_A)] == [first.line.id]

    clock.advance(timedelta(minutes=1))
    confirmed = await binding.confirm(user_id=USER_B, number=CELLCARD, typed=sms.last_code())

    assert confirmed.outcome.result is CheckResult.OK
    assert confirmed.bound is not None
    assert confirmed.bound.previous_owner_id == USER_A
    moved = confirmed.bound.line
    assert moved.id == first.line.id
    assert moved.owner_id == USER_B
    assert moved.nickname is None  # A's name for it does not follow the line
    assert moved.verified_at == clock.now()
    assert await owned(db, cipher, USER_A) == []
    assert await owned(db, cipher, USER_B) == [moved]
    entries = await bound_audit(db)
    assert [e.details["proof"] for e in entries] == ["contact", "otp"]
    assert entries[-1].actor == f"user:{USER_B}"
    assert entries[-1].details["from_user"] == USER_A


async def test_the_previous_owner_cannot_confirm_the_new_owners_code(
        db: Database, cipher: FieldCipher, binding: BindingService, sms: RecordingSms) -> None:
    await start(binding, USER_A, CELLCARD, own_contact=True)
    await start(binding, USER_B, CELLCARD)

    attempt = await binding.confirm(user_id=USER_A, number=CELLCARD, typed=sms.last_code())

    assert attempt.bound is None
    line = await line_of(db, cipher, CELLCARD)
    assert line is not None
    assert line.owner_id == USER_A


# --- the limit ---------------------------------------------------------------------------

async def test_too_many_lines_after_ten(db: Database, cipher: FieldCipher,
                                        binding: BindingService, sms: RecordingSms) -> None:
    assert MAX_LINES_PER_USER == 10
    for number in MANY[:10]:
        assert isinstance(await start(binding, USER_A, number, own_contact=True), Bound)

    assert await start(binding, USER_A, MANY[10], own_contact=True) == TooManyLines(10)
    assert await start(binding, USER_A, MANY[11]) == TooManyLines(10)
    assert sms.sent == []
    assert len(await owned(db, cipher, USER_A)) == 10
    assert await line_of(db, cipher, MANY[10]) is None
    # A line already yours is recognised even at the limit.
    assert isinstance(await start(binding, USER_A, MANY[0]), AlreadyYours)


async def test_the_limit_is_per_user(db: Database, cipher: FieldCipher,
                                     binding: BindingService) -> None:
    for number in MANY[:10]:
        await start(binding, USER_A, number, own_contact=True)
    assert isinstance(await start(binding, USER_B, MANY[10], own_contact=True), Bound)


async def test_pending_codes_cannot_take_a_user_past_the_limit(
        db: Database, cipher: FieldCipher, binding: BindingService, sms: RecordingSms) -> None:
    for number in MANY[:9]:
        await start(binding, USER_A, number, own_contact=True)
    assert isinstance(await start(binding, USER_A, SMART), CodeSent)
    smart_code = sms.last_code()
    assert isinstance(await start(binding, USER_A, METFONE), CodeSent)
    metfone_code = sms.last_code()

    await binding.confirm(user_id=USER_A, number=SMART, typed=smart_code)
    await binding.confirm(user_id=USER_A, number=METFONE, typed=metfone_code)

    assert len(await owned(db, cipher, USER_A)) <= MAX_LINES_PER_USER


async def test_a_line_that_moves_takes_none_of_the_old_owners_rules_along(
        db: Database, cipher: FieldCipher, clock: ManualClock, binding: BindingService,
        sms: RecordingSms) -> None:
    await start(binding, USER_A, CELLCARD, own_contact=True)
    (line,) = await owned(db, cipher, USER_A)
    async with db.write() as conn:
        rule = await RulesRepository(conn).add(
            line_id=line.id, owner_id=USER_A, now=clock.now(), status=RuleStatus.ACTIVE,
            spec=RuleSpec(trigger=Trigger.BALANCE_BELOW, threshold=Money(100, "USD"),
                          amount=Money(500, "USD"), monthly_cap=Money(2000, "USD"),
                          approval=Approval.AUTO))

    await start(binding, USER_B, CELLCARD)
    await binding.confirm(user_id=USER_B, number=CELLCARD, typed=sms.last_code())

    async with db.read() as conn:
        after = await RulesRepository(conn).get(rule.id)
    assert after is not None
    assert after.status is RuleStatus.DISABLED
    assert after.next_run_at is None


@pytest.mark.parametrize("second_user", [USER_A, USER_B])
async def test_an_unbound_number_is_bound_again_by_own_contact(
        db: Database, cipher: FieldCipher, binding: BindingService, clock: ManualClock,
        second_user: int) -> None:
    first = await start(binding, USER_A, SMART, own_contact=True)
    assert isinstance(first, Bound)
    async with db.write() as conn:
        await LinesRepository(conn, cipher).unbind(first.line.id, now=clock.now())

    again = await start(binding, second_user, SMART, own_contact=True)

    assert isinstance(again, Bound)
    assert again.line.id == first.line.id  # the same row, history kept
    assert again.line.owner_id == second_user and again.line.is_bound
    assert again.previous_owner_id is None  # nobody had it bound
    assert await owned(db, cipher, second_user) == [again.line]
