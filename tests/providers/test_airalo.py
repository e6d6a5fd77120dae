"""The Airalo adapter over real HTTP against the fake Partner API: the token, the Cambodian
catalog, orders that are not idempotent (and are found by our reference, exactly), install
codes, usage within the documented rate limits, top-ups, refusals and faults."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from decimal import Decimal

import pytest

import bot.gateways.airalo as airalo_module
from bot.clock import ManualClock
from bot.domain.charges import DeclineReason
from bot.domain.money import Money
from bot.gateways.airalo import AiraloConfig, AiraloGateway
from bot.gateways.esim import (
    EsimNotFound,
    EsimRefused,
    EsimStatus,
    InstallCode,
    PackageKind,
)
from bot.gateways.http import ProviderRefused, RateLimited
from bot.gateways.topup import GatewayError, GatewayTimeout
from tests.fakes import airalo
from tests.fakes.http import Fault
from tests.providers.esim_backends import clock_sleep


@pytest.fixture
def fake(clock: ManualClock) -> Iterator[airalo.FakeAiralo]:
    with airalo.FakeAiralo(clock=clock.now) as server:
        yield server


def gateway_for(fake: airalo.FakeAiralo, clock: ManualClock, **config: object) -> AiraloGateway:
    return AiraloGateway(AiraloConfig(client_id=fake.client_id,
                                      client_secret=str(config.pop("secret", fake.client_secret)),
                                      api_url=fake.api_url, **config),  # type: ignore[arg-type]
                         clock, sleep=clock_sleep(clock))


@pytest.fixture
async def gateway(fake: airalo.FakeAiralo, clock: ManualClock) -> AsyncIterator[AiraloGateway]:
    adapter = gateway_for(fake, clock)
    yield adapter
    await adapter.aclose()


async def bought(gateway: AiraloGateway, reference: str = "esim-1",
                 package: str = airalo.PACKAGE_1GB) -> str:
    order = await gateway.order(package, reference)
    assert order.iccid is not None
    return order.iccid


# --- the token ----------------------------------------------------------------------------

async def test_one_token_serves_every_call_and_a_revoked_one_is_renewed_once(
        gateway: AiraloGateway, fake: airalo.FakeAiralo) -> None:
    await gateway.packages()
    await gateway.balance()
    await bought(gateway)
    assert fake.issued_tokens == 1

    fake.expire_tokens()
    assert await gateway.balance() == Money(100_000 - 250, "USD")
    assert fake.issued_tokens == 2
    [token_call, *_] = fake.requests_to("/v2/token")
    assert token_call.headers["content-type"].startswith("application/x-www-form-urlencoded")
    assert all(r.headers["accept"] == "application/json" for r in fake.requests)


async def test_a_token_is_kept_at_most_a_day_whatever_expires_in_says(
        clock: ManualClock) -> None:
    with airalo.FakeAiralo(clock=clock.now, token_lifetime=timedelta(days=366)) as fake:
        adapter = gateway_for(fake, clock)
        try:
            await adapter.balance()
            clock.advance(timedelta(hours=23))
            await adapter.balance()
            assert fake.issued_tokens == 1
            clock.advance(timedelta(hours=1))
            await adapter.balance()
            assert fake.issued_tokens == 2
        finally:
            await adapter.aclose()


async def test_wrong_credentials_are_named_and_not_retried(
        fake: airalo.FakeAiralo, clock: ManualClock) -> None:
    adapter = gateway_for(fake, clock, secret="not-the-secret")
    try:
        with pytest.raises(ProviderRefused, match="AIRALO_CLIENT_SECRET"):
            await adapter.balance()
        assert len(fake.requests_to("/v2/token")) == 1
    finally:
        await adapter.aclose()


# --- the catalog --------------------------------------------------------------------------

async def test_the_catalog_is_cambodian_local_and_regional_esims_cheapest_first(
        gateway: AiraloGateway) -> None:
    packages = await gateway.packages()

    ids = [p.id for p in packages]
    assert airalo.THAILAND_1GB not in ids and airalo.VIETNAM_1GB not in ids
    assert {airalo.PACKAGE_1GB, airalo.ASIA_1GB, airalo.PACKAGE_UNLIMITED} <= set(ids)
    assert all(p.kind is PackageKind.SIM for p in packages)  # top-ups are not for sale alone
    assert [p.price.minor for p in packages] == sorted(p.price.minor for p in packages)
    one = next(p for p in packages if p.id == airalo.PACKAGE_1GB)
    assert (one.price, one.net_price, one.data_mb, one.validity_days) == (
        Money(500, "USD"), Money(250, "USD"), 1024, 7)
    assert one.coverage == "Cambodia" and one.networks == ("Smart", "Cellcard")
    asia = next(p for p in packages if p.id == airalo.ASIA_1GB)
    assert asia.coverage == "Asia" and "KH" in asia.countries and len(asia.countries) > 1
    unlimited = next(p for p in packages if p.id == airalo.PACKAGE_UNLIMITED)
    assert unlimited.unlimited and not unlimited.rechargeable


async def test_the_catalog_is_cached_and_read_again_after_its_ttl(
        gateway: AiraloGateway, fake: airalo.FakeAiralo, clock: ManualClock) -> None:
    await gateway.packages()
    await gateway.packages()
    assert len(fake.requests_to("/v2/packages")) == 1

    fake.sell_out(airalo.PACKAGE_3GB)
    clock.advance(timedelta(hours=1, seconds=1))
    assert airalo.PACKAGE_3GB not in [p.id for p in await gateway.packages()]
    assert len(fake.requests_to("/v2/packages")) == 2


async def test_pages_are_followed_and_keyed_pages_are_read_too(
        clock: ManualClock, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(airalo_module, "PAGE_SIZE", 1)  # one entry a page: Cambodia, Asia
    with airalo.FakeAiralo(clock=clock.now, keyed_pages=True) as fake:
        adapter = gateway_for(fake, clock)
        try:
            packages = await adapter.packages()
            assert {p.coverage for p in packages} == {"Cambodia", "Asia"}
            assert len(fake.requests_to("/v2/packages")) == 2
        finally:
            await adapter.aclose()


# --- orders -------------------------------------------------------------------------------

async def test_an_order_gives_the_install_code_and_costs_the_net_price(
        gateway: AiraloGateway, fake: airalo.FakeAiralo) -> None:
    order = await gateway.order(airalo.PACKAGE_1GB, "esim-ref-1")

    [record] = fake.orders_with_description("esim-ref-1")
    assert order.order_id == str(record.id) and order.kind is PackageKind.SIM
    assert (order.price, order.net_price) == (Money(500, "USD"), Money(250, "USD"))
    [code] = order.sims
    sim = fake.sim(code.iccid)
    assert code.activation_code == InstallCode.lpa(airalo.SMDP_ADDRESS, sim.matching_id)
    assert (code.smdp_address, code.matching_id) == (airalo.SMDP_ADDRESS, sim.matching_id)
    assert code.apple_install_url and code.activation_code in code.apple_install_url
    assert order.iccid == code.iccid
    assert fake.balance == Decimal("997.50")
    assert await gateway.install_code(code.iccid) == code


async def test_an_order_whose_answer_was_lost_is_found_by_its_exact_reference(
        gateway: AiraloGateway, fake: airalo.FakeAiralo) -> None:
    # Airalo matches descriptions with LIKE: these must not be taken for ours.
    await gateway.order(airalo.PACKAGE_1GB, "esim-ref-10")
    await gateway.order(airalo.PACKAGE_1GB, "xesim-ref-1")
    assert await gateway.find_order("esim-ref-1") is None

    fake.faults.add(Fault.drop_after_processing(), path="/v2/orders", method="POST")
    with pytest.raises(GatewayTimeout):
        await gateway.order(airalo.PACKAGE_3GB, "esim-ref-1")

    found = await gateway.find_order("esim-ref-1")
    assert found is not None and found.package_id == airalo.PACKAGE_3GB
    [record] = fake.orders_with_description("esim-ref-1")
    assert found.order_id == str(record.id) and found.price == Money(900, "USD")
    [code] = found.sims  # the install code comes with it: nothing is ordered again
    assert code.iccid == found.iccid and code.activation_code.startswith("LPA:1$")
    assert len(fake.orders) == 3


async def test_wildcards_in_a_reference_match_only_itself(gateway: AiraloGateway) -> None:
    await gateway.order(airalo.PACKAGE_1GB, "esim-ab")
    assert await gateway.find_order("esim_ab") is None  # "_" is LIKE's any-character
    assert await gateway.find_order("esim%") is None


@pytest.mark.parametrize(("arrange", "reason"), [
    (lambda f: f.sell_out(airalo.PACKAGE_1GB), DeclineReason.PRODUCT_UNAVAILABLE),
    (lambda f: f.set_stock(airalo.PACKAGE_1GB, 0), DeclineReason.PRODUCT_UNAVAILABLE),
    (lambda f: f.set_maintenance(airalo.KOUPREY_ID), DeclineReason.OPERATOR_UNAVAILABLE),
    (lambda f: f.set_balance(Decimal("1.00")), DeclineReason.PROVIDER_BALANCE),
])
async def test_refusals_order_nothing_and_say_why(
        gateway: AiraloGateway, fake: airalo.FakeAiralo, arrange: object,
        reason: DeclineReason) -> None:
    arrange(fake)  # type: ignore[operator]
    with pytest.raises(EsimRefused) as refused:
        await gateway.order(airalo.PACKAGE_1GB, "esim-refused")
    assert refused.value.reason is reason
    assert fake.orders == []


async def test_an_unknown_package_is_refused(gateway: AiraloGateway,
                                             fake: airalo.FakeAiralo) -> None:
    with pytest.raises(EsimRefused) as refused:
        await gateway.order("no-such-package", "esim-x")
    assert refused.value.reason is DeclineReason.PRODUCT_UNAVAILABLE


@pytest.mark.parametrize("fault", [
    Fault.http_status(500), Fault.http_status(503),
    Fault.http_status(422, airalo.business_error(53)),
])
async def test_an_order_answer_that_says_nothing_of_the_outcome_is_not_a_refusal(
        gateway: AiraloGateway, fake: airalo.FakeAiralo, fault: Fault) -> None:
    fake.faults.add(fault, path="/v2/orders", method="POST")
    with pytest.raises(GatewayError) as raised:
        await gateway.order(airalo.PACKAGE_1GB, "esim-5xx")
    assert not isinstance(raised.value, EsimRefused)
    assert raised.value.transient


async def test_a_slow_answer_times_out_as_an_unknown_outcome(
        fake: airalo.FakeAiralo, clock: ManualClock) -> None:
    adapter = gateway_for(fake, clock, timeout_seconds=0.2)
    try:
        fake.faults.add(Fault.delay_after_processing(1.0), path="/v2/orders", method="POST")
        with pytest.raises(GatewayTimeout):
            await adapter.order(airalo.PACKAGE_1GB, "esim-slow")
        assert (await adapter.find_order("esim-slow")) is not None
    finally:
        await adapter.aclose()


# --- usage --------------------------------------------------------------------------------

async def test_usage_follows_the_esim_through_its_life(
        gateway: AiraloGateway, fake: airalo.FakeAiralo, clock: ManualClock) -> None:
    iccid = await bought(gateway)
    fresh = await gateway.usage(iccid)
    assert (fresh.status, fresh.remaining_mb, fresh.total_mb, fresh.expires_at) == (
        EsimStatus.NOT_INSTALLED, 1024, 1024, None)
    assert fresh.status.can_install

    fake.install(iccid)
    installed_at = clock.now().replace(microsecond=0)
    fake.drain(iccid, 700)
    clock.advance(timedelta(minutes=2))  # past the usage cache
    active = await gateway.usage(iccid)
    assert (active.status, active.remaining_mb, active.total_mb) == (
        EsimStatus.ACTIVE, 324, 1024)
    assert active.expires_at == installed_at + timedelta(days=7)
    assert active.read_at == clock.now() and not active.status.can_install

    fake.drain(iccid, 324)
    clock.advance(timedelta(minutes=2))
    assert (await gateway.usage(iccid)).status is EsimStatus.USED_UP
    clock.advance(timedelta(days=8))
    assert (await gateway.usage(iccid)).status is EsimStatus.EXPIRED
    fake.recycle(iccid)
    clock.advance(timedelta(minutes=2))
    assert (await gateway.usage(iccid)).status is EsimStatus.RECYCLED


async def test_unlimited_usage_has_no_megabytes(gateway: AiraloGateway) -> None:
    iccid = await bought(gateway, package=airalo.PACKAGE_UNLIMITED)
    usage = await gateway.usage(iccid)
    assert (usage.remaining_mb, usage.total_mb) == (None, None)


async def test_a_reading_is_reused_for_a_minute(
        gateway: AiraloGateway, fake: airalo.FakeAiralo, clock: ManualClock) -> None:
    iccid = await bought(gateway)
    first = await gateway.usage(iccid)
    clock.advance(timedelta(seconds=30))
    assert await gateway.usage(iccid) == first  # read_at says how old it is
    clock.advance(timedelta(seconds=31))
    assert (await gateway.usage(iccid)).read_at == clock.now()
    assert len(fake.requests_to(r"/v2/sims/\d+/usage")) == 2


async def test_unknown_and_malformed_iccids(gateway: AiraloGateway,
                                           fake: airalo.FakeAiralo) -> None:
    with pytest.raises(EsimNotFound):
        await gateway.usage("8944465400000000000")
    with pytest.raises(EsimNotFound):
        await gateway.usage("../balance")
    with pytest.raises(EsimNotFound):
        await gateway.install_code("8944465400000000000")
    assert fake.requests_to(r"/v2/sims/.*balance.*") == []


async def test_reads_of_many_esims_are_spaced_under_the_account_limit(
        gateway: AiraloGateway, fake: airalo.FakeAiralo, clock: ManualClock) -> None:
    iccids = [await bought(gateway, f"esim-many-{n}") for n in range(12)]
    started = clock.now()
    for iccid in iccids:
        await gateway.usage(iccid)

    usage_calls = fake.requests_to(r"/v2/sims/\d+/usage")
    assert len(usage_calls) == 12  # not one refused with 429
    assert clock.now() - started >= timedelta(seconds=2)  # 5 a second, with a margin


async def test_a_429_is_waited_out_as_the_provider_says(
        fake: airalo.FakeAiralo, clock: ManualClock) -> None:
    adapter = gateway_for(fake, clock, usage_per_second=100)  # spacing off: the fake refuses
    try:
        iccids = [await bought(adapter, f"esim-burst-{n}") for n in range(8)]
        readings = [await adapter.usage(iccid) for iccid in iccids]
        assert all(r.status is EsimStatus.NOT_INSTALLED for r in readings)
        # Some were refused with 429 and sent again after the wait the fake asked for.
        assert len(fake.requests_to(r"/v2/sims/\d+/usage")) > 8
    finally:
        await adapter.aclose()


async def test_a_long_rate_limit_is_left_to_the_caller(
        gateway: AiraloGateway, fake: airalo.FakeAiralo) -> None:
    iccid = await bought(gateway)
    fake.faults.add(Fault.http_status(429, {"message": "Too Many Attempts."}),
                    path=r"/v2/sims/\d+/usage", times=10)
    with pytest.raises(RateLimited):
        await gateway.usage(iccid)
    assert len(fake.requests_to(r"/v2/sims/\d+/usage")) == 4  # 1 + RATE_LIMIT_WAITS


# --- top-ups ------------------------------------------------------------------------------

async def test_a_top_up_adds_data_and_is_found_by_its_reference(
        gateway: AiraloGateway, fake: airalo.FakeAiralo, clock: ManualClock) -> None:
    iccid = await bought(gateway)
    fake.install(iccid)
    topups = await gateway.topup_packages(iccid)
    assert [p.id for p in topups] == [airalo.TOPUP_1GB, airalo.TOPUP_3GB, airalo.TOPUP_5GB]
    assert all(p.kind is PackageKind.TOPUP for p in topups)
    assert topups[0].coverage == "Cambodia"

    await gateway.usage(iccid)
    order = await gateway.top_up(iccid, airalo.TOPUP_3GB, "topup-ref-1")
    assert (order.kind, order.sims, order.iccid) == (PackageKind.TOPUP, (), iccid)
    assert (await gateway.usage(iccid)).total_mb == 1024 + 3072  # not the cached reading

    found = await gateway.find_order("topup-ref-1")
    assert found is not None and found.kind is PackageKind.TOPUP and found.iccid == iccid
    assert found.order_id == order.order_id


async def test_esims_that_take_no_top_up(gateway: AiraloGateway, fake: airalo.FakeAiralo,
                                        clock: ManualClock) -> None:
    unlimited = await bought(gateway, "esim-u", airalo.PACKAGE_UNLIMITED)
    assert await gateway.topup_packages(unlimited) == []

    expired = await bought(gateway, "esim-e")
    fake.install(expired)
    clock.advance(timedelta(days=8))
    assert await gateway.topup_packages(expired) == []
    with pytest.raises(EsimRefused) as refused:
        await gateway.top_up(expired, airalo.TOPUP_1GB, "topup-expired")
    assert refused.value.reason is DeclineReason.DECLINED

    recycled = await bought(gateway, "esim-r")
    fake.recycle(recycled)
    with pytest.raises(EsimRefused) as refused:
        await gateway.topup_packages(recycled)
    assert refused.value.reason is DeclineReason.ESIM_RECYCLED
    with pytest.raises(EsimRefused) as refused:
        await gateway.top_up(recycled, airalo.TOPUP_1GB, "topup-recycled")
    assert refused.value.reason is DeclineReason.ESIM_RECYCLED


async def test_a_top_up_package_of_another_esim_is_refused(gateway: AiraloGateway) -> None:
    iccid = await bought(gateway)
    with pytest.raises(EsimRefused) as refused:
        await gateway.top_up(iccid, airalo.ASIA_TOPUP_1GB, "topup-wrong")
    assert refused.value.reason is DeclineReason.PRODUCT_UNAVAILABLE


# --- the account --------------------------------------------------------------------------

async def test_the_balance_is_read_in_minor_units(gateway: AiraloGateway,
                                                 fake: airalo.FakeAiralo) -> None:
    fake.set_balance(Decimal("49.95"))
    assert await gateway.balance() == Money(4995, "USD")
