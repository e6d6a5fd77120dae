"""The auto-recharge rules service on every backend: a code texted to the line turns a rule
on; pause, resume, edit and delete; and nothing happens to a rule or line of someone else."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import func, select

from bot.clock import ManualClock
from bot.domain.money import Money
from bot.domain.operators import Operator
from bot.domain.otp import CheckResult
from bot.domain.phone import parse_cambodian_mobile
from bot.domain.products import Product
from bot.domain.rules import Approval, CalendarKind, RuleError, RuleSpec, RuleStatus, Trigger
from bot.gateways.simulated_catalog import PRODUCTS
from bot.services.catalog import CatalogService
from bot.services.otp import CodeNotSent, CodeSent, OtpService
from bot.services.rules import (
    ConfirmStatus,
    Edited,
    Invalid,
    NotYourLine,
    NotYourRule,
    Proposed,
    RulesService,
    RuleView,
    WrongState,
)
from storage.audit import AuditRepository
from storage.crypto import FieldCipher
from storage.db import Database
from storage.lines import LinesRepository
from storage.rules import RuleRecord, RulesRepository
from storage.tables import audit_log, recharge_rules
from storage.users import UsersRepository
from tests.fakes.sms import RecordingSms

ALICE, BOB = 101, 202
ALICE_NUMBER = parse_cambodian_mobile("012345678")  # Cellcard, +85512345678
BOB_NUMBER = parse_cambodian_mobile("0962345678")  # Smart
SMS_TEXT = "Your code to turn on auto-recharge: {code}"
PHNOM_PENH = ZoneInfo("Asia/Phnom_Penh")


@dataclass
class World:
    db: Database
    clock: ManualClock
    sms: RecordingSms
    rules: RulesService
    alice_line: int
    bob_line: int


@pytest.fixture
async def world(db: Database, cipher: FieldCipher, clock: ManualClock) -> World:
    sms = RecordingSms()
    otp = OtpService(db, cipher, sms, clock)
    async with db.write() as conn:
        line_ids = []
        for user_id, number in ((ALICE, ALICE_NUMBER), (BOB, BOB_NUMBER)):
            await UsersRepository(conn).ensure(user_id, language="en", now=clock.now())
            line = await LinesRepository(conn, cipher).add(owner_id=user_id, number=number,
                                                           now=clock.now(),
                                                           verified_at=clock.now())
            line_ids.append(line.id)
    return World(db=db, clock=clock, sms=sms, rules=RulesService(db, cipher, otp, clock),
                 alice_line=line_ids[0], bob_line=line_ids[1])


def usd(cents: int) -> Money:
    return Money(cents, "USD")


def monthly(day: int = 31, amount: int = 500, cap: int = 2000,
            approval: Approval = Approval.ASK) -> RuleSpec:
    return RuleSpec(trigger=Trigger.CALENDAR, monthly_cap=usd(cap), approval=approval,
                    amount=usd(amount), calendar=CalendarKind.MONTHLY, calendar_value=day)


async def propose(world: World, spec: RuleSpec | None = None) -> RuleView:
    result = await world.rules.propose(ALICE, world.alice_line, spec or monthly(), SMS_TEXT)
    assert isinstance(result, Proposed), result
    assert isinstance(result.code, CodeSent)
    return result.rule


async def enabled_rule(world: World, spec: RuleSpec | None = None) -> RuleView:
    rule = await propose(world, spec)
    result = await world.rules.confirm(ALICE, rule.id, world.sms.last_code(ALICE_NUMBER.e164))
    assert result.status is ConfirmStatus.ENABLED
    assert result.rule is not None
    return result.rule


async def confirmed_of(world: World, rule_id: int) -> tuple[int, int]:
    """The amount and cap (minor units) the rule's last code confirmed."""
    record = await stored(world, rule_id)
    return record.confirmed_amount_minor, record.confirmed_cap_minor


