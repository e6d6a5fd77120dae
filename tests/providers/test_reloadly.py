"""The Reloadly adapter's own rules, over real HTTP against the fake: the token (cached,
renewed once on a 401, its audience the environment's host), the versioned Accept header,
what each refusal means for a charge, money at the boundary, the catalog cache, reports."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from decimal import Decimal

import pytest

from bot.clock import ManualClock
from bot.domain.money import Money
from bot.domain.operators import Operator
from bot.domain.products import ProductKind
from bot.gateways.http import ProviderRefused
from bot.gateways.reloadly import ACCEPT, ReloadlyConfig, ReloadlyGateway
from bot.gateways.topup import (
    DeclineReason,
    DuplicateReference,
    GatewayError,
    TopUpRequest,
    TopUpStatus,
    TryLater,
)
from tests.fakes import reloadly
from tests.fakes.http import Fault
from tests.providers.backends import SMART_NUMBER, no_sleep

SEATEL_NUMBER = "+85518234567"
CELLCARD_NUMBER = "+85512345678"


@pytest.fixture
def fake(clock: ManualClock) -> Iterator[reloadly.FakeReloadly]:
    with reloadly.FakeReloadly(clock=clock.now) as server:
        yield server


def gateway_for(fake: reloadly.FakeReloadly, clock: ManualClock, *, sandbox: bool = True,
                secret: str | None = None) -> ReloadlyGateway:
    return ReloadlyGateway(ReloadlyConfig(
        client_id=fake.client_id, client_secret=secret or fake.client_secret, sandbox=sandbox,
        auth_url=fake.base_url, api_url=fake.base_url), clock, sleep=no_sleep)


@pytest.fixture
async def gateway(fake: reloadly.FakeReloadly,
                  clock: ManualClock) -> AsyncIterator[ReloadlyGateway]:
    adapter = gateway_for(fake, clock)
    yield adapter
    await adapter.aclose()


def smart(reference: str, dollars: int = 5) -> TopUpRequest:
    return TopUpRequest(reference=reference, phone_e164=SMART_NUMBER, operator=Operator.SMART,
                        amount=Money(dollars * 100, "USD"))


async def test_one_token_serves_many_calls_and_every_call_is_versioned(
        gateway: ReloadlyGateway, fake: reloadly.FakeReloadly, clock: ManualClock) -> None:
    for n in range(5):
        assert (await gateway.top_up(smart(f"ref-token-{n}"))).status is TopUpStatus.SUCCEEDED
        await gateway.balance()
        clock.advance(timedelta(minutes=3))  # past the same-number wait

    assert fake.issued_tokens == 1
    api_calls = [r for r in fake.requests if r.path != "/oauth/token"]
    assert api_calls and all(r.headers["accept"] == ACCEPT for r in api_calls)
    [token_request] = fake.requests_to("/oauth/token")
    assert b'"audience":"https://topups-sandbox.reloadly.com"' in token_request.body.replace(
        b" ", b"")


async def test_the_live_audience_is_asked_for_even_through_an_overridden_url(
        clock: ManualClock) -> None:
    with reloadly.FakeReloadly(clock=clock.now, sandbox=False) as live:
        adapter = gateway_for(live, clock, sandbox=False)
        try:
            assert (await adapter.balance()).currency == "USD"
        finally:
            await adapter.aclose()
    # and the sandbox audience is refused by a live account
    with reloadly.FakeReloadly(clock=clock.now, sandbox=False) as live:
        adapter = gateway_for(live, clock, sandbox=True)
        try:
            with pytest.raises(ProviderRefused):
                await adapter.balance()
        finally:
            await adapter.aclose()


async def test_an_expired_token_is_renewed_once_and_the_call_made_again(
        gateway: ReloadlyGateway, fake: reloadly.FakeReloadly, clock: ManualClock) -> None:
    await gateway.balance()
    fake.expire_tokens()

    assert (await gateway.top_up(smart("ref-after-expiry"))).status is TopUpStatus.SUCCEEDED
    assert fake.issued_tokens == 2
    assert sum(1 for t in fake.transactions() if t.custom_identifier == "ref-after-expiry") == 1


async def test_a_token_is_fetched_again_when_its_lifetime_runs_out(
        gateway: ReloadlyGateway, fake: reloadly.FakeReloadly, clock: ManualClock) -> None:
    await gateway.balance()
    clock.advance(timedelta(days=61))  # the fake's tokens live 60 days
    await gateway.balance()

    assert fake.issued_tokens == 2
    # no 401 was needed: the adapter renewed it before use
    assert len(fake.requests_to("/accounts/balance")) == 2


async def test_wrong_credentials_are_named(fake: reloadly.FakeReloadly,
                                           clock: ManualClock) -> None:
    adapter = gateway_for(fake, clock, secret="wrong")
    try:
        with pytest.raises(ProviderRefused, match="RELOADLY_CLIENT_SECRET"):
            await adapter.catalog(Operator.SMART)
    finally:
        await adapter.aclose()


async def test_a_reused_reference_means_look_it_up(gateway: ReloadlyGateway) -> None:
    await gateway.top_up(smart("ref-dup"))
    with pytest.raises(DuplicateReference):
        await gateway.top_up(smart("ref-dup"))
    found = await gateway.lookup("ref-dup")
    assert found is not None and found.status is TopUpStatus.SUCCEEDED


async def test_the_same_number_again_within_two_minutes_waits_and_goes_again(
        gateway: ReloadlyGateway, fake: reloadly.FakeReloadly, clock: ManualClock) -> None:
    await gateway.top_up(smart("ref-first"))

    with pytest.raises(TryLater) as waited:
        await gateway.top_up(smart("ref-second"))
    assert waited.value.retry_after >= reloadly.RECHARGE_WAIT
    assert await gateway.lookup("ref-second") is None  # nothing was done

    clock.advance(waited.value.retry_after)
    assert (await gateway.top_up(smart("ref-second"))).status is TopUpStatus.SUCCEEDED


@pytest.mark.parametrize(("arrange", "reason"), [
    (lambda fake: fake.set_operator_down(reloadly.SMART_ID), DeclineReason.OPERATOR_UNAVAILABLE),
    (lambda fake: fake.set_balance(Decimal("1.00")), DeclineReason.PROVIDER_BALANCE),
])
async def test_declines_are_failed_results_with_a_reason_and_take_nothing(
        gateway: ReloadlyGateway, fake: reloadly.FakeReloadly, arrange: object,
        reason: DeclineReason) -> None:
    before = fake.balance
    arrange(fake)  # type: ignore[operator]
    balance = fake.balance

    result = await gateway.top_up(smart("ref-declined"))

    assert (result.status, result.failure_reason) == (TopUpStatus.FAILED, reason.value)
    assert fake.balance == balance <= before
    assert fake.transaction_by_reference("ref-declined") is None


async def test_a_number_of_another_operator_is_an_invalid_number(
        gateway: ReloadlyGateway) -> None:
    result = await gateway.top_up(TopUpRequest(
        reference="ref-wrong-op", phone_e164=CELLCARD_NUMBER, operator=Operator.SMART,
        amount=Money(500, "USD")))
    assert (result.status, result.failure_reason) == (
        TopUpStatus.FAILED, DeclineReason.INVALID_NUMBER.value)


async def test_an_amount_a_fixed_operator_does_not_sell_is_not_sent(
        gateway: ReloadlyGateway, fake: reloadly.FakeReloadly) -> None:
    result = await gateway.top_up(smart("ref-odd", dollars=3))  # Smart sells 1, 2, 5, 10, 20

    assert result.failure_reason == DeclineReason.AMOUNT_NOT_OFFERED.value
    assert fake.requests_to("/topups") == []


async def test_processing_is_pending_until_the_status_settles(
        gateway: ReloadlyGateway, fake: reloadly.FakeReloadly, clock: ManualClock) -> None:
    fake.process_next(settle_to="SUCCESSFUL", after=timedelta(minutes=3))
    assert (await gateway.top_up(smart("ref-slow"))).status is TopUpStatus.PENDING
    assert (await gateway.lookup("ref-slow")).status is TopUpStatus.PENDING  # type: ignore[union-attr]

    clock.advance(timedelta(minutes=3))
    settled = await gateway.lookup("ref-slow")

    assert settled is not None and settled.status is TopUpStatus.SUCCEEDED


async def test_processing_that_fails_is_a_failed_result(
        gateway: ReloadlyGateway, fake: reloadly.FakeReloadly, clock: ManualClock) -> None:
    before = fake.balance
    fake.process_next(settle_to="FAILED", after=timedelta(minutes=1))
    await gateway.top_up(smart("ref-fails"))
    clock.advance(timedelta(minutes=1))

    failed = await gateway.lookup("ref-fails")

    assert failed is not None and failed.status is TopUpStatus.FAILED
    assert fake.balance == before  # Reloadly gave the cost back


async def test_a_server_error_on_the_top_up_is_an_unknown_outcome(
        gateway: ReloadlyGateway, fake: reloadly.FakeReloadly) -> None:
    fake.faults.add(Fault.http_status(500), path="/topups", method="POST")
    with pytest.raises(GatewayError):
        await gateway.top_up(smart("ref-500"))
    assert await gateway.lookup("ref-500") is None  # a 500 before processing: never made


async def test_a_passing_failure_of_a_read_is_retried(gateway: ReloadlyGateway,
                                                      fake: reloadly.FakeReloadly) -> None:
    await gateway.top_up(smart("ref-read"))
    fake.faults.add(Fault.http_status(503), path="/topups/reports/transactions", times=2)

    assert (await gateway.lookup("ref-read")) is not None
    assert len(fake.requests_to("/topups/reports/transactions")) == 3


async def test_the_line_receives_riel_at_the_operators_rate_and_the_discount_is_kept(
        gateway: ReloadlyGateway) -> None:
    result = await gateway.top_up(TopUpRequest(
        reference="ref-fx", phone_e164=SEATEL_NUMBER, operator=Operator.SEATEL,
        amount=Money(500, "USD")))

    assert result.amount == Money(500, "USD")
    assert result.delivered == Money.from_decimal(Decimal(5 * 4100), "KHR")
    assert result.provider_discount == Money(25, "USD")  # Seatel's 5 %
    assert result.provider_cost == Money(475, "USD")


async def test_the_catalog_has_plans_and_bundles_and_is_cached(
        gateway: ReloadlyGateway, fake: reloadly.FakeReloadly, clock: ManualClock) -> None:
    products = await gateway.catalog(Operator.SMART)
    await gateway.catalog(Operator.CELLCARD)

    airtime = [p for p in products if p.kind is ProductKind.AIRTIME]
    data = [p for p in products if p.kind is ProductKind.DATA]
    assert sorted(p.price.minor for p in airtime) == [100, 200, 500, 1000, 2000]
    twenty_gb = next(p for p in data if p.price == Money(300, "USD"))
    assert (twenty_gb.data_mb, twenty_gb.validity_days) == (20 * 1024, 30)
    assert len(fake.requests_to("/operators/countries/KH")) == 1

    clock.advance(timedelta(hours=1, seconds=1))
    await gateway.catalog(Operator.SMART)
    assert len(fake.requests_to("/operators/countries/KH")) == 2


async def test_a_bundle_is_bought_by_its_product_id(gateway: ReloadlyGateway,
                                                    fake: reloadly.FakeReloadly) -> None:
    bundle = next(p for p in await gateway.catalog(Operator.SMART)
                  if p.kind is ProductKind.DATA)
    result = await gateway.top_up(TopUpRequest(
        reference="ref-bundle", phone_e164=SMART_NUMBER, operator=Operator.SMART,
        product_id=bundle.id))

    assert result.status is TopUpStatus.SUCCEEDED
    record = fake.transaction_by_reference("ref-bundle")
    assert record is not None and record.operator_id == reloadly.SMART_DATA_ID


async def test_the_operator_of_a_number_is_detected(gateway: ReloadlyGateway) -> None:
    assert await gateway.detect_operator(SEATEL_NUMBER) is Operator.SEATEL
    assert await gateway.detect_operator("+85529999999") is None


async def test_the_days_transactions_are_listed_from_the_reports(
        gateway: ReloadlyGateway, clock: ManualClock) -> None:
    start = clock.now()
    await gateway.top_up(smart("ref-day-1"))
    clock.advance(timedelta(minutes=3))
    await gateway.top_up(smart("ref-day-2", dollars=2))
    clock.advance(timedelta(days=1))
    await gateway.top_up(smart("ref-next-day"))

    listed = await gateway.transactions(start, start + timedelta(days=1))

    assert sorted(t.reference for t in listed) == ["ref-day-1", "ref-day-2"]
    assert {t.amount for t in listed} == {Money(500, "USD"), Money(200, "USD")}


async def test_the_balance_is_read_in_minor_units(gateway: ReloadlyGateway,
                                                  fake: reloadly.FakeReloadly) -> None:
    fake.set_balance(Decimal("49.99"))
    assert await gateway.balance() == Money(4999, "USD")
