"""Charges made by auto-recharge rules: once per period or episode, "ask" rules wait for the
user, automatic ones go ahead within the monthly cap (checked in the transaction that
creates the charge, with the rule row locked, so two creations at once cannot both pass)."""

from __future__ import annotations

import asyncio
import contextlib
from datetime import UTC, datetime
from typing import Any

import pytest

from bot.domain.charges import ChargeState
from bot.domain.money import Money
from bot.domain.rules import Approval, CalendarKind, RuleSpec, RuleStatus, Trigger
from bot.gateways.simulated_carrier import SimulatorKnobs
from bot.services.charging import (
    ApprovalReason,
    Approved,
    RuleCharge,
    RuleSkipped,
    SkipReason,
)
from storage.charges import ChargesRepository
from storage.lines import LinesRepository
from storage.rules import RuleRecord, RulesRepository
from storage.tables import charges, holds, notifications
from tests.unit.charging_world import (
    ALICE,
    World,
    check_invariants,
    usd,
)


async def add_rule(world: World, *, approval: Approval = Approval.AUTO, cap: int = 800,
                   amount: int | None = 500, product_id: str | None = None,
                   trigger: Trigger = Trigger.CALENDAR) -> RuleRecord:
    calendar = {"calendar": CalendarKind.MONTHLY, "calendar_value": 1} \
        if trigger is Trigger.CALENDAR else {}
    extra: dict[str, Any] = {"days_before": 3} if trigger is Trigger.KEEP_ALIVE else {}
    spec = RuleSpec(trigger=trigger, monthly_cap=usd(cap), approval=approval,
                    amount=usd(amount) if amount is not None else None,
                    product_id=product_id, **calendar, **extra)  # type: ignore[arg-type]
    async with world.db.write() as conn:
        return await RulesRepository(conn).add(line_id=world.lines[ALICE], owner_id=ALICE,
                                               spec=spec, now=world.clock.now(),
                                               status=RuleStatus.ACTIVE)


async def test_an_automatic_rule_within_its_cap_charges_at_once(world: World) -> None:
    await world.fund(ALICE, 2000)
    rule = await add_rule(world)

    result = await world.service().create_for_rule(rule, period_key="2026-11")

    assert isinstance(result, RuleCharge) and result.created and result.approval is None
    charge = result.charge
    assert charge.state is ChargeState.SUCCEEDED
    assert (charge.rule_id, charge.cause) == (rule.id, "scheduled")
    assert charge.idempotency_key == f"rule:{rule.id}:2026-11"
    assert await world.carrier.times_paid(charge.reference) == 1
    assert await world.notifications("approval_request") == []
    assert len(await world.notifications("receipt")) == 1
    await check_invariants(world, settled=True)


async def test_a_period_is_charged_once(world: World) -> None:
    await world.fund(ALICE, 2000)
    rule = await add_rule(world)
    service = world.service()
    first = await service.create_for_rule(rule, period_key="2026-11")
    counts = [await world.count(t) for t in (charges, holds, notifications)]

    again = await service.create_for_rule(rule.id, period_key="2026-11")

    assert isinstance(first, RuleCharge) and isinstance(again, RuleCharge)
    assert not again.created and again.charge.id == first.charge.id
    assert [await world.count(t) for t in (charges, holds, notifications)] == counts
    assert len(world.provider.sent) == 1


async def test_a_charge_over_the_cap_asks_and_says_so(world: World) -> None:
    await world.fund(ALICE, 2000)
    rule = await add_rule(world, cap=800, amount=500)
    service = world.service()
    await service.create_for_rule(rule, episode=1)

    second = await service.create_for_rule(rule, episode=2)

    assert isinstance(second, RuleCharge)
    assert second.approval is ApprovalReason.OVER_CAP
    assert second.charge.state is ChargeState.AWAITING_APPROVAL
    assert second.charge.idempotency_key == f"rule:{rule.id}:episode:2"
    [request] = await world.notifications("approval_request")
    params: dict[str, Any] = request["params"]  # type: ignore[assignment]
    assert (params["reason"], params["cap_minor"], params["spent_minor"]) == ("over_cap", 800,
                                                                              500)
    assert len(world.provider.sent) == 1
    # The user may still say yes: it is their money, and they were told.
    approved = await service.approve(ALICE, second.charge.id)
    assert isinstance(approved, Approved)
    assert approved.charge.state is ChargeState.SUCCEEDED
    await check_invariants(world, settled=True)


async def test_the_cap_is_per_month_of_the_users_zone(world: World) -> None:
    await world.fund(ALICE, 5000)
    rule = await add_rule(world, cap=800, amount=500)
    service = world.service()
    world.clock.set(datetime(2026, 11, 30, 16, 59, tzinfo=UTC))  # 23:59 on 30 Nov, local
    first = await service.create_for_rule(rule, period_key="a")
    world.clock.set(datetime(2026, 11, 30, 17, 0, tzinfo=UTC))  # 00:00 on 1 Dec, local

    december = await service.create_for_rule(rule, period_key="b")
    also_december = await service.create_for_rule(rule, period_key="c")

    assert isinstance(first, RuleCharge) and first.approval is None
    assert isinstance(december, RuleCharge) and december.approval is None
    assert isinstance(also_december, RuleCharge)
    assert also_december.approval is ApprovalReason.OVER_CAP


