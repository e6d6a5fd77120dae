"""A plan whose price moved between the request and the approval: dearer is asked again
(nothing held, never charged silently); cheaper is charged at the lower price."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import timedelta

from bot.clock import ManualClock
from bot.domain.charges import ChargeState
from bot.domain.money import Money
from bot.domain.operators import Operator
from bot.domain.products import Product
from bot.gateways.simulated_catalog import PRODUCTS
from bot.services.catalog import CatalogService
from bot.services.charging import Approved, PriceChanged, Requested
from tests.unit.charging_world import ALICE, World, check_invariants, usd

PLAN = "cellcard-air-500"  # Alice's line is Cellcard


@dataclass
class Plans:
    products: dict[str, Product]

    async def catalog(self, operator: Operator) -> list[Product]:
        return [p for p in self.products.values() if p.operator is operator]

    def reprice(self, product_id: str, cents: int) -> None:
        self.products[product_id] = dataclasses.replace(self.products[product_id],
                                                        price=usd(cents))


async def ask(world: World, catalog: CatalogService) -> int:
    asked = await world.service(catalog=catalog).request_manual(
        ALICE, world.lines[ALICE], None, PLAN, "plan")
    assert isinstance(asked, Requested) and asked.charge.amount == usd(500)
    return asked.charge.id


async def test_a_dearer_plan_is_asked_again_and_nothing_is_held(
        world: World, clock: ManualClock) -> None:
    plans = Plans(dict(PRODUCTS))
    catalog = CatalogService(plans, clock, ttl=timedelta(0))
    await world.fund(ALICE, 2000)
    charge_id = await ask(world, catalog)
    plans.reprice(PLAN, 650)

    result = await world.service(catalog=catalog).approve(ALICE, charge_id)

    assert isinstance(result, PriceChanged)
    assert (result.was, result.charge.amount) == (usd(500), usd(650))
    assert result.request.charge.amount == usd(650)
    charge = await world.charge(charge_id)
    assert charge.state is ChargeState.AWAITING_APPROVAL and charge.amount == usd(650)
    assert await world.available(ALICE) == usd(2000)  # nothing held
    assert world.provider.sent == []

    again = await world.service(catalog=catalog).approve(ALICE, charge_id)
    assert isinstance(again, Approved) and again.charge.state is ChargeState.SUCCEEDED
    assert await world.available(ALICE) == usd(1350)
    await check_invariants(world)


async def test_a_cheaper_plan_is_charged_at_the_lower_price(world: World,
                                                            clock: ManualClock) -> None:
    plans = Plans(dict(PRODUCTS))
    catalog = CatalogService(plans, clock, ttl=timedelta(0))
    await world.fund(ALICE, 2000)
    charge_id = await ask(world, catalog)
    plans.reprice(PLAN, 450)

    result = await world.service(catalog=catalog).approve(ALICE, charge_id)

    assert isinstance(result, Approved)
    assert result.charge.amount == Money(450, "USD")
    assert await world.available(ALICE) == usd(1550)
    await check_invariants(world)
