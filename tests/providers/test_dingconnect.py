"""The DingConnect adapter's own rules, over real HTTP against the fake: the api_key header,
batch products that answer Submitted, ProviderTimedOut, a dry run, money at the boundary
(fees, commission, riel), the catalog cache and the listing of a day's transfers."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from decimal import Decimal

import pytest

from bot.clock import ManualClock
from bot.domain.money import Money
from bot.domain.operators import Operator
from bot.domain.products import ProductKind
from bot.gateways.dingconnect import DingConfig, DingConnectGateway
from bot.gateways.http import ProviderRefused
from bot.gateways.topup import (
    DeclineReason,
    DuplicateReference,
    GatewayError,
    TopUpRequest,
    TopUpStatus,
)
from tests.fakes import dingconnect as ding
from tests.fakes.http import Fault
from tests.providers.backends import SMART_NUMBER, no_sleep

METFONE_NUMBER = "+85597765432"
SEATEL_NUMBER = "+85518123456"


@pytest.fixture
def fake(clock: ManualClock) -> Iterator[ding.FakeDingConnect]:
    with ding.FakeDingConnect(clock=clock.now) as server:
        yield server


def gateway_for(fake: ding.FakeDingConnect, clock: ManualClock,
                key: str = ding.DEFAULT_API_KEY) -> DingConnectGateway:
    return DingConnectGateway(DingConfig(api_key=key, api_url=fake.base_url), clock,
                              sleep=no_sleep)


@pytest.fixture
async def gateway(fake: ding.FakeDingConnect,
                  clock: ManualClock) -> AsyncIterator[DingConnectGateway]:
    adapter = gateway_for(fake, clock)
    yield adapter
    await adapter.aclose()


def smart(reference: str, cents: int = 500) -> TopUpRequest:
    return TopUpRequest(reference=reference, phone_e164=SMART_NUMBER, operator=Operator.SMART,
                        amount=Money(cents, "USD"))


async def test_every_call_carries_the_api_key(gateway: DingConnectGateway,
                                              fake: ding.FakeDingConnect) -> None:
    await gateway.top_up(smart("ref-key"))
    await gateway.balance()
    assert fake.requests and all(r.headers.get("api_key") == ding.DEFAULT_API_KEY
                                 for r in fake.requests)


async def test_a_wrong_key_is_named(fake: ding.FakeDingConnect, clock: ManualClock) -> None:
    adapter = gateway_for(fake, clock, key="wrong")
    try:
        with pytest.raises(ProviderRefused, match="DINGCONNECT_API_KEY"):
            await adapter.balance()
    finally:
        await adapter.aclose()


async def test_our_reference_is_the_distributor_ref_and_a_repeat_is_looked_up(
        gateway: DingConnectGateway, fake: ding.FakeDingConnect) -> None:
    first = await gateway.top_up(smart("ref-ding-1"))
    with pytest.raises(DuplicateReference):
        await gateway.top_up(smart("ref-ding-1"))

    record = fake.transfer_by_ref("ref-ding-1")
    assert record is not None and record.transfer_ref == first.provider_tx_id
    assert len(fake.transfers()) == 1


async def test_an_amount_picks_the_fixed_product_else_the_range(
        gateway: DingConnectGateway, fake: ding.FakeDingConnect) -> None:
    await gateway.top_up(smart("ref-fixed", 500))
    await gateway.top_up(smart("ref-range", 350))

    assert fake.transfer_by_ref("ref-fixed").sku_code == ding.SKUS[ding.SMART].fixed[  # type: ignore[union-attr]
        Decimal("5.00")]
    assert fake.transfer_by_ref("ref-range").sku_code == ding.SKUS[ding.SMART].range  # type: ignore[union-attr]


async def test_a_batch_product_is_pending_until_it_settles(
        gateway: DingConnectGateway, clock: ManualClock) -> None:
    bundle = next(p for p in await gateway.catalog(Operator.METFONE)
                  if p.kind is ProductKind.DATA)
    submitted = await gateway.top_up(TopUpRequest(
        reference="ref-batch", phone_e164=METFONE_NUMBER, operator=Operator.METFONE,
        product_id=bundle.id))
    assert submitted.status is TopUpStatus.PENDING

    clock.advance(ding.BATCH_SETTLE_AFTER)
    settled = await gateway.lookup("ref-batch")

    assert settled is not None and settled.status is TopUpStatus.SUCCEEDED
    assert (bundle.data_mb, bundle.validity_days) == (20 * 1024, 30)


async def test_provider_timed_out_is_failed_and_charges_nothing(
        gateway: DingConnectGateway, fake: ding.FakeDingConnect) -> None:
    before = fake.balance
    fake.provider_timeout_next()

    result = await gateway.top_up(smart("ref-timed-out"))

    assert (result.status, result.failure_reason) == (
        TopUpStatus.FAILED, DeclineReason.OPERATOR_TIMED_OUT.value)
    assert fake.balance == before


@pytest.mark.parametrize(("arrange", "reason"), [
    (lambda fake: fake.set_provider_down(ding.SMART), DeclineReason.OPERATOR_UNAVAILABLE),
    (lambda fake: fake.set_balance(Decimal("1.00")), DeclineReason.PROVIDER_BALANCE),
])
async def test_declines_are_failed_results_with_a_reason(
        gateway: DingConnectGateway, fake: ding.FakeDingConnect, arrange: object,
        reason: DeclineReason) -> None:
    arrange(fake)  # type: ignore[operator]
    balance = fake.balance

    result = await gateway.top_up(smart("ref-no"))

    assert (result.status, result.failure_reason) == (TopUpStatus.FAILED, reason.value)
    assert fake.balance == balance
    assert fake.transfer_by_ref("ref-no") is None


async def test_a_number_the_provider_does_not_serve_is_an_invalid_number(
        gateway: DingConnectGateway) -> None:
    result = await gateway.top_up(TopUpRequest(
        reference="ref-not-smart", phone_e164=METFONE_NUMBER, operator=Operator.SMART,
        amount=Money(500, "USD")))
    assert result.failure_reason == DeclineReason.INVALID_NUMBER.value


async def test_a_dry_run_charges_nothing_and_leaves_the_reference_free(
        gateway: DingConnectGateway, fake: ding.FakeDingConnect) -> None:
    before = fake.balance
    checked = await gateway.validate(smart("ref-dry"))

    assert checked.status is TopUpStatus.SUCCEEDED
    assert fake.balance == before and fake.transfers() == []
    assert (await gateway.top_up(smart("ref-dry"))).status is TopUpStatus.SUCCEEDED


async def test_money_at_the_boundary_fees_commission_and_riel(
        gateway: DingConnectGateway) -> None:
    fixed = await gateway.top_up(smart("ref-commission"))
    assert fixed.amount == Money(500, "USD")
    assert fixed.provider_discount == Money(15, "USD")  # 3 % commission on the fixed product
    assert fixed.provider_cost == Money(485, "USD")

    riel = await gateway.top_up(TopUpRequest(
        reference="ref-riel", phone_e164=SEATEL_NUMBER, operator=Operator.SEATEL,
        amount=Money(300, "USD")))
    assert riel.delivered is not None and riel.delivered.currency == "KHR"
    assert riel.delivered == Money.from_decimal(Decimal(3) * ding.KHR_PER_USD, "KHR")


async def test_an_unavailable_answer_without_a_transfer_is_an_unknown_outcome(
        gateway: DingConnectGateway, fake: ding.FakeDingConnect) -> None:
    fake.faults.add(Fault.http_status(502, {"ResultCode": 3, "ErrorCodes": []}),
                    path="/api/V1/SendTransfer")
    with pytest.raises(GatewayError):
        await gateway.top_up(smart("ref-502"))
    assert await gateway.lookup("ref-502") is None


async def test_the_catalog_is_read_once_per_ttl(gateway: DingConnectGateway,
                                                fake: ding.FakeDingConnect,
                                                clock: ManualClock) -> None:
    smart_products = await gateway.catalog(Operator.SMART)
    await gateway.catalog(Operator.SEATEL)

    assert sorted(p.price.minor for p in smart_products
                  if p.kind is ProductKind.AIRTIME) == [100, 200, 500, 1000]
    assert len(fake.requests_to("/api/V1/GetProducts")) == 1
    clock.advance(timedelta(hours=2))
    await gateway.catalog(Operator.SMART)
    assert len(fake.requests_to("/api/V1/GetProducts")) == 2


async def test_the_operator_of_a_number_is_detected(gateway: DingConnectGateway) -> None:
    assert await gateway.detect_operator(SEATEL_NUMBER) is Operator.SEATEL
    assert await gateway.detect_operator("+85529999999") is None


async def test_the_days_transfers_are_listed(gateway: DingConnectGateway,
                                             clock: ManualClock) -> None:
    start = clock.now()
    for n in range(3):
        await gateway.top_up(smart(f"ref-day-{n}", 100 * (n + 1)))
        clock.advance(timedelta(minutes=10))
    clock.advance(timedelta(days=1))
    await gateway.top_up(smart("ref-tomorrow"))

    listed = await gateway.transactions(start, start + timedelta(days=1))

    assert sorted(t.reference for t in listed) == ["ref-day-0", "ref-day-1", "ref-day-2"]


async def test_the_balance_is_read_in_minor_units(gateway: DingConnectGateway,
                                                  fake: ding.FakeDingConnect) -> None:
    fake.set_balance(Decimal("12.34"))
    assert await gateway.balance() == Money(1234, "USD")
