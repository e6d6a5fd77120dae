"""Crashes at every point that matters, then a restart: a new service reconciles with the
carrier. Across every step the ledger balances, no reference is paid twice, no charge is
lost and every receipt is queued exactly once - under each replay behaviour of the carrier
(with PAY_TWICE, one blind re-send would show as a double payment)."""

from __future__ import annotations

import random
from datetime import timedelta

import pytest

from bot.clock import ManualClock
from bot.domain.charges import ChargeState
from bot.gateways.simulated_carrier import ReplayBehaviour, SimulatorKnobs
from bot.services.charging import Approved, InsufficientFunds, Requested
from storage.crypto import FieldCipher
from storage.db import Database
from tests.unit.charging_world import (
    ALICE,
    BOB,
    RETRY,
    Crash,
    World,
    check_invariants,
    crash_at,
    drive_to_completion,
    make_world,
    random_crashes,
    usd,
)

# Where the process dies, and the state the charge is left in.
CRASH_POINTS = {
    "approved": ChargeState.APPROVED,  # funds held, committed; submission never started
    "submitted": ChargeState.SUBMITTED,  # committed as submitted; the carrier never saw it
    "accepted": ChargeState.SUBMITTED,  # the carrier applied it; its answer died with us
    "settling": ChargeState.SUBMITTED,  # mid-settlement, before the receipt was written
    "settled": ChargeState.SUCCEEDED,  # receipt written, not yet sent by the dispatcher
}


async def request(world: World, user_id: int = ALICE, nonce: str = "n",
                  cents: int = 500, line_id: int | None = None) -> int:
    line = world.lines[user_id] if line_id is None else line_id
    result = await world.service().request_manual(user_id, line, usd(cents), None, nonce)
    assert isinstance(result, Requested)
    return result.charge.id


async def crash_while_approving(world: World, point: str, charge_id: int) -> None:
    if point == "accepted":
        world.provider.crash_after_apply = True
        service = world.service()
    else:
        service = world.service(checkpoint=crash_at(point))
    with pytest.raises(Crash):
        await service.approve(ALICE, charge_id)


@pytest.mark.parametrize("replay", list(ReplayBehaviour))
@pytest.mark.parametrize("point", list(CRASH_POINTS))
async def test_a_crash_then_a_restart_settles_the_charge_exactly_once(
        db: Database, cipher: FieldCipher, clock: ManualClock, point: str,
        replay: ReplayBehaviour) -> None:
    world = await make_world(db, cipher, clock, knobs=SimulatorKnobs(replay=replay))
    await world.fund(ALICE, 2000)
    charge_id = await request(world)

    await crash_while_approving(world, point, charge_id)

    crashed = await world.charge(charge_id)
    assert crashed.state is CRASH_POINTS[point]
    await check_invariants(world)
    sent_before = len(world.provider.sent)

    restarted = world.service()
    report = await restarted.reconcile_on_start()
    await check_invariants(world)
    if point == "submitted":
        # The carrier never saw it, but the crashed worker's lease still runs: wait for it.
        assert report.left_for_later == 1
        assert len(world.provider.sent) == sent_before
    if point in ("accepted", "settling"):
        assert report.settled == 1  # found by its reference, settled without a re-send
        assert len(world.provider.sent) == sent_before
    if point == "approved":
        assert report.submitted == 1
    await drive_to_completion(world, restarted)

    charge = await world.charge(charge_id)
    assert charge.state is ChargeState.SUCCEEDED
    assert await world.carrier.times_paid(charge.reference) == 1
    receipts = await world.notifications("receipt")
    assert [r["dedupe_key"] for r in receipts] == [f"receipt:{charge_id}"]
    assert receipts[0]["status"] == "pending"  # the dispatcher sends it: once
    assert await world.available(ALICE) == usd(1500)
    await check_invariants(world, settled=True)

    # A second restart changes nothing.
    await world.service().reconcile_on_start()
    assert len(await world.notifications("receipt")) == 1
    await check_invariants(world, settled=True)


@pytest.mark.parametrize("replay", list(ReplayBehaviour))
async def test_a_crash_after_a_pending_answer_keeps_looking_it_up(
        db: Database, cipher: FieldCipher, clock: ManualClock,
        replay: ReplayBehaviour) -> None:
    world = await make_world(db, cipher, clock, knobs=SimulatorKnobs(
        replay=replay, pending_rate=1.0, settle_seconds=90))
    await world.fund(ALICE, 2000)
    charge_id = await request(world)
    await crash_while_approving(world, "accepted", charge_id)

    restarted = world.service()
    report = await restarted.reconcile_on_start()

    assert report.pending == 1
    assert (await world.charge(charge_id)).state is ChargeState.SUBMITTED
    assert len(await world.notifications("charge_processing")) == 1
    await drive_to_completion(world, restarted)
    charge = await world.charge(charge_id)
    assert charge.state is ChargeState.SUCCEEDED
    assert len(world.provider.sent) == 1
    assert await world.carrier.times_paid(charge.reference) == 1
    await check_invariants(world, settled=True)


