"""The money issue's crash tests again, with each real adapter against its fake: the
process dies at every point a crash matters (funds held; marked submitted; the provider
applied the top-up and its answer died with us; half-way through settling; settled), a new
process reconciles, and the charge ends succeeded with exactly one top-up at the provider,
one receipt and a ledger that balances. Also: the same number twice within Reloadly's two
minutes waits and goes again, and an operator that is down fails the charge and gives the
money back."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from zoneinfo import ZoneInfo

import pytest

from bot.clock import ManualClock
from bot.domain.charges import ChargeState, DeclineReason
from bot.domain.money import Money
from bot.domain.operators import Operator
from bot.domain.products import ProductKind
from bot.services.catalog import CatalogService
from bot.services.charging import Invalid, Receipt, Requested
from handlers.approvals import render_receipt
from handlers.common import Ui
from storage.crypto import FieldCipher
from storage.db import Database
from tests.providers.backends import Backend, dingconnect_fake, reloadly_fake
from tests.unit.charging_world import (
    ALICE,
    Crash,
    World,
    check_invariants,
    crash_at,
    drive_to_completion,
    make_world,
    usd,
)

CRASH_POINTS = {
    "approved": ChargeState.APPROVED,
    "submitted": ChargeState.SUBMITTED,
    "accepted": ChargeState.SUBMITTED,
    "settling": ChargeState.SUBMITTED,
    "settled": ChargeState.SUCCEEDED,
}


@pytest.fixture(params=["reloadly", "dingconnect"])
async def backend(request: pytest.FixtureRequest,
                  clock: ManualClock) -> AsyncIterator[Backend]:
    opened = reloadly_fake(clock) if request.param == "reloadly" else dingconnect_fake(clock)
    async with opened as chosen:
        yield chosen


@pytest.fixture
async def world(db: Database, cipher: FieldCipher, clock: ManualClock,
                backend: Backend) -> World:
    return await make_world(db, cipher, clock, provider=backend.provider,
                            times_paid=backend.times_paid)


async def ask(world: World, nonce: str = "n", line_id: int | None = None,
              cents: int = 500) -> int:
    result = await world.service().request_manual(
        ALICE, world.lines[ALICE] if line_id is None else line_id, usd(cents), None, nonce)
    assert isinstance(result, Requested)
    return result.charge.id


@pytest.mark.parametrize("point", list(CRASH_POINTS))
async def test_a_crash_then_a_restart_settles_the_charge_exactly_once(
        world: World, point: str) -> None:
    await world.fund(ALICE, 2000)
    charge_id = await ask(world)
    if point == "accepted":
        world.provider.crash_after_apply = True
        service = world.service()
    else:
        service = world.service(checkpoint=crash_at(point))
    with pytest.raises(Crash):
        await service.approve(ALICE, charge_id)
    assert (await world.charge(charge_id)).state is CRASH_POINTS[point]
    sent_before = len(world.provider.sent)

    restarted = world.service()
    report = await restarted.reconcile_on_start()
    if point in ("accepted", "settling"):
        assert report.settled == 1  # found by its reference, not sent again
        assert len(world.provider.sent) == sent_before
    await drive_to_completion(world, restarted)

    charge = await world.charge(charge_id)
    assert charge.state is ChargeState.SUCCEEDED
    assert await world.paid(charge.reference) == 1
    assert [r["dedupe_key"] for r in await world.notifications("receipt")] == [
        f"receipt:{charge_id}"]
    assert await world.available(ALICE) == usd(1500)
    await check_invariants(world, settled=True)


async def test_an_operator_that_is_down_fails_the_charge_and_returns_the_money(
        world: World, backend: Backend) -> None:
    await world.fund(ALICE, 1000)
    charge_id = await ask(world)
    backend.operator_down(True)  # Alice's line is Cellcard: down only for Smart ...
    world.lines[ALICE] = await world.add_line(ALICE, "010234567")  # ... so a Smart line
    smart_charge = await ask(world, "smart")

    approved = await world.service().approve(ALICE, smart_charge)

    charge = await world.charge(smart_charge)
    assert charge.state is ChargeState.FAILED, approved
    assert charge.failure_reason == DeclineReason.OPERATOR_UNAVAILABLE.value
    assert await world.available(ALICE) == usd(1000)
    assert (await world.charge(charge_id)).state is ChargeState.AWAITING_APPROVAL
    [failed] = [n for n in await world.notifications("charge_failed")
                if n["params"]["audience"] == "user"]  # type: ignore[index]
    assert failed["params"]["reason"] == DeclineReason.OPERATOR_UNAVAILABLE.value  # type: ignore[index]
    await check_invariants(world)


@pytest.mark.parametrize("backend", ["reloadly"], indirect=True)  # only Reloadly refuses it
async def test_the_same_number_again_within_two_minutes_waits_and_goes_again(
        world: World, backend: Backend, clock: ManualClock) -> None:
    await world.fund(ALICE, 2000)
    service = world.service()
    first = await ask(world, "first")
    await service.approve(ALICE, first)
    assert (await world.charge(first)).state is ChargeState.SUCCEEDED

    second = await ask(world, "second")
    await service.approve(ALICE, second)

    waiting = await world.charge(second)
    assert waiting.state is ChargeState.SUBMITTED  # not failed: it waits
    assert waiting.failure_reason == "phone_recently_recharged"
    assert waiting.attempts == 0  # the refusal used up no attempt
    assert waiting.next_attempt_at is not None
    assert waiting.next_attempt_at >= clock.now() + timedelta(minutes=2)
    assert await service.process_due() == 0  # not due yet: nothing is sent

    clock.advance(timedelta(minutes=3))
    await service.process_due()

    assert (await world.charge(second)).state is ChargeState.SUCCEEDED
    assert await world.paid(waiting.reference) == 1
    await check_invariants(world, settled=True)


async def test_a_charge_keeps_what_the_line_received_and_what_the_provider_took(
        world: World, backend: Backend) -> None:
    await world.fund(ALICE, 2000)
    seatel = await world.add_line(ALICE, "018234567")  # Seatel lines receive riel
    # $3: no fixed product at Ding, so its range product, which pays out riel, as Reloadly's
    charge_id = await ask(world, "riel", line_id=seatel, cents=300)

    await world.service().approve(ALICE, charge_id)

    charge = await world.charge(charge_id)
    assert charge.state is ChargeState.SUCCEEDED and charge.provider_tx_id
    assert charge.delivered == Money.from_decimal(3 * 4100, "KHR")
    assert charge.provider_money is not None and charge.provider_money.currency == "USD"
    assert charge.provider_money.cost_minor is not None
    assert 0 < charge.provider_money.cost_minor < 300  # the provider's discount or commission
    [receipt] = await world.notifications("receipt")
    params = receipt["params"]
    assert isinstance(params, dict)
    assert (params["delivered_minor"], params["delivered_currency"]) == (
        charge.delivered.minor, "KHR")
    assert charge.provider_tx_id.endswith(params["provider_tx_shown"].removeprefix("…"))
    text, _ = render_receipt(Ui(language="en", _=lambda m: m, locale="en",
                                zone=ZoneInfo("Asia/Phnom_Penh"), now=world.clock.now()),
                             Receipt.from_params(params))
    assert "The line received: 12,300៛" in text
    assert f"Carrier's transaction: {params['provider_tx_shown']}" in text


async def test_a_plan_from_the_providers_catalog_is_bought_at_its_price(
        world: World, backend: Backend, clock: ManualClock) -> None:
    catalog = CatalogService(backend.provider, clock)
    service = world.service(catalog=catalog)
    await world.fund(ALICE, 5000)
    smart_line = await world.add_line(ALICE, "010234567")
    [plan, *_] = [p for p in await catalog.for_operator(Operator.SMART)
                  if p.kind is ProductKind.DATA]

    asked = await service.request_manual(ALICE, smart_line, None, plan.id, "plan")
    assert isinstance(asked, Requested) and asked.charge.amount == plan.price
    await service.approve(ALICE, asked.charge.id)

    charge = await world.charge(asked.charge.id)
    assert charge.state is ChargeState.SUCCEEDED and charge.product_id == plan.id
    assert await world.paid(charge.reference) == 1
    assert await world.available(ALICE) == usd(5000) - plan.price
    [receipt] = await world.notifications("receipt")
    assert receipt["params"]["product_name"] == plan.name  # type: ignore[index]
    # A plan of another provider's catalog (the simulator's) is not one of these.
    assert isinstance(await service.request_manual(ALICE, smart_line, None,
                                                   "smart-air-500", "x"), Invalid)
