"""The reading a rule charged on, kept with its charge (migration 0014) on every backend:
what the domain keeps of a reading for each kind of rule, what the sweep stores with the
charge it fires and puts in the approval request and the receipt, that a calendar run keeps
none, and that the request still names the reading after the readings are gone."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import delete

from bot.domain.charges import ChargeState
from bot.domain.money import Money
from bot.domain.readings import LineReading, ReadingSource, TriggerReading
from bot.domain.rules import Approval, CalendarKind, Trigger
from bot.domain.watch import trigger_reading
from bot.services.charging import (
    APPROVAL_REQUEST,
    RECEIPT,
    AlreadyOpen,
    ApprovalRequest,
    Receipt,
    TriggerShown,
)
from storage.readings import ReadingsRepository
from storage.tables import line_readings
from tests.unit.charging_world import ALICE, ALICE_NUMBER, World, check_invariants, usd
from tests.unit.scheduler_world import (
    FakeReadings,
    add_rule,
    charges_of,
    make_due,
    queued,
    scheduler,
    set_balance,
)

READ_AT = datetime(2026, 11, 25, 2, 0, tzinfo=UTC)
VALID_UNTIL = datetime(2026, 12, 1, 2, 0, tzinfo=UTC)
FULL = LineReading(source=ReadingSource.PROVIDER, read_at=READ_AT, balance=usd(50),
                   data_mb=80, validity_end=VALID_UNTIL)
TRIGGER_KEYS = {"trigger_source", "trigger_read_at", "trigger_balance_minor",
                "trigger_currency", "trigger_data_mb", "trigger_validity_end",
                "trigger_read_by"}


def params_of(row: dict[str, object]) -> dict[str, object]:
    params = row["params"]
    assert isinstance(params, dict)
    return params


# --- what the domain keeps ------------------------------------------------------------------


@pytest.mark.parametrize(("trigger", "kept"), [
    (Trigger.BALANCE_BELOW, LineReading(ReadingSource.PROVIDER, READ_AT, balance=usd(50))),
    (Trigger.DATA_BELOW, LineReading(ReadingSource.PROVIDER, READ_AT, data_mb=80)),
    (Trigger.KEEP_ALIVE, LineReading(ReadingSource.PROVIDER, READ_AT,
                                     validity_end=VALID_UNTIL)),
])
def test_a_rule_keeps_only_the_figure_it_fired_on(trigger: Trigger, kept: LineReading) -> None:
    assert trigger_reading(trigger, FULL, "Airalo") == TriggerReading(kept, "Airalo")


def test_a_calendar_rule_keeps_no_reading_and_a_missing_figure_none() -> None:
    assert trigger_reading(Trigger.CALENDAR, FULL) is None
    validity_only = LineReading(ReadingSource.ESTIMATE, READ_AT, validity_end=VALID_UNTIL)
    assert trigger_reading(Trigger.BALANCE_BELOW, validity_only) is None


def test_only_a_providers_reading_names_who_read_it() -> None:
    reported = LineReading(ReadingSource.USER, READ_AT, balance=usd(30))
    assert trigger_reading(Trigger.BALANCE_BELOW, reported, "Airalo") == TriggerReading(
        reported, None)


# --- what the sweep stores ------------------------------------------------------------------


async def test_an_ask_rule_keeps_the_reading_it_fired_on_and_its_request_names_it(
        world: World) -> None:
    alice = world.lines[ALICE]
    await world.fund(ALICE, 5000)
    rule = await add_rule(world, alice, ALICE, trigger=Trigger.BALANCE_BELOW, threshold=100,
                          approval=Approval.ASK)
    await set_balance(world, 50)
    read_at = world.clock.now()

    await scheduler(world).check_lines()

    [charge] = await charges_of(world, rule.id)
    assert charge.state is ChargeState.AWAITING_APPROVAL
    assert charge.trigger == TriggerReading(LineReading(
        source=ReadingSource.PROVIDER, read_at=read_at, balance=usd(50)))
    [request] = await queued(world, APPROVAL_REQUEST)
    params = params_of(request)
    assert {key: params[key] for key in TRIGGER_KEYS if key in params} == {
        "trigger_source": "provider", "trigger_read_at": read_at.isoformat(),
        "trigger_balance_minor": 50, "trigger_currency": "USD"}
    assert ApprovalRequest.from_params(params).trigger == TriggerShown(
        source=ReadingSource.PROVIDER, read_at=read_at, balance=usd(50))
    await check_invariants(world)


async def test_an_automatic_rules_receipt_names_the_reading(world: World) -> None:
    alice = world.lines[ALICE]
    await world.fund(ALICE, 5000)
    rule = await add_rule(world, alice, ALICE, trigger=Trigger.BALANCE_BELOW, threshold=100)
    await set_balance(world, 50)
    read_at = world.clock.now()

    await scheduler(world).check_lines()

    [charge] = await charges_of(world, rule.id)
    assert charge.state is ChargeState.SUCCEEDED
    [receipt] = await queued(world, RECEIPT)
    assert Receipt.from_params(params_of(receipt)).trigger == TriggerShown(
        source=ReadingSource.PROVIDER, read_at=read_at, balance=usd(50))
    await check_invariants(world, settled=True)


async def test_a_keep_alive_and_a_data_rule_keep_their_own_figure(world: World) -> None:
    alice = world.lines[ALICE]
    await world.fund(ALICE, 5000)
    fake = FakeReadings(world.clock)
    validity_end = world.clock.now() + timedelta(days=2)
    fake.script(ALICE_NUMBER.e164).validity_end = validity_end
    keep_alive = await add_rule(world, alice, ALICE, trigger=Trigger.KEEP_ALIVE,
                                days_before=3, amount=100)
    sweep = scheduler(world, readings=fake)
    await sweep.check_lines()
    [kept] = await charges_of(world, keep_alive.id)
    assert kept.trigger is not None and kept.trigger.reading == LineReading(
        source=ReadingSource.PROVIDER, read_at=world.clock.now(), validity_end=validity_end)

    bob_line = await world.add_line(ALICE, "0962345670")
    fake.script("+855962345670").data_mb = 80
    data = await add_rule(world, bob_line, ALICE, trigger=Trigger.DATA_BELOW,
                          threshold_mb=100)
    world.clock.advance(timedelta(minutes=5))
    await make_due(world, bob_line)
    await sweep.check_lines()
    [low_data] = await charges_of(world, data.id)
    assert low_data.trigger is not None and low_data.trigger.reading == LineReading(
        source=ReadingSource.PROVIDER, read_at=world.clock.now(), data_mb=80)


async def test_a_reported_reading_is_kept_as_the_users(world: World) -> None:
    alice = world.lines[ALICE]
    await world.fund(ALICE, 5000)
    fake = FakeReadings(world.clock, unreadable={ALICE_NUMBER.operator})
    rule = await add_rule(world, alice, ALICE, trigger=Trigger.BALANCE_BELOW, threshold=100,
                          approval=Approval.ASK)
    world.clock.advance(timedelta(hours=1))  # reported after the line was proven
    reported_at = world.clock.now() - timedelta(minutes=10)
    async with world.db.write() as conn:
        await ReadingsRepository(conn).add(alice, LineReading(
            source=ReadingSource.USER, read_at=reported_at, balance=usd(30)),
            recorded_at=reported_at)

    await scheduler(world, readings=fake).check_lines()

    [charge] = await charges_of(world, rule.id)
    assert charge.trigger == TriggerReading(LineReading(
        source=ReadingSource.USER, read_at=reported_at, balance=usd(30)))


async def test_a_calendar_run_keeps_no_reading(world: World) -> None:
    alice = world.lines[ALICE]
    await world.fund(ALICE, 5000)
    await set_balance(world, 50)
    await scheduler(world).check_lines()  # the line has a fresh reading: it is not cited
    rule = await add_rule(world, alice, ALICE, trigger=Trigger.CALENDAR,
                          calendar=CalendarKind.MONTHLY, calendar_value=26,
                          approval=Approval.ASK)
    assert rule.next_run_at is not None
    world.clock.set(rule.next_run_at + timedelta(minutes=1))

    await scheduler(world).run_calendar()

    [charge] = await charges_of(world, rule.id)
    assert charge.trigger is None
    [request] = await queued(world, APPROVAL_REQUEST)
    assert TRIGGER_KEYS & set(params_of(request)) == set()
    assert ApprovalRequest.from_params(params_of(request)).trigger is None


async def test_the_request_shown_again_names_the_reading_after_the_readings_are_gone(
        world: World) -> None:
    alice = world.lines[ALICE]
    rule = await add_rule(world, alice, ALICE, trigger=Trigger.BALANCE_BELOW, threshold=100,
                          approval=Approval.ASK)
    await set_balance(world, 50)
    read_at = world.clock.now()
    await scheduler(world).check_lines()
    async with world.db.write() as conn:
        await conn.execute(delete(line_readings))  # pruned, or the line's history forgotten

    # "Top up now" while the rule's request waits: the request is shown again.
    pointed = await world.service().request_manual(ALICE, alice, usd(200), None, nonce="n1")

    assert isinstance(pointed, AlreadyOpen) and pointed.request is not None
    [charge] = await charges_of(world, rule.id)
    assert pointed.charge.id == charge.id
    assert pointed.request.trigger == TriggerShown(
        source=ReadingSource.PROVIDER, read_at=read_at, balance=Money(50, "USD"))
