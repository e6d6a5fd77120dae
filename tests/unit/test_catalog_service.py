"""The catalog service: plans cached per operator for a TTL, looked up without a call, kept
when the provider cannot answer, and forgotten once the provider withdraws them."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta

import pytest

from bot.clock import ManualClock
from bot.domain.operators import Operator
from bot.domain.products import Product
from bot.gateways.simulated_catalog import CATALOG
from bot.gateways.topup import GatewayTimeout
from bot.services.catalog import CatalogService


@dataclass
class Provider:
    plans: dict[Operator, list[Product]] = field(
        default_factory=lambda: {op: list(CATALOG[op]) for op in Operator})
    down: bool = False
    calls: int = 0

    async def catalog(self, operator: Operator) -> list[Product]:
        self.calls += 1
        if self.down:
            raise GatewayTimeout("catalog timed out")
        return list(self.plans[operator])


async def test_plans_are_read_once_per_ttl_and_looked_up_without_a_call(
        clock: ManualClock) -> None:
    provider = Provider()
    catalog = CatalogService(provider, clock, ttl=timedelta(minutes=10))
    some_plan = CATALOG[Operator.SMART][0]

    assert catalog.get(some_plan.id) is None  # nothing read yet
    await catalog.warm()
    await catalog.warm()
    assert provider.calls == len(Operator)
    assert catalog.get(some_plan.id) == some_plan

    clock.advance(timedelta(minutes=11))
    await catalog.for_operator(Operator.SMART)
    assert provider.calls == len(Operator) + 1


async def test_a_provider_that_cannot_answer_leaves_the_last_catalog(
        clock: ManualClock) -> None:
    provider = Provider()
    catalog = CatalogService(provider, clock, ttl=timedelta(minutes=1))
    await catalog.warm()
    provider.down = True
    clock.advance(timedelta(minutes=5))

    await catalog.warm()  # never raises
    assert await catalog.for_operator(Operator.CELLCARD) == list(CATALOG[Operator.CELLCARD])


async def test_with_nothing_ever_read_a_listing_says_the_provider_failed(
        clock: ManualClock) -> None:
    catalog = CatalogService(Provider(down=True), clock)
    with pytest.raises(GatewayTimeout):
        await catalog.for_operator(Operator.SEATEL)


async def test_a_withdrawn_plan_is_no_longer_found(clock: ManualClock) -> None:
    provider = Provider()
    catalog = CatalogService(provider, clock, ttl=timedelta(0))
    withdrawn = provider.plans[Operator.METFONE].pop(0)
    provider.plans[Operator.METFONE].insert(0, withdrawn)
    await catalog.warm()
    assert catalog.get(withdrawn.id) is not None

    provider.plans[Operator.METFONE].remove(withdrawn)
    await catalog.warm()

    assert catalog.get(withdrawn.id) is None
