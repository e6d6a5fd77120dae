"""One contract for every eSIM provider (the simulator, and Airalo's adapter against its
fake): the catalog, an order and its install code, finding an order whose answer was lost
(without ordering again), refusals, usage through an eSIM's life, top-ups, the credit."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest

from bot.clock import ManualClock
from bot.domain.charges import DeclineReason
from bot.domain.money import Money
from bot.gateways.esim import EsimNotFound, EsimRefused, EsimStatus, PackageKind
from bot.gateways.esim_charges import EsimCharges
from bot.gateways.topup import GatewayTimeout, TopUpStatus
from storage.crypto import FieldCipher
from tests.providers.esim_backends import NAMES, EsimBackend, esim_backend


@pytest.fixture(params=NAMES)
async def backend(request: pytest.FixtureRequest, tmp_path: Path, cipher: FieldCipher,
                  clock: ManualClock) -> AsyncIterator[EsimBackend]:
    async with esim_backend(request.param, tmp_path, cipher, clock) as chosen:
        yield chosen


async def test_the_catalog_sells_cambodian_esims(backend: EsimBackend) -> None:
    packages = await backend.provider.packages()
    assert packages and all("KH" in p.countries and p.kind is PackageKind.SIM
                            for p in packages)
    assert [p.price.minor for p in packages] == sorted(p.price.minor for p in packages)
    assert backend.one_gb in {p.id for p in packages}
    assert all(p.net_price <= p.price for p in packages)


async def test_an_order_gives_an_install_code_found_again_by_reference(
        backend: EsimBackend) -> None:
    order = await backend.provider.order(backend.one_gb, "ref-contract-1")
    [code] = order.sims
    assert order.iccid == code.iccid and order.kind is PackageKind.SIM
    assert code.activation_code == f"LPA:1${code.smdp_address}${code.matching_id}"
    assert await backend.provider.install_code(code.iccid) == code
    found = await backend.provider.find_order("ref-contract-1")
    assert found is not None and found.order_id == order.order_id and found.sims == (code,)
    assert await backend.provider.find_order("ref-contract-2") is None


async def test_a_lost_answer_is_found_without_ordering_twice(backend: EsimBackend) -> None:
    backend.lose_next_answer()
    with pytest.raises(GatewayTimeout):
        await backend.provider.order(backend.one_gb, "ref-lost")
    found = await backend.provider.find_order("ref-lost")
    assert found is not None and found.sims
    assert await backend.orders_under("ref-lost") == 1


async def test_a_sold_out_package_is_refused(backend: EsimBackend) -> None:
    backend.sell_out(backend.one_gb)
    with pytest.raises(EsimRefused) as refused:
        await backend.provider.order(backend.one_gb, "ref-sold-out")
    assert refused.value.reason is DeclineReason.PRODUCT_UNAVAILABLE
    assert await backend.provider.find_order("ref-sold-out") is None


async def test_usage_through_an_esims_life(backend: EsimBackend, clock: ManualClock) -> None:
    order = await backend.provider.order(backend.one_gb, "ref-life")
    assert order.iccid is not None
    fresh = await backend.provider.usage(order.iccid)
    assert (fresh.status, fresh.remaining_mb, fresh.expires_at) == (
        EsimStatus.NOT_INSTALLED, 1024, None)

    await backend.install(order.iccid)
    await backend.use_data(order.iccid, 300)
    used = await backend.provider.usage(order.iccid)
    assert used.status is EsimStatus.ACTIVE
    assert used.remaining_mb is not None and used.remaining_mb <= 724
    assert used.expires_at is not None
    assert timedelta(days=6) < used.expires_at - clock.now() <= timedelta(days=7)

    topups = await backend.provider.topup_packages(order.iccid)
    assert backend.one_gb_topup in {p.id for p in topups}
    topup = await backend.provider.top_up(order.iccid, backend.one_gb_topup, "ref-topup")
    assert (topup.kind, topup.iccid) == (PackageKind.TOPUP, order.iccid)
    after = await backend.provider.usage(order.iccid)
    assert after.total_mb == 2048 and after.expires_at == used.expires_at + timedelta(days=7)
    found = await backend.provider.find_order("ref-topup")
    assert found is not None and found.kind is PackageKind.TOPUP

    clock.advance(timedelta(days=15))
    assert (await backend.provider.usage(order.iccid)).status is EsimStatus.EXPIRED
    assert await backend.provider.topup_packages(order.iccid) == []


async def test_an_unknown_esim_is_not_found(backend: EsimBackend) -> None:
    with pytest.raises(EsimNotFound):
        await backend.provider.usage("8985501000000000000")


async def test_the_credit_pays_the_net_price(backend: EsimBackend) -> None:
    before = await backend.provider.balance()
    order = await backend.provider.order(backend.one_gb, "ref-credit")
    assert order.net_price is not None
    assert await backend.provider.balance() == before - order.net_price


async def test_orders_of_a_period_are_listed(backend: EsimBackend, clock: ManualClock) -> None:
    first = await backend.provider.order(backend.one_gb, "ref-period-1")
    clock.advance(timedelta(days=1))
    second = await backend.provider.order(backend.one_gb, "ref-period-2")
    assert second.iccid is not None
    topup = await backend.provider.top_up(second.iccid, backend.one_gb_topup, "ref-period-3")

    day_two = await backend.provider.orders_between(second.at.replace(hour=0, minute=0,
                                                                      second=0),
                                                    clock.now() + timedelta(seconds=1))
    assert [(o.reference, o.kind) for o in day_two] == [
        ("ref-period-2", PackageKind.SIM), ("ref-period-3", PackageKind.TOPUP)]
    assert {o.order_id for o in day_two} == {second.order_id, topup.order_id}
    assert first.order_id not in {o.order_id for o in day_two}


async def test_the_catalog_holds_the_top_ups_too(backend: EsimBackend) -> None:
    listed = {p.id: p for p in await backend.provider.catalog()}
    assert listed[backend.one_gb_topup].kind is PackageKind.TOPUP
    assert listed[backend.one_gb].as_product() is not None


async def test_charges_on_esim_lines_answer_as_top_ups(backend: EsimBackend,
                                                       clock: ManualClock) -> None:
    charges = EsimCharges(backend.provider, clock)
    price = Money(500, "USD")
    bought = await charges.charge(reference="ref-charge-1", package_id=backend.one_gb,
                                  iccid=None, price=price)
    assert (bought.status, bought.amount, bought.reference) == (
        TopUpStatus.SUCCEEDED, price, "ref-charge-1")
    assert bought.esim_iccid is not None and bought.provider_tx_id
    assert bought.provider_cost is not None and bought.provider_cost < price
    found = await charges.lookup("ref-charge-1")
    # Airalo's order list shows no net price: what we paid is known from the order's answer.
    assert found is not None and replace(found, provider_cost=None) == replace(
        bought, provider_cost=None)
    assert await charges.lookup("ref-charge-never") is None

    topped = await charges.charge(reference="ref-charge-2", package_id=backend.one_gb_topup,
                                  iccid=bought.esim_iccid, price=price)
    assert topped.status is TopUpStatus.SUCCEEDED and topped.esim_iccid == bought.esim_iccid

    backend.sell_out(backend.one_gb)
    refused = await charges.charge(reference="ref-charge-3", package_id=backend.one_gb,
                                   iccid=None, price=price)
    assert (refused.status, refused.failure_reason) == (
        TopUpStatus.FAILED, DeclineReason.PRODUCT_UNAVAILABLE.value)
    assert await charges.lookup("ref-charge-3") is None

    backend.lose_next_answer()
    with pytest.raises(GatewayTimeout):
        await charges.charge(reference="ref-charge-4", package_id=backend.one_gb_topup,
                             iccid=bought.esim_iccid, price=price)
    found = await charges.lookup("ref-charge-4")
    assert found is not None and found.status is TopUpStatus.SUCCEEDED