async def test_a_crash_before_a_decline_is_recorded_releases_on_restart(
        db: Database, cipher: FieldCipher, clock: ManualClock) -> None:
    world = await make_world(db, cipher, clock, knobs=SimulatorKnobs(decline_rate=1.0))
    await world.fund(ALICE, 2000)
    charge_id = await request(world)
    await crash_while_approving(world, "accepted", charge_id)
    assert await world.available(ALICE) == usd(1500)  # still held

    await world.service().reconcile_on_start()

    charge = await world.charge(charge_id)
    assert charge.state is ChargeState.FAILED
    assert charge.failure_reason == "declined_by_operator"
    assert await world.available(ALICE) == usd(2000)
    assert len(await world.notifications("charge_failed")) == 3  # the user and two admins
    await check_invariants(world, settled=True)


async def test_a_restart_while_another_worker_calls_the_carrier_does_not_resend(
        db: Database, cipher: FieldCipher, clock: ManualClock) -> None:
    """A charge just marked submitted (its lease running) that the carrier has not seen
    yet: a restarting worker looks it up, and leaves it alone."""
    world = await make_world(db, cipher, clock)
    await world.fund(ALICE, 2000)
    charge_id = await request(world)
    await crash_while_approving(world, "submitted", charge_id)

    report = await world.service().reconcile_on_start()
    assert report.left_for_later == 1
    assert await world.service().process_due() == 0
    assert world.provider.sent == []
    clock.advance(RETRY.lease)
    assert await world.service().process_due() == 1
    assert len(world.provider.sent) == 1
    assert (await world.charge(charge_id)).state is ChargeState.SUCCEEDED
    await check_invariants(world, settled=True)


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_chaos_every_charge_ends_once_and_the_ledger_balances(
        db: Database, cipher: FieldCipher, clock: ManualClock, seed: int) -> None:
    """Many charges, every carrier fault at once, crashes anywhere, restarts."""
    rng = random.Random(seed)
    knobs = SimulatorKnobs(timeout_rate=0.2, lost_response_rate=0.2, decline_rate=0.1,
                           pending_rate=0.2, pending_failure_rate=0.2, settle_seconds=45,
                           replay=ReplayBehaviour.PAY_TWICE)
    world = await make_world(db, cipher, clock, knobs=knobs, seed=seed)
    world.provider.rng = random.Random(seed + 100)
    world.provider.crash_rate = 0.15
    world.provider.lookup_error_rate = 0.15
    await world.fund(ALICE, 5000)
    await world.fund(BOB, 3000)
    # Each charge on a line of its own: a line has one open charge at a time.
    numbers = {ALICE: "01299900{}", BOB: "096999000{}"}  # Cellcard, Smart
    ids = [await request(world, user, nonce=f"c{n}", cents=rng.choice([100, 200, 500]),
                         line_id=await world.add_line(user, numbers[user].format(n // 2)))
           for n, user in enumerate([ALICE, BOB] * 8)]

    crashing = world.service(checkpoint=random_crashes(rng, 0.15))
    outcomes: dict[int, object] = {}
    for charge_id in ids:
        owner = (await world.charge(charge_id)).user_id
        try:
            outcomes[charge_id] = await crashing.approve(owner, charge_id)
        except Crash:
            outcomes[charge_id] = None
        await check_invariants(world)
    for _ in range(3):  # sweeps that die too (process_due survives them: leases)
        clock.advance(RETRY.max_delay + RETRY.lease)
        await crashing.process_due()
        await check_invariants(world)

    world.provider.crash_rate = 0.0
    restarted = world.service()
    await restarted.reconcile_on_start()
    await check_invariants(world)
    await drive_to_completion(world, restarted, rounds=60)

    final = await world.all_charges()
    funded = {ALICE: 5000, BOB: 3000}
    for charge in final:
        assert charge.state in (ChargeState.SUCCEEDED, ChargeState.FAILED,
                                ChargeState.AWAITING_APPROVAL), charge
        if charge.state is ChargeState.AWAITING_APPROVAL:  # only when the wallet ran dry
            assert isinstance(outcomes[charge.id], InsufficientFunds), charge
    spent = {user: sum(c.amount.minor for c in final
                       if c.user_id == user and c.state is ChargeState.SUCCEEDED)
             for user in funded}
    for user, credited in funded.items():
        assert (await world.available(user)).minor == credited - spent[user]
    assert any(c.state is ChargeState.SUCCEEDED for c in final)
    assert sum(isinstance(o, Approved) for o in outcomes.values()) >= 1
    await check_invariants(world, settled=True)
    clock.advance(timedelta(hours=2))
    await restarted.expire_due()
    assert all(c.state is not ChargeState.AWAITING_APPROVAL for c in await world.all_charges())