async def stored(world: World, rule_id: int) -> RuleRecord:
    async with world.db.read() as conn:
        rule = await RulesRepository(conn).get(rule_id)
    assert rule is not None
    return rule


async def snapshot(db: Database) -> tuple[list[dict[str, Any]], int]:
    """Every rule row and the number of audit rows: what "changes nothing" compares."""
    async with db.read() as conn:
        rows = [dict(r) for r in (await conn.execute(
            select(recharge_rules).order_by(recharge_rules.c.id))).mappings()]
        audits = (await conn.execute(select(func.count()).select_from(audit_log))).scalar_one()
    return rows, audits


async def actions(db: Database) -> list[str]:
    async with db.read() as conn:
        return [e.action for e in reversed(await AuditRepository(conn).latest(200))
                if e.action.startswith("rule.")]


# --- propose and confirm -------------------------------------------------------------------

async def test_propose_texts_the_line_and_the_code_turns_the_rule_on(world: World) -> None:
    result = await world.rules.propose(ALICE, world.alice_line, monthly(31), SMS_TEXT)

    assert isinstance(result, Proposed)
    assert isinstance(result.code, CodeSent)
    rule = result.rule
    assert rule.status is RuleStatus.AWAITING_OTP
    assert rule.next_run_at is None
    record = await stored(world, rule.id)
    assert (record.confirmed_amount_minor, record.confirmed_cap_minor) == (0, 0)
    assert record.owner_id == ALICE and rule.line_id == world.alice_line
    assert rule.spec.amount == usd(500) and rule.spec.monthly_cap == usd(2000)
    code = world.sms.last_code(ALICE_NUMBER.e164)
    assert world.sms.sent == [(ALICE_NUMBER.e164, SMS_TEXT.format(code=code))]
    world.clock.advance(timedelta(minutes=1))
    confirmed = await world.rules.confirm(ALICE, rule.id, code)

    assert confirmed.status is ConfirmStatus.ENABLED and confirmed.enabled
    assert confirmed.outcome is not None and confirmed.outcome.result is CheckResult.OK
    active = await stored(world, rule.id)
    assert confirmed.rule == RuleView.of(active)
    assert active.status is RuleStatus.ACTIVE
    assert await confirmed_of(world, active.id) == (500, 2000)
    # 2026-11-25 09:01 in Phnom Penh; November has no 31st: its last day, 09:00 local
    assert active.next_run_at == datetime(2026, 11, 30, 2, 0, tzinfo=UTC)
    assert active.next_run_at.astimezone(PHNOM_PENH) == datetime(2026, 11, 30, 9, 0,
                                                                   tzinfo=PHNOM_PENH)
    assert await actions(world.db) == ["rule.proposed", "rule.enabled"]
    assert await world.rules.list(ALICE) == [RuleView.of(active)]


async def test_a_wrong_code_keeps_the_rule_waiting(world: World) -> None:
    rule = await propose(world)
    right = world.sms.last_code(ALICE_NUMBER.e164)
    wrong = "000000" if right != "000000" else "111111"

    result = await world.rules.confirm(ALICE, rule.id, wrong)

    assert result.status is ConfirmStatus.CODE_REJECTED
    assert result.outcome is not None and result.outcome.result is CheckResult.WRONG
    assert result.outcome.tries_left == 4
    after = await stored(world, rule.id)
    assert after.status is RuleStatus.AWAITING_OTP
    assert after.next_run_at is None
    assert await confirmed_of(world, after.id) == (0, 0)
    assert "rule.enabled" not in await actions(world.db)
    # the right code still works afterwards
    assert (await world.rules.confirm(ALICE, rule.id, right)).enabled


