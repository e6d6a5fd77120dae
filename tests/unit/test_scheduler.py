"""The scheduler service on every backend, driven with the manual clock: balance sweeps,
warnings once per episode, threshold / keep-alive / calendar rules, reminders."""

from __future__ import annotations

from datetime import timedelta

from bot.domain.charges import ChargeState
from bot.domain.rules import Approval, Trigger
from bot.services.charging import APPROVAL_REQUEST
from tests.unit.charging_world import ALICE, ALICE_NUMBER, World, check_invariants
from tests.unit.scheduler_world import (
    FakeReadings,
    add_rule,
    charges_of,
    line,
    make_due,
    queued,
    scheduler,
    set_balance,
    warn_below,
)


async def test_a_low_balance_warns_once_per_episode(world: World) -> None:
    alice = world.lines[ALICE]
    await warn_below(world, alice, 100)
    await set_balance(world, 50)
    sweep = scheduler(world)

    report = await sweep.check_lines()

    assert report.processed == 2 and report.warnings == 1
    [warning] = await queued(world, "line_warning")
    params = warning["params"]
    assert isinstance(params, dict)
    assert (params["warning"], params["balance_minor"], params["source"]) == (
        "low_balance", 50, "provider")
    checked = await line(world, alice)
    assert checked.episodes.balance_low and checked.episodes.balance_episode == 1
    assert checked.next_check_at is not None
    assert checked.next_check_at - world.clock.now() <= timedelta(minutes=33)

    world.clock.advance(timedelta(hours=1))
    await sweep.check_lines()
    assert len(await queued(world, "line_warning")) == 1  # still low: no second warning

    await set_balance(world, 500)
    world.clock.advance(timedelta(hours=1))
    await sweep.check_lines()
    await set_balance(world, 20)
    world.clock.advance(timedelta(hours=7))
    await sweep.check_lines()
    keys = [row["dedupe_key"] for row in await queued(world, "line_warning")]
    assert keys == [f"warn:low_balance:{alice}:1", f"warn:low_balance:{alice}:2"]


async def test_a_balance_rule_charges_once_per_crossing(world: World) -> None:
    alice = world.lines[ALICE]
    await world.fund(ALICE, 5000)
    rule = await add_rule(world, alice, ALICE, trigger=Trigger.BALANCE_BELOW, threshold=100)
    await set_balance(world, 50)
    sweep = scheduler(world)

    report = await sweep.check_lines()

    assert report.charges == 1
    [charge] = await world.all_charges()
    assert charge.idempotency_key == f"rule:{rule.id}:episode:1"
    assert charge.state is ChargeState.SUCCEEDED
    await make_due(world)
    await sweep.check_lines()  # topped up: recovered, nothing new
    await set_balance(world, 10)
    await make_due(world)
    world.clock.advance(timedelta(minutes=1))
    await sweep.check_lines()
    keys = sorted(c.idempotency_key for c in await world.all_charges())
    assert keys == [f"rule:{rule.id}:episode:1", f"rule:{rule.id}:episode:2"]
    await check_invariants(world, settled=True)


async def test_an_ask_rule_queues_an_approval_request_instead_of_charging(world: World) -> None:
    alice = world.lines[ALICE]
    await world.fund(ALICE, 5000)
    rule = await add_rule(world, alice, ALICE, trigger=Trigger.BALANCE_BELOW, threshold=100,
                          approval=Approval.ASK)
    await set_balance(world, 50)
    sweep = scheduler(world)

    await sweep.check_lines()
    await make_due(world)
    world.clock.advance(timedelta(minutes=5))
    await sweep.check_lines()  # still below: the same episode, nothing new

    [charge] = await world.all_charges()
    assert charge.idempotency_key == f"rule:{rule.id}:episode:1"
    assert charge.state is ChargeState.AWAITING_APPROVAL
    assert await world.carrier.times_paid(charge.reference) == 0
    assert (await world.available(ALICE)).minor == 5000  # nothing held before the answer
    [request] = await queued(world, APPROVAL_REQUEST)
    params = request["params"]
    assert isinstance(params, dict)
    assert (params["charge_id"], params["reason"], params["amount_minor"]) == (
        charge.id, "ask", 500)
    await check_invariants(world)


