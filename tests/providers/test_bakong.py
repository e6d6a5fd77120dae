"""The Bakong adapter's real HTTP code against the fake Bakong Open API on 127.0.0.1."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from datetime import timedelta

import pytest

from bot.clock import ManualClock
from bot.domain.khqr import KhqrRecipient, KhqrRequest, build_payload, payload_md5
from bot.domain.money import Money
from bot.gateways.bakong import BULK_LIMIT, BakongGateway
from bot.gateways.http import ProviderRefused, RateLimited
from bot.gateways.topup import GatewayError
from tests.fakes.bakong import FakeBakong
from tests.fakes.http import Fault

RECIPIENT = KhqrRecipient(account_id="topupbot@aclb", name="TopUp Bot")


FIVE_DOLLARS = Money(500, "USD")


def qr(clock: ManualClock, amount: Money = FIVE_DOLLARS, bill: str = "TB1") -> str:
    now = clock.now()
    return build_payload(KhqrRequest(recipient=RECIPIENT, amount=amount, bill_number=bill,
                                     created_at=now, expires_at=now + timedelta(minutes=15)))


async def no_sleep(_seconds: float) -> None:
    return None


@pytest.fixture
def fake(clock: ManualClock) -> Iterator[FakeBakong]:
    with FakeBakong(clock=clock.now) as server:
        yield server


@pytest.fixture
async def gateway(fake: FakeBakong) -> AsyncIterator[BakongGateway]:
    client = BakongGateway(fake.api_url, fake.token, sleep=no_sleep)
    yield client
    await client.aclose()


async def test_an_unpaid_qr_is_not_found_and_a_paid_one_gives_its_transaction(
        clock: ManualClock, fake: FakeBakong, gateway: BakongGateway) -> None:
    payload = qr(clock)
    md5 = payload_md5(payload)
    assert await gateway.transaction(md5) is None
    paid = fake.pay(payload, from_account="sokha@abaa")
    found = await gateway.transaction(md5)
    assert found is not None
    assert (found.md5, found.hash, found.amount) == (md5, paid.hash, Money(500, "USD"))
    assert found.from_account == "sokha@abaa" and found.payer_bank == "abaa"
    assert found.to_account == "topupbot@aclb"
    assert found.created_at == clock.now()  # createdDateMs read as milliseconds


async def test_riel_amounts_arrive_as_whole_riel_in_minor_units(
        clock: ManualClock, fake: FakeBakong, gateway: BakongGateway) -> None:
    payload = qr(clock, Money.of_major(20_500, "KHR"))
    fake.pay(payload)
    found = await gateway.transaction(payload_md5(payload))
    assert found is not None and found.amount == Money.of_major(20_500, "KHR")


async def test_a_failed_transfer_is_not_a_payment(
        clock: ManualClock, fake: FakeBakong, gateway: BakongGateway) -> None:
    payload = qr(clock)
    fake.fail(payload)
    assert await gateway.transaction(payload_md5(payload)) is None
    assert await gateway.paid_among([payload_md5(payload)]) == {}


async def test_the_bulk_check_names_only_the_paid_ones_among_fifty(
        clock: ManualClock, fake: FakeBakong, gateway: BakongGateway) -> None:
    payloads = [qr(clock, bill=f"TB{i}") for i in range(BULK_LIMIT)]
    for payload in payloads[::7]:
        fake.pay(payload)
    md5s = [payload_md5(p) for p in payloads]
    paid = await gateway.paid_among(md5s)
    assert set(paid) == {payload_md5(p) for p in payloads[::7]}
    assert all(t is not None and t.amount == Money(500, "USD") for t in paid.values())
    assert fake.calls("/v1/check_transaction_by_md5_list") == 1
    with pytest.raises(ValueError, match="up to 50"):
        await gateway.paid_among([*md5s, "0" * 32])  # 51: refused before any request
    assert fake.calls() == 1


async def test_a_payment_before_its_time_is_not_visible(
        clock: ManualClock, fake: FakeBakong, gateway: BakongGateway) -> None:
    payload = qr(clock)
    fake.pay(payload, at=clock.now() + timedelta(seconds=30))
    assert await gateway.transaction(payload_md5(payload)) is None
    clock.advance(timedelta(seconds=31))
    assert await gateway.transaction(payload_md5(payload)) is not None


async def test_an_expired_token_is_refused_not_retried(
        clock: ManualClock, fake: FakeBakong, gateway: BakongGateway) -> None:
    fake.expire_token()
    with pytest.raises(ProviderRefused, match="BAKONG_TOKEN"):
        await gateway.transaction(payload_md5(qr(clock)))
    assert fake.calls() == 1


async def test_a_host_outside_cambodia_is_told_to_use_a_relay(
        clock: ManualClock, fake: FakeBakong, gateway: BakongGateway) -> None:
    fake.refuse_foreign_ip = True
    with pytest.raises(ProviderRefused, match="BAKONG_API_URL"):
        await gateway.paid_among([payload_md5(qr(clock))])


async def test_too_many_requests_gives_its_retry_after(
        clock: ManualClock, fake: FakeBakong, gateway: BakongGateway) -> None:
    fake.rate_limit = (1, 60)
    md5 = payload_md5(qr(clock))
    await gateway.transaction(md5)
    with pytest.raises(RateLimited) as raised:
        await gateway.transaction(md5)
    assert timedelta(seconds=1) <= raised.value.retry_after <= timedelta(seconds=60)


async def test_a_busy_server_is_retried_then_reported(
        clock: ManualClock, fake: FakeBakong, gateway: BakongGateway) -> None:
    payload = qr(clock)
    fake.pay(payload)
    fake.faults.add(Fault.http_status(504), times=2)
    assert await gateway.transaction(payload_md5(payload)) is not None  # third try answers
    fake.faults.add(Fault.http_status(503), times=5)
    with pytest.raises(GatewayError):
        await gateway.transaction(payload_md5(payload))


async def test_a_lost_answer_is_asked_again(
        clock: ManualClock, fake: FakeBakong, gateway: BakongGateway) -> None:
    payload = qr(clock)
    fake.pay(payload)
    fake.faults.add(Fault.drop_after_processing(), path="/v1/check_transaction_by_md5_list")
    paid = await gateway.paid_among([payload_md5(payload)])  # reads are safe to repeat
    assert list(paid) == [payload_md5(payload)]


async def test_malformed_md5s_are_refused_before_any_request(
        fake: FakeBakong, gateway: BakongGateway) -> None:
    for bad in ("ABC", "G" * 32, "A" * 32):
        with pytest.raises(ValueError, match="not a lowercase MD5"):
            await gateway.transaction(bad)
    assert fake.calls() == 0