async def test_an_expired_code_does_not_turn_the_rule_on(world: World) -> None:
    rule = await propose(world)
    code = world.sms.last_code(ALICE_NUMBER.e164)
    world.clock.advance(timedelta(minutes=6))

    result = await world.rules.confirm(ALICE, rule.id, code)

    assert result.status is ConfirmStatus.CODE_REJECTED
    assert result.outcome is not None and result.outcome.result is CheckResult.EXPIRED
    assert (await stored(world, rule.id)).status is RuleStatus.AWAITING_OTP
    # a resent code does
    world.sms.sent.clear()
    assert isinstance(await world.rules.resend_code(ALICE, rule.id, SMS_TEXT), CodeSent)
    assert (await world.rules.confirm(ALICE, rule.id,
                                      world.sms.last_code(ALICE_NUMBER.e164))).enabled


async def test_confirming_twice_is_answered_not_repeated(world: World) -> None:
    rule = await enabled_rule(world)
    before = await snapshot(world.db)

    again = await world.rules.confirm(ALICE, rule.id, world.sms.last_code(ALICE_NUMBER.e164))

    assert again.status is ConfirmStatus.NOT_AWAITING
    assert again.rule == rule
    assert again.outcome is None  # no code was checked
    assert await snapshot(world.db) == before


async def test_a_code_sent_for_another_rule_does_not_confirm_this_one(world: World) -> None:
    first = await propose(world, monthly(5))
    world.clock.advance(timedelta(minutes=2))  # past the resend cooldown
    second = await propose(world, monthly(20))
    code_for_second = world.sms.last_code(ALICE_NUMBER.e164)

    result = await world.rules.confirm(ALICE, first.id, code_for_second)

    assert result.status is ConfirmStatus.CODE_FOR_OTHER
    assert (await stored(world, first.id)).status is RuleStatus.AWAITING_OTP
    assert (await stored(world, second.id)).status is RuleStatus.AWAITING_OTP


async def test_proposing_the_same_rule_again_reuses_the_waiting_one(world: World) -> None:
    first = await propose(world)
    again = await world.rules.propose(ALICE, world.alice_line, monthly(), SMS_TEXT)

    assert isinstance(again, Proposed)
    assert again.rule == first
    assert isinstance(again.code, CodeNotSent)  # the first code is still on its way
    rows, _ = await snapshot(world.db)
    assert len(rows) == 1
    assert (await world.rules.confirm(ALICE, first.id,
                                      world.sms.last_code(ALICE_NUMBER.e164))).enabled


async def test_an_invalid_rule_is_refused_with_its_reason_and_nothing_sent(
        world: World) -> None:
    before = await snapshot(world.db)

    over_cap = await world.rules.propose(ALICE, world.alice_line, monthly(amount=3000,
                                                                          cap=2000), SMS_TEXT)
    # a Smart plan on a Cellcard line
    other_operator = replace(monthly(), amount=None, product_id="smart-air-500")
    foreign_plan = await world.rules.propose(ALICE, world.alice_line, other_operator, SMS_TEXT)

    assert over_cap == Invalid(RuleError.Reason.AMOUNT_OVER_CAP, "30.00 USD > 20.00 USD")
    assert isinstance(foreign_plan, Invalid)
    assert foreign_plan.reason is RuleError.Reason.UNKNOWN_PLAN
    assert await snapshot(world.db) == before
    assert world.sms.sent == []


async def test_a_plan_rule_confirms_the_plan_price(world: World) -> None:
    spec = replace(monthly(), amount=None, product_id="cellcard-data-6144-7d")
    rule = await enabled_rule(world, spec)

    assert rule.spec.product_id == "cellcard-data-6144-7d"
    assert rule.spec.amount is None
    assert await confirmed_of(world, rule.id) == (100, 2000)


async def test_keep_alive_without_an_amount_buys_the_cheapest_extension(world: World) -> None:
    spec = RuleSpec(trigger=Trigger.KEEP_ALIVE, monthly_cap=usd(500), approval=Approval.AUTO,
                    days_before=3)

    rule = await enabled_rule(world, spec)

    assert rule.spec.trigger is Trigger.KEEP_ALIVE
    assert rule.spec.amount == usd(100)  # Cellcard's smallest tier: $1 for 7 days
    assert rule.spec.days_before == 3
    assert rule.status is RuleStatus.ACTIVE
    assert rule.next_run_at is None  # the validity sweep finds it, not the calendar
    assert await confirmed_of(world, rule.id) == (100, 500)


