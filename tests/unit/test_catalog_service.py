"""The catalog service: plans cached per operator for a TTL, looked up without a call, kept
when the provider cannot answer, and forgotten once the provider withdraws them."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from datetime import timedelta

import pytest

from bot.clock import ManualClock
from bot.domain.operators import Operator
from bot.domain.products import Product, ProductKind
from bot.gateways.esim import EsimPackage
from bot.gateways.simulated_catalog import CATALOG
from bot.gateways.simulated_esim import BY_ID, PACKAGES
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


@dataclass
class EsimSource:
    """The eSIM provider's catalog: the simulated one's packages, one without our network."""

    down: bool = False
    calls: int = 0

    async def catalog(self) -> list[EsimPackage]:
        self.calls += 1
        if self.down:
            raise GatewayTimeout("packages timed out")
        foreign = dataclasses.replace(BY_ID["asia-7d-1gb"], id="nowhere-1gb",
                                      networks=("Partner networks",))
        return [*PACKAGES, foreign]


async def test_esim_packages_are_sold_and_looked_up_beside_the_plans(
        clock: ManualClock) -> None:
    esims = EsimSource()
    catalog = CatalogService(Provider(), clock, ttl=timedelta(minutes=10), esims=esims)

    for_sale = await catalog.esims_for_sale()
    assert [p.id for p in for_sale][:2] == ["kh-7d-1gb", "asia-7d-1gb"]  # local first
    assert all(p.kind is ProductKind.ESIM and p.for_esims for p in for_sale)
    assert "nowhere-1gb" not in {p.id for p in for_sale}  # no Cambodian network of ours
    topup = catalog.get("kh-7d-1gb-topup")
    assert topup is not None and topup.kind is ProductKind.DATA
    assert (topup.operator, topup.data_mb, topup.coverage) == (Operator.SMART, 1024, "Cambodia")
    unlimited = catalog.get("kh-10d-unlimited")
    assert unlimited is not None and unlimited.data_mb is None

    esims.down = True
    clock.advance(timedelta(minutes=11))
    await catalog.warm()  # the last packages stay
    assert await catalog.esims_for_sale() == for_sale
    assert esims.calls == 3


async def test_no_esim_packages_ever_read_is_an_error(clock: ManualClock) -> None:
    catalog = CatalogService(Provider(), clock, esims=EsimSource(down=True))
    with pytest.raises(GatewayTimeout):
        await catalog.esims_for_sale()