async def test_failed_and_unanswered_charges_do_not_count_against_the_cap(
        world: World) -> None:
    await world.fund(ALICE, 5000)
    world.carrier.knobs = SimulatorKnobs(decline_rate=1.0)
    rule = await add_rule(world, cap=800, amount=500)
    service = world.service()
    failed = await service.create_for_rule(rule, episode=1)
    assert isinstance(failed, RuleCharge) and failed.charge.state is ChargeState.FAILED
    world.carrier.knobs = SimulatorKnobs()

    result = await service.create_for_rule(rule, episode=2)

    assert isinstance(result, RuleCharge) and result.approval is None
    assert result.charge.state is ChargeState.SUCCEEDED
    await check_invariants(world, settled=True)


async def test_an_ask_rule_waits_for_the_user(world: World) -> None:
    await world.fund(ALICE, 2000)
    rule = await add_rule(world, approval=Approval.ASK)

    result = await world.service().create_for_rule(rule, period_key="2026-11")

    assert isinstance(result, RuleCharge)
    assert result.approval is ApprovalReason.ASK
    assert result.charge.state is ChargeState.AWAITING_APPROVAL
    assert result.charge.expires_at is not None
    assert world.provider.sent == []
    assert await world.count(holds) == 0
    [request] = await world.notifications("approval_request")
    assert request["params"]["reason"] == "ask"  # type: ignore[index]


async def test_an_automatic_rule_with_a_short_wallet_asks_instead(world: World) -> None:
    await world.fund(ALICE, 300)
    rule = await add_rule(world)

    result = await world.service().create_for_rule(rule, period_key="2026-11")

    assert isinstance(result, RuleCharge)
    assert result.approval is ApprovalReason.INSUFFICIENT_FUNDS
    assert result.charge.state is ChargeState.AWAITING_APPROVAL
    assert world.provider.sent == []
    [request] = await world.notifications("approval_request")
    assert request["params"]["wallet_minor"] == 300  # type: ignore[index]
    await check_invariants(world)


async def test_keep_alive_buys_the_cheapest_validity_extension(world: World) -> None:
    await world.fund(ALICE, 2000)
    rule = await add_rule(world, trigger=Trigger.KEEP_ALIVE, amount=None)
    result = await world.service().create_for_rule(rule, episode=7)
    assert isinstance(result, RuleCharge)
    assert result.charge.amount == usd(100)  # Cellcard: $1 extends validity
    assert result.charge.cause == "keep_alive"
    assert result.charge.state is ChargeState.SUCCEEDED


async def test_a_plan_rule_buys_the_plan(world: World) -> None:
    await world.fund(ALICE, 2000)
    rule = await add_rule(world, amount=None, product_id="cellcard-data-6144-7d")
    result = await world.service().create_for_rule(rule, period_key="p")
    assert isinstance(result, RuleCharge)
    assert result.charge.product_id == "cellcard-data-6144-7d"
    assert result.charge.amount == usd(100)
    assert result.charge.state is ChargeState.SUCCEEDED


async def test_paused_rules_and_unbound_lines_charge_nothing(world: World) -> None:
    await world.fund(ALICE, 2000)
    rule = await add_rule(world)
    async with world.db.write() as conn:
        await RulesRepository(conn).set_status(rule.id, RuleStatus.PAUSED, world.clock.now())
    service = world.service()
    assert await service.create_for_rule(rule, period_key="x") == RuleSkipped(
        SkipReason.RULE_INACTIVE)
    async with world.db.write() as conn:
        await RulesRepository(conn).set_status(rule.id, RuleStatus.ACTIVE, world.clock.now())
        await LinesRepository(conn, world.cipher).unbind(world.lines[ALICE],
                                                          now=world.clock.now())
    assert await service.create_for_rule(rule, period_key="x") == RuleSkipped(
        SkipReason.LINE_UNAVAILABLE)
    assert await world.count(charges) == 0
    with pytest.raises(ValueError, match="period_key or an episode"):
        await service.create_for_rule(rule, period_key="x", episode=1)


async def test_two_creations_at_once_cannot_both_pass_the_cap(
        world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two runs of one rule at once: the rule lock makes the second read what the first
    wrote, and as the first is still open on the line the second writes nothing (a line
    has one open charge at a time), so together they stay within the cap."""
    await world.fund(ALICE, 5000)
    rule = await add_rule(world, cap=800, amount=500)
    barrier = asyncio.Barrier(2)
    original = ChargesRepository.spent_in_period

    async def meet(self: ChargesRepository, rule_id: int, start: datetime,
                   end: datetime) -> int:
        spent = await original(self, rule_id, start, end)
        # Without the rule lock both creations read "nothing spent" here; with it the
        # second only reads after the first committed, and the wait gives up.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(barrier.wait(), timeout=0.3)
        return spent

    monkeypatch.setattr(ChargesRepository, "spent_in_period", meet)
    service = world.service()

    async with asyncio.timeout(30):
        results = await asyncio.gather(service.create_for_rule(rule, episode=1, submit=False),
                                       service.create_for_rule(rule, episode=2, submit=False))

    [made] = [r for r in results if isinstance(r, RuleCharge)]
    [busy] = [r for r in results if isinstance(r, RuleSkipped)]
    assert made.created and made.approval is None
    assert busy.reason is SkipReason.LINE_BUSY and busy.open_charge == made.charge
    monkeypatch.undo()
    assert await world.count(charges) == 1
    async with world.db.read() as conn:
        spent = await ChargesRepository(conn, world.cipher).spent_in_period(
            rule.id, datetime(2026, 11, 1, tzinfo=UTC), datetime(2026, 12, 1, tzinfo=UTC))
    assert Money(spent, "USD") <= rule.monthly_cap
    await check_invariants(world)