async def test_every_n_days_counts_from_today_when_no_anchor_is_given(world: World) -> None:
    spec = RuleSpec(trigger=Trigger.CALENDAR, monthly_cap=usd(1000), approval=Approval.ASK,
                    amount=usd(100), calendar=CalendarKind.EVERY_N, calendar_value=7)

    rule = await enabled_rule(world, spec)

    assert rule.spec.calendar_anchor == date(2026, 11, 25)  # local date at 09:00 Phnom Penh
    # today's 09:00 run is not after now (09:00 exactly): the next is a week on
    assert rule.next_run_at == datetime(2026, 12, 2, 2, 0, tzinfo=UTC)


async def test_a_balance_rule_round_trips_through_storage(world: World) -> None:
    spec = RuleSpec(trigger=Trigger.BALANCE_BELOW, monthly_cap=usd(1500),
                    approval=Approval.ASK, amount=usd(300), threshold=usd(50))

    rule = await enabled_rule(world, spec)

    assert rule.spec == spec
    assert rule.spec.threshold == usd(50)
    assert rule.next_run_at is None


@dataclass
class Plans:
    """A provider's catalog that a test can change."""

    products: dict[str, Product]

    async def catalog(self, operator: Operator) -> list[Product]:
        return [p for p in self.products.values() if p.operator is operator]


async def test_a_plan_withdrawn_before_the_code_is_typed_is_not_turned_on(
        db: Database, cipher: FieldCipher, clock: ManualClock, world: World) -> None:
    plans = Plans(dict(PRODUCTS))
    sms = RecordingSms()
    rules = RulesService(db, cipher, OtpService(db, cipher, sms, clock), clock,
                         catalog=CatalogService(plans, clock, ttl=timedelta(0)))
    spec = replace(monthly(), amount=None, product_id="cellcard-air-500")
    proposed = await rules.propose(ALICE, world.alice_line, spec, SMS_TEXT)
    assert isinstance(proposed, Proposed)
    del plans.products["cellcard-air-500"]  # the provider's next catalog lacks it

    result = await rules.confirm(ALICE, proposed.rule.id, sms.last_code(ALICE_NUMBER.e164))

    assert result.status is ConfirmStatus.INVALID
    assert result.outcome is None  # the code was not used up
    assert (await stored(world, proposed.rule.id)).status is RuleStatus.AWAITING_OTP

# --- someone else's rule or line -----------------------------------------------------------

async def test_another_users_line_and_rule_are_refused_and_nothing_changes(
        world: World) -> None:
    rule = await enabled_rule(world)
    pending = await propose(world, monthly(10))  # awaiting a code
    world.sms.sent.clear()
    before = await snapshot(world.db)
    code = "123456"

    assert await world.rules.propose(BOB, world.alice_line, monthly(), SMS_TEXT) == \
        NotYourLine()
    for rule_id in (rule.id, pending.id, 999_999):
        assert (await world.rules.confirm(BOB, rule_id, code)).status is \
            ConfirmStatus.NOT_YOURS
        assert await world.rules.resend_code(BOB, rule_id, SMS_TEXT) == NotYourRule()
        assert await world.rules.pause(BOB, rule_id) == NotYourRule()
        assert await world.rules.resume(BOB, rule_id) == NotYourRule()
        assert await world.rules.edit(BOB, rule_id, monthly(amount=100, cap=100),
                                      SMS_TEXT) == NotYourRule()
        assert await world.rules.delete(BOB, rule_id) == NotYourRule()
        assert await world.rules.own(BOB, rule_id) is None
    assert await world.rules.propose(ALICE, 999_999, monthly(), SMS_TEXT) == NotYourLine()

    assert await world.rules.list(BOB) == []
    assert await snapshot(world.db) == before
    assert world.sms.sent == []