async def test_a_rule_charge_over_the_monthly_cap_becomes_an_approval_request(
        world: World) -> None:
    alice = world.lines[ALICE]
    await world.fund(ALICE, 5000)
    rule = await add_rule(world, alice, ALICE, trigger=Trigger.BALANCE_BELOW, threshold=100,
                          cap=600, amount=500)
    await set_balance(world, 50)
    sweep = scheduler(world)
    await sweep.check_lines()  # first crossing: 500 of the 600 cap, charged at once
    await make_due(world)
    await sweep.check_lines()  # topped up: the episode ends
    await set_balance(world, 10)
    world.clock.advance(timedelta(minutes=1))
    await make_due(world)

    report = await sweep.check_lines()

    assert report.charges == 1
    first, second = await charges_of(world, rule.id)
    assert first.state is ChargeState.SUCCEEDED
    assert second.idempotency_key == f"rule:{rule.id}:episode:2"
    assert second.state is ChargeState.AWAITING_APPROVAL
    assert await world.carrier.times_paid(second.reference) == 0
    [request] = await queued(world, APPROVAL_REQUEST)
    params = request["params"]
    assert isinstance(params, dict)
    assert (params["charge_id"], params["reason"], params["cap_minor"], params["spent_minor"]) == (
        second.id, "over_cap", 600, 500)
    await check_invariants(world)


async def test_a_keep_alive_rule_tops_up_once_per_validity_end(world: World) -> None:
    alice = world.lines[ALICE]
    await world.fund(ALICE, 5000)
    fake = FakeReadings(world.clock)
    first_end = world.clock.now() + timedelta(days=5)
    fake.script(ALICE_NUMBER.e164).validity_end = first_end
    rule = await add_rule(world, alice, ALICE, trigger=Trigger.KEEP_ALIVE, days_before=3,
                          amount=100)
    sweep = scheduler(world, readings=fake)

    await sweep.check_lines()  # five days left: not yet
    assert await world.all_charges() == []
    checked = await line(world, alice)
    assert checked.next_check_at is not None
    assert checked.next_check_at <= first_end - timedelta(days=3)

    world.clock.set(first_end - timedelta(days=2))
    await make_due(world, alice)
    await sweep.check_lines()
    for _ in range(2):  # the same validity end again: kept alive already
        world.clock.advance(timedelta(hours=2))
        await make_due(world, alice)
        await sweep.check_lines()

    [charge] = await charges_of(world, rule.id)
    assert charge.idempotency_key == f"rule:{rule.id}:episode:validity:{first_end.date()}"
    assert "validity:" in charge.idempotency_key
    assert (charge.state, charge.cause, charge.amount.minor) == (
        ChargeState.SUCCEEDED, "keep_alive", 100)

    second_end = first_end + timedelta(days=2)  # the line's validity moved on
    fake.script(ALICE_NUMBER.e164).validity_end = second_end
    world.clock.advance(timedelta(hours=1))
    await make_due(world, alice)
    await sweep.check_lines()  # more than three days ahead again: nothing
    assert len(await charges_of(world, rule.id)) == 1
    world.clock.set(second_end - timedelta(days=2))
    await make_due(world, alice)
    await sweep.check_lines()

    keys = [c.idempotency_key for c in await charges_of(world, rule.id)]
    assert keys == [f"rule:{rule.id}:episode:validity:{first_end.date()}",
                    f"rule:{rule.id}:episode:validity:{second_end.date()}"]
    await check_invariants(world, settled=True)


async def test_a_data_rule_charges_once_per_crossing_below_its_megabytes(world: World) -> None:
    alice = world.lines[ALICE]
    await world.fund(ALICE, 5000)
    fake = FakeReadings(world.clock)
    fake.script(ALICE_NUMBER.e164).data_mb = 80
    rule = await add_rule(world, alice, ALICE, trigger=Trigger.DATA_BELOW, threshold_mb=100)
    sweep = scheduler(world, readings=fake)

    await sweep.check_lines()
    for data_mb in (60, 2000, 2000, 30):  # still low, recovered, recovered, low again
        fake.script(ALICE_NUMBER.e164).data_mb = data_mb
        world.clock.advance(timedelta(minutes=10))
        await make_due(world, alice)
        await sweep.check_lines()

    keys = [c.idempotency_key for c in await charges_of(world, rule.id)]
    assert keys == [f"rule:{rule.id}:episode:1", f"rule:{rule.id}:episode:2"]
    assert {c.cause for c in await charges_of(world, rule.id)} == {"low_balance"}
    await check_invariants(world, settled=True)
