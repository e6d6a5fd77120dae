"""The scheduler service on every backend, driven with the manual clock: balance sweeps,
warnings once per episode, threshold / keep-alive / calendar rules, reminders."""

from __future__ import annotations

from datetime import timedelta

import pytest

from bot.clock import ManualClock
from bot.domain.charges import ChargeState
from bot.domain.rules import Trigger
from storage.crypto import FieldCipher
from storage.db import Database
from tests.unit.charging_world import ALICE, World, check_invariants, make_world
from tests.unit.scheduler_world import (
    add_rule,
    line,
    make_due,
    queued,
    scheduler,
    set_balance,
    warn_below,
)


@pytest.fixture
async def world(db: Database, cipher: FieldCipher, clock: ManualClock) -> World:
    return await make_world(db, cipher, clock)


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