async def test_bobs_list_holds_only_his_rules(world: World) -> None:
    await enabled_rule(world)
    bob = await world.rules.propose(BOB, world.bob_line, monthly(1), SMS_TEXT)
    assert isinstance(bob, Proposed)

    assert [(await stored(world, r.id)).owner_id for r in await world.rules.list(ALICE)] == [
        ALICE]
    assert await world.rules.list(BOB) == [bob.rule]
    assert world.sms.sent[-1][0] == BOB_NUMBER.e164  # Bob's code went to Bob's line


# --- pause, resume, delete -----------------------------------------------------------------

async def test_pause_resume_and_delete(world: World) -> None:
    rule = await enabled_rule(world)
    assert rule.next_run_at == datetime(2026, 11, 30, 2, 0, tzinfo=UTC)

    paused = await world.rules.pause(ALICE, rule.id)
    assert isinstance(paused, RuleView)
    assert paused.status is RuleStatus.PAUSED
    assert paused.next_run_at is None
    assert await world.rules.pause(ALICE, rule.id) == paused  # a second click: no change

    world.clock.set(datetime(2026, 12, 5, 3, 0, tzinfo=UTC))  # past November's run
    resumed = await world.rules.resume(ALICE, rule.id)
    assert isinstance(resumed, RuleView)
    assert resumed.status is RuleStatus.ACTIVE
    assert resumed.next_run_at == datetime(2026, 12, 31, 2, 0, tzinfo=UTC)  # from now on
    assert await confirmed_of(world, resumed.id) == (500, 2000)
    assert await world.rules.resume(ALICE, rule.id) == resumed

    deleted = await world.rules.delete(ALICE, rule.id)
    assert isinstance(deleted, RuleView)
    assert deleted.status is RuleStatus.DISABLED
    assert deleted.next_run_at is None
    assert await world.rules.list(ALICE) == []
    assert await world.rules.delete(ALICE, rule.id) == deleted
    assert await world.rules.resume(ALICE, rule.id) == WrongState(RuleStatus.DISABLED)
    assert await world.rules.pause(ALICE, rule.id) == WrongState(RuleStatus.DISABLED)
    assert await world.rules.edit(ALICE, rule.id, monthly(amount=100),
                                  SMS_TEXT) == WrongState(RuleStatus.DISABLED)
    assert await actions(world.db) == ["rule.proposed", "rule.enabled", "rule.paused",
                                       "rule.resumed", "rule.deleted"]


async def test_a_rule_waiting_for_its_code_cannot_be_paused_or_resumed(world: World) -> None:
    rule = await propose(world)

    assert await world.rules.pause(ALICE, rule.id) == WrongState(RuleStatus.AWAITING_OTP)
    assert await world.rules.resume(ALICE, rule.id) == WrongState(RuleStatus.AWAITING_OTP)
    deleted = await world.rules.delete(ALICE, rule.id)
    assert isinstance(deleted, RuleView) and deleted.status is RuleStatus.DISABLED
    # its code no longer turns anything on
    result = await world.rules.confirm(ALICE, rule.id, world.sms.last_code(ALICE_NUMBER.e164))
    assert result.status is ConfirmStatus.NOT_AWAITING
    assert (await stored(world, rule.id)).status is RuleStatus.DISABLED


async def test_resend_only_while_waiting(world: World) -> None:
    rule = await enabled_rule(world)
    assert await world.rules.resend_code(ALICE, rule.id, SMS_TEXT) == \
        WrongState(RuleStatus.ACTIVE)


# --- edit ----------------------------------------------------------------------------------

