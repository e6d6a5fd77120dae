"""Scheduler sweeps against a simulated carrier that declines, times out and loses answers
(SimulatorKnobs), on every backend: failed charges release their holds, no reference is
paid twice, every period is charged at most once and the ledger always balances."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from sqlalchemy import select

from bot.clock import ManualClock
from bot.domain.charges import ChargeState
from bot.domain.operators import Operator
from bot.domain.products import Product
from bot.domain.rules import CalendarKind, Trigger
from bot.gateways.simulated_carrier import SimulatedCarrier, SimulatorKnobs
from bot.gateways.topup import TopUpRequest, TopUpResult
from bot.services.charging import CHARGE_FAILED
from storage.crypto import FieldCipher
from storage.db import Database
from storage.tables import holds
from tests.unit.charging_world import (
    ALICE,
    ALICE_NUMBER,
    BOB,
    BOB_NUMBER,
    World,
    check_invariants,
    drive_to_completion,
    make_world,
    usd,
)
from tests.unit.scheduler_world import (
    add_rule,
    charges_of,
    line,
    make_due,
    queued,
    rule,
    scheduler,
    set_balance,
)

FIRST_RUN = datetime(2026, 11, 26, 2, 0, tzinfo=UTC)  # 09:00 in Phnom Penh


@dataclass
class BrokenForOneNumber:
    """The carrier, except that a top-up of ``broken`` raises an error no adapter should let
    out (a malformed answer, a bug): not a GatewayError."""

    inner: SimulatedCarrier
    broken: str

    async def catalog(self, operator: Operator) -> list[Product]:
        return await self.inner.catalog(operator)

    async def top_up(self, request: TopUpRequest) -> TopUpResult:
        if request.phone_e164 == self.broken:
            raise RuntimeError("malformed answer from the provider")
        return await self.inner.top_up(request)

    async def lookup(self, reference: str) -> TopUpResult | None:
        return await self.inner.lookup(reference)


async def hold_status(world: World, charge_id: int) -> str | None:
    async with world.db.read() as conn:
        return (await conn.execute(select(holds.c.status)
                                   .where(holds.c.charge_id == charge_id))).scalar_one_or_none()


async def test_a_declined_calendar_charge_fails_releases_its_hold_and_the_rule_moves_on(
        db: Database, cipher: FieldCipher, clock: ManualClock) -> None:
    world = await make_world(db, cipher, clock, knobs=SimulatorKnobs(decline_rate=1.0))
    await world.fund(ALICE, 5000)
    daily = await add_rule(world, world.lines[ALICE], ALICE, trigger=Trigger.CALENDAR,
                           calendar=CalendarKind.EVERY_N, calendar_value=1,
                           calendar_anchor=date(2026, 11, 25))
    world.clock.set(FIRST_RUN + timedelta(minutes=1))

    report = await scheduler(world).run_calendar()

    assert report.charges == 1
    [charge] = await charges_of(world, daily.id)
    assert charge.state is ChargeState.FAILED
    assert charge.failure_reason == "declined_by_operator"
    assert await hold_status(world, charge.id) == "released"
    assert (await world.available(ALICE)).minor == 5000
    assert await world.carrier.times_paid(charge.reference) == 0
    assert [row["user_id"] for row in await queued(world, CHARGE_FAILED)
            if row["chat_id"] == ALICE] == [ALICE]
    assert (await rule(world, daily.id)).next_run_at == FIRST_RUN + timedelta(days=1)
    await check_invariants(world, settled=True)


async def test_a_declined_threshold_charge_fails_once_for_its_episode(
        db: Database, cipher: FieldCipher, clock: ManualClock) -> None:
    world = await make_world(db, cipher, clock, knobs=SimulatorKnobs(decline_rate=1.0))
    await world.fund(ALICE, 5000)
    threshold = await add_rule(world, world.lines[ALICE], ALICE,
                               trigger=Trigger.BALANCE_BELOW, threshold=100)
    await set_balance(world, 50)
    sweep = scheduler(world)

    await sweep.check_lines()
    for _ in range(3):  # still low, same episode: the failed charge is not repeated blind
        world.clock.advance(timedelta(minutes=40))
        await make_due(world)
        await sweep.check_lines()

    [charge] = await charges_of(world, threshold.id)
    assert charge.idempotency_key == f"rule:{threshold.id}:episode:1"
    assert charge.state is ChargeState.FAILED
    assert await hold_status(world, charge.id) == "released"
    assert (await world.available(ALICE)).minor == 5000
    await check_invariants(world, settled=True)


async def test_top_ups_that_always_time_out_fail_after_the_retries_with_the_hold_released(
        db: Database, cipher: FieldCipher, clock: ManualClock) -> None:
    world = await make_world(db, cipher, clock, knobs=SimulatorKnobs(timeout_rate=1.0))
    await world.fund(ALICE, 5000)
    threshold = await add_rule(world, world.lines[ALICE], ALICE,
                               trigger=Trigger.BALANCE_BELOW, threshold=100)
    await set_balance(world, 50)

    await scheduler(world).check_lines()
    await drive_to_completion(world, world.service())

    [charge] = await charges_of(world, threshold.id)
    assert charge.state is ChargeState.FAILED
    assert charge.attempts == 3  # RETRY.max_attempts sends, each looked up first
    assert await hold_status(world, charge.id) == "released"
    assert (await world.available(ALICE)).minor == 5000
    await check_invariants(world, settled=True)


async def test_carrier_reads_that_time_out_back_off_every_line(
        db: Database, cipher: FieldCipher, clock: ManualClock) -> None:
    world = await make_world(db, cipher, clock, knobs=SimulatorKnobs(read_timeout_rate=1.0))

    report = await scheduler(world).check_lines()

    assert report.failures == {"GatewayTimeout": 2}
    for user in (ALICE, BOB):
        checked = await line(world, world.lines[user])
        assert checked.check_failures == 1
        assert checked.next_check_at is not None
        assert checked.next_check_at - world.clock.now() <= timedelta(minutes=6)


async def test_daily_runs_through_random_timeouts_declines_and_lost_answers_keep_the_books(
        db: Database, cipher: FieldCipher, clock: ManualClock) -> None:
    knobs = SimulatorKnobs(timeout_rate=0.3, decline_rate=0.2, lost_response_rate=0.2)
    world = await make_world(db, cipher, clock, knobs=knobs, seed=11)
    await world.fund(ALICE, 100_000)
    daily = await add_rule(world, world.lines[ALICE], ALICE, trigger=Trigger.CALENDAR,
                           calendar=CalendarKind.EVERY_N, calendar_value=1,
                           calendar_anchor=date(2026, 11, 25), amount=100, cap=10_000)
    sweep = scheduler(world)
    days = 12

    for day in range(days):
        world.clock.set(FIRST_RUN + timedelta(days=day, minutes=1))
        await sweep.run_calendar()
        await sweep.run_calendar()  # a second tick in the same minute adds nothing
        await drive_to_completion(world, world.service())
        await check_invariants(world)

    charges = await charges_of(world, daily.id)
    expected = [f"rule:{daily.id}:{(date(2026, 11, 26) + timedelta(days=d)).isoformat()}"
                for d in range(days)]
    assert [c.idempotency_key for c in charges] == expected
    states = {c.state for c in charges}
    assert states <= {ChargeState.SUCCEEDED, ChargeState.FAILED}
    assert states == {ChargeState.SUCCEEDED, ChargeState.FAILED}  # the seed hits both
    for charge in charges:
        paid = await world.carrier.times_paid(charge.reference)
        assert paid == (1 if charge.state is ChargeState.SUCCEEDED else 0), charge
        if charge.state is ChargeState.FAILED:
            assert await hold_status(world, charge.id) == "released"
    succeeded = sum(c.state is ChargeState.SUCCEEDED for c in charges)
    assert (await world.available(ALICE)).minor == 100_000 - 100 * succeeded
    await check_invariants(world, settled=True)


async def test_a_top_up_that_raises_does_not_stop_the_sweep_submitting_the_other_charges(
        db: Database, cipher: FieldCipher, clock: ManualClock) -> None:
    world = await make_world(db, cipher, clock)
    for user, number in ((ALICE, ALICE_NUMBER), (BOB, BOB_NUMBER)):
        await world.fund(user, 5000)
        await add_rule(world, world.lines[user], user, trigger=Trigger.BALANCE_BELOW,
                       threshold=100)
        await world.carrier.set_balance(number.e164, number.operator, usd(50))
    provider = BrokenForOneNumber(world.carrier, broken=ALICE_NUMBER.e164)
    sweep = scheduler(world, charging=world.service(provider=provider))

    report = await sweep.check_lines()  # actual: raises RuntimeError

    assert report.processed == 2
    charges = {c.line_id: c for c in await world.all_charges()}
    assert charges[world.lines[BOB]].state is ChargeState.SUCCEEDED
    await check_invariants(world)