async def test_lowering_the_amount_applies_at_once(world: World) -> None:
    rule = await enabled_rule(world)
    world.sms.sent.clear()
    world.clock.advance(timedelta(minutes=5))

    result = await world.rules.edit(ALICE, rule.id, monthly(amount=300, cap=1500), SMS_TEXT)

    assert isinstance(result, Edited)
    assert not result.needs_code and result.code is None
    edited = result.rule
    assert edited.status is RuleStatus.ACTIVE
    assert edited.spec.amount == usd(300) and edited.spec.monthly_cap == usd(1500)
    assert edited.next_run_at == rule.next_run_at  # same calendar: the due run is kept
    # what was confirmed stays the ceiling
    assert await confirmed_of(world, edited.id) == (500, 2000)
    assert world.sms.sent == []
    assert RuleView.of(await stored(world, rule.id)) == edited
    assert (await actions(world.db))[-1] == "rule.edited"

    # back up to what was confirmed: still no code
    again = await world.rules.edit(ALICE, rule.id, monthly(amount=500, cap=2000), SMS_TEXT)
    assert isinstance(again, Edited) and not again.needs_code
    assert again.rule.status is RuleStatus.ACTIVE


async def test_raising_the_amount_needs_a_new_code(world: World) -> None:
    rule = await enabled_rule(world)
    world.sms.sent.clear()
    world.clock.advance(timedelta(minutes=5))

    result = await world.rules.edit(ALICE, rule.id, monthly(amount=800, cap=2000), SMS_TEXT)

    assert isinstance(result, Edited)
    assert result.needs_code and isinstance(result.code, CodeSent)
    waiting = result.rule
    assert waiting.status is RuleStatus.AWAITING_OTP
    assert waiting.next_run_at is None  # nothing runs until the code is typed
    assert waiting.spec.amount == usd(800)
    assert await confirmed_of(world, waiting.id) == (500, 2000)
    assert [phone for phone, _ in world.sms.sent] == [ALICE_NUMBER.e164]

    confirmed = await world.rules.confirm(ALICE, rule.id,
                                          world.sms.last_code(ALICE_NUMBER.e164))

    assert confirmed.enabled and confirmed.rule is not None
    assert confirmed.rule.status is RuleStatus.ACTIVE
    assert confirmed.rule is not None
    assert await confirmed_of(world, confirmed.rule.id) == \
        (800, 2000)
    assert confirmed.rule.next_run_at == datetime(2026, 11, 30, 2, 0, tzinfo=UTC)


async def test_raising_the_cap_needs_a_new_code(world: World) -> None:
    rule = await enabled_rule(world)

    result = await world.rules.edit(ALICE, rule.id, monthly(amount=100, cap=2001), SMS_TEXT)

    assert isinstance(result, Edited) and result.needs_code
    assert (await stored(world, rule.id)).status is RuleStatus.AWAITING_OTP


async def test_switching_to_automatic_approval_needs_a_new_code(world: World) -> None:
    rule = await enabled_rule(world, monthly(approval=Approval.ASK))

    result = await world.rules.edit(ALICE, rule.id, monthly(approval=Approval.AUTO), SMS_TEXT)

    assert isinstance(result, Edited) and result.needs_code
    assert result.rule.status is RuleStatus.AWAITING_OTP
    # and back to asking is a lowering: applied at once
    back = await world.rules.edit(ALICE, rule.id, monthly(approval=Approval.ASK), SMS_TEXT)
    assert isinstance(back, Edited) and not back.needs_code
    assert back.rule.status is RuleStatus.ACTIVE
    assert back.rule.spec.approval is Approval.ASK


async def test_editing_the_calendar_moves_the_next_run(world: World) -> None:
    rule = await enabled_rule(world)

    result = await world.rules.edit(ALICE, rule.id, monthly(day=27), SMS_TEXT)

    assert isinstance(result, Edited) and not result.needs_code
    assert result.rule.next_run_at == datetime(2026, 11, 27, 2, 0, tzinfo=UTC)


async def test_editing_a_paused_rule_keeps_it_paused(world: World) -> None:
    rule = await enabled_rule(world)
    await world.rules.pause(ALICE, rule.id)

    result = await world.rules.edit(ALICE, rule.id, monthly(amount=200), SMS_TEXT)

    assert isinstance(result, Edited) and not result.needs_code
    assert result.rule.status is RuleStatus.PAUSED
    assert result.rule.next_run_at is None


async def test_an_invalid_edit_changes_nothing(world: World) -> None:
    rule = await enabled_rule(world)
    before = await snapshot(world.db)

    result = await world.rules.edit(ALICE, rule.id, monthly(day=40), SMS_TEXT)

    assert isinstance(result, Invalid)
    assert result.reason is RuleError.Reason.BAD_CALENDAR_VALUE
    assert await snapshot(world.db) == before


# --- the line goes away --------------------------------------------------------------------

async def test_disable_for_line_turns_off_every_rule_of_the_line(
        world: World, cipher: FieldCipher) -> None:
    active = await enabled_rule(world)
    world.clock.advance(timedelta(minutes=2))
    pending = await propose(world, monthly(3))
    bob = await world.rules.propose(BOB, world.bob_line, monthly(1), SMS_TEXT)
    assert isinstance(bob, Proposed)

    async with world.db.write() as conn:
        await LinesRepository(conn, cipher).unbind(world.alice_line, now=world.clock.now())
        disabled = await world.rules.disable_for_line(conn, world.alice_line)
    async with world.db.write() as conn:
        again = await world.rules.disable_for_line(conn, world.alice_line)

    assert (disabled, again) == (2, 0)
    for rule_id in (active.id, pending.id):
        rule = await stored(world, rule_id)
        assert rule.status is RuleStatus.DISABLED
        assert rule.next_run_at is None
    assert (await stored(world, bob.rule.id)).status is RuleStatus.AWAITING_OTP
    assert await world.rules.list(ALICE) == []
    # the line is no longer Alice's: nothing can be turned back on
    assert await world.rules.resume(ALICE, active.id) == NotYourRule()
    assert await world.rules.propose(ALICE, world.alice_line, monthly(),
                                     SMS_TEXT) == NotYourLine()
    assert (await actions(world.db))[-1] == "rule.disabled_for_line"


async def test_a_rule_on_a_line_now_someone_elses_is_hidden_and_cannot_run(
        world: World, cipher: FieldCipher) -> None:
    rule = await enabled_rule(world)
    async with world.db.write() as conn:  # the line moved to Bob (he proved it by SMS)
        await LinesRepository(conn, cipher).transfer(world.alice_line, new_owner_id=BOB,
                                                     now=world.clock.now())

    assert await world.rules.list(ALICE) == []
    assert await world.rules.resume(ALICE, rule.id) == NotYourRule()
    assert await world.rules.edit(ALICE, rule.id, monthly(amount=100), SMS_TEXT) == \
        NotYourRule()
    # Alice can still stop what is hers
    paused = await world.rules.pause(ALICE, rule.id)
    assert isinstance(paused, RuleView) and paused.status is RuleStatus.PAUSED
    assert await world.rules.list(BOB) == []  # Bob does not inherit Alice's rule


# --- time zone -----------------------------------------------------------------------------

async def test_the_users_zone_sets_the_local_time_of_runs(
        db: Database, cipher: FieldCipher, clock: ManualClock, world: World) -> None:
    london = ZoneInfo("Europe/London")
    sms = RecordingSms()
    async def zone_for(user_id: int) -> ZoneInfo:
        return london

    rules = RulesService(db, cipher, OtpService(db, cipher, sms, clock), clock,
                         zone_for=zone_for)
    proposed = await rules.propose(ALICE, world.alice_line, monthly(31), SMS_TEXT)
    assert isinstance(proposed, Proposed)

    result = await rules.confirm(ALICE, proposed.rule.id, sms.last_code(ALICE_NUMBER.e164))

    assert result.rule is not None
    assert result.rule.next_run_at == datetime(2026, 11, 30, 9, 0, tzinfo=UTC)  # 09:00 GMT

