"""The simulated carrier: catalog, line state and drain, top-ups and every injected fault.

Every test runs on SQLite and (with TEST_POSTGRES_URL) PostgreSQL through the ``db``
fixture. Time only moves when a test advances the ManualClock.
"""

from __future__ import annotations

import asyncio
import os
import random
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event

from bot.clock import ManualClock
from bot.domain.money import Money
from bot.domain.operators import RECYCLE_AFTER, VALIDITY_TIERS, Operator
from bot.domain.products import ProductKind
from bot.domain.readings import LineReading, ReadingSource
from bot.gateways import simulated_carrier
from bot.gateways.simulated_carrier import (
    ReplayBehaviour,
    SimLineStatus,
    SimulatedCarrier,
    SimulatorKnobs,
)
from bot.gateways.simulated_catalog import CATALOG
from bot.gateways.topup import (
    DuplicateReference,
    GatewayTimeout,
    TopUpRequest,
    TopUpStatus,
)
from storage import migrate
from storage.crypto import FieldCipher, KeyMaterial, generate_fernet_key
from storage.db import Database
from storage.sim_carrier import SimCarrierRepository, SimLineRow

# One real number per operator (the carrier trusts the operator it is given).
SMART = "+85510345678"
CELLCARD = "+85512345678"
METFONE = "+85597345678"
SEATEL = "+85518345678"
PHONES = {Operator.SMART: SMART, Operator.CELLCARD: CELLCARD,
          Operator.METFONE: METFONE, Operator.SEATEL: SEATEL}
DAY = timedelta(days=1)
FAR = timedelta(days=3650)

CarrierFactory = Callable[..., SimulatedCarrier]


def usd(cents: int) -> Money:
    return Money(cents, "USD")


@pytest.fixture
def make_carrier(db: Database, cipher: FieldCipher, clock: ManualClock) -> CarrierFactory:
    """``make_carrier(knobs=..., seed=...)``: a carrier on the test's database and clock."""

    def make(knobs: SimulatorKnobs | None = None, seed: int = 1234) -> SimulatedCarrier:
        return SimulatedCarrier(db, cipher, clock, knobs or SimulatorKnobs(),
                                random.Random(seed))

    return make


@pytest.fixture
def carrier(make_carrier: CarrierFactory) -> SimulatedCarrier:
    return make_carrier()


async def line_row(db: Database, cipher: FieldCipher, phone: str) -> SimLineRow:
    async with db.read() as conn:
        row = await SimCarrierRepository(conn, cipher).line(phone)
    assert row is not None
    return row


def req(reference: str, phone: str = CELLCARD, operator: Operator = Operator.CELLCARD,
            *, amount: Money | None = None, product_id: str | None = None) -> TopUpRequest:
    return TopUpRequest(reference=reference, phone_e164=phone, operator=operator,
                        amount=amount, product_id=product_id)


# -- catalog ------------------------------------------------------------------------------


@pytest.mark.parametrize("operator", list(Operator))
async def test_catalog_has_airtime_and_data_priced_in_whole_usd_cents(
        carrier: SimulatedCarrier, operator: Operator) -> None:
    products = await carrier.catalog(operator)
    kinds = {product.kind for product in products}
    assert kinds == {ProductKind.AIRTIME, ProductKind.DATA}
    assert len({product.id for product in products}) == len(products)
    for product in products:
        assert product.operator is operator
        assert product.price.currency == "USD"
        assert type(product.price.minor) is int
        assert product.price.minor > 0
        assert product.validity_days > 0
        if product.kind is ProductKind.AIRTIME:
            assert product.airtime == product.price
            assert product.data_mb is None
        else:
            assert product.data_mb is not None
            assert product.data_mb > 0
            assert product.airtime is None
    airtime_cents = sorted(p.price.minor for p in products if p.kind is ProductKind.AIRTIME)
    assert airtime_cents == [cents for cents, _ in VALIDITY_TIERS[operator]]


async def test_catalog_is_a_copy(carrier: SimulatedCarrier) -> None:
    products = await carrier.catalog(Operator.SMART)
    products.clear()
    assert await carrier.catalog(Operator.SMART)


# -- a line's state -----------------------------------------------------------------------


async def test_new_line_has_plausible_state(carrier: SimulatedCarrier,
                                            clock: ManualClock) -> None:
    now = clock.now()
    for operator, phone in PHONES.items():
        state = await carrier.show(phone, operator)
        assert state.phone_e164 == phone
        assert state.operator is operator
        assert state.balance.currency == "USD"
        assert 0 < state.balance.minor <= 300
        assert 0 <= state.data_mb < 2048
        assert state.validity_end > now
        assert state.validity_end <= now + timedelta(days=31)
        assert state.data_expires_at is None
        assert state.last_topup_at is None
        assert state.status is SimLineStatus.ACTIVE
        assert state.recycle_at == now + RECYCLE_AFTER[operator]
        assert state.recent_topups == ()


async def test_new_line_state_is_the_same_for_the_same_number(
        db: Database, cipher: FieldCipher, clock: ManualClock) -> None:
    first = SimulatedCarrier(db, cipher, clock)
    # A carrier with other keys cannot find the stored line, so it makes it up again.
    other_cipher = FieldCipher(KeyMaterial(encryption_keys=(generate_fernet_key(),),
                                           blind_index_key=os.urandom(32)))
    second = SimulatedCarrier(db, other_cipher, clock)
    states = []
    for phone, operator in ((CELLCARD, Operator.CELLCARD), (SMART, Operator.SMART)):
        a = await first.show(phone, operator)
        b = await second.show(phone, operator)
        assert (a.balance, a.data_mb, a.validity_end) == (b.balance, b.data_mb, b.validity_end)
        assert await first.show(phone, operator) == a
        states.append((a.balance, a.data_mb, a.validity_end))
    assert states[0] != states[1]  # the state depends on the number


async def test_balance_and_data_drain_in_proportion_to_time(
        db: Database, cipher: FieldCipher, carrier: SimulatedCarrier,
        clock: ManualClock) -> None:
    await carrier.set_validity(CELLCARD, Operator.CELLCARD, clock.now() + FAR)
    start = await carrier.show(CELLCARD, Operator.CELLCARD)
    row = await line_row(db, cipher, CELLCARD)
    spend, burn = row.daily_spend_minor, row.daily_data_mb
    assert spend > 0
    assert burn > 0
    assert start.data_mb >= 2 * burn  # the number below has data for two days at least

    clock.advance(DAY / 2)
    half = await carrier.show(CELLCARD, Operator.CELLCARD)
    assert half.balance.minor == start.balance.minor - spend // 2
    assert half.data_mb == start.data_mb - burn // 2
    clock.advance(DAY / 2)
    one = await carrier.show(CELLCARD, Operator.CELLCARD)
    assert one.balance.minor == start.balance.minor - spend
    assert one.data_mb == start.data_mb - burn
    clock.advance(DAY)
    two = await carrier.show(CELLCARD, Operator.CELLCARD)
    assert two.balance.minor == start.balance.minor - 2 * spend
    assert two.data_mb == start.data_mb - 2 * burn


async def test_drain_never_goes_negative(carrier: SimulatedCarrier, clock: ManualClock) -> None:
    await carrier.set_validity(SMART, Operator.SMART, clock.now() + FAR)
    previous = await carrier.show(SMART, Operator.SMART)
    for _ in range(60):
        clock.advance(DAY)
        state = await carrier.show(SMART, Operator.SMART)
        assert 0 <= state.balance.minor <= previous.balance.minor
        assert 0 <= state.data_mb <= previous.data_mb
        previous = state
    assert previous.balance.minor == 0
    assert previous.data_mb == 0


@pytest.mark.parametrize("step_minutes", [1, 10])
async def test_many_small_reads_drain_like_one_read(
        db: Database, cipher: FieldCipher, carrier: SimulatedCarrier, clock: ManualClock,
        step_minutes: int) -> None:
    await carrier.set_validity(CELLCARD, Operator.CELLCARD, clock.now() + FAR)
    start = await carrier.read(CELLCARD, Operator.CELLCARD)
    row = await line_row(db, cipher, CELLCARD)
    assert start.balance is not None
    assert start.data_mb is not None
    for _ in range(100):
        clock.advance(timedelta(minutes=step_minutes))
        last = await carrier.read(CELLCARD, Operator.CELLCARD)
    seconds = 100 * step_minutes * 60
    # What one read after the whole period sees (usage is applied from ``as_of``).
    expected_balance = start.balance.minor - row.daily_spend_minor * seconds // 86_400
    expected_data = start.data_mb - row.daily_data_mb * seconds // 86_400
    assert last.balance is not None
    assert last.data_mb is not None
    assert abs(last.balance.minor - expected_balance) <= 1
    assert abs(last.data_mb - expected_data) <= 1
    if step_minutes == 10:  # long enough that a per-read rounding loss would show
        assert start.balance.minor - last.balance.minor >= 5


async def test_many_small_writes_drain_like_one_read(
        db: Database, cipher: FieldCipher, carrier: SimulatedCarrier,
        clock: ManualClock) -> None:
    await carrier.set_validity(CELLCARD, Operator.CELLCARD, clock.now() + FAR)
    start = await carrier.show(CELLCARD, Operator.CELLCARD)
    row = await line_row(db, cipher, CELLCARD)
    for _ in range(100):
        clock.advance(timedelta(minutes=10))
        await carrier.use_data(CELLCARD, Operator.CELLCARD, 1)
    last = await carrier.show(CELLCARD, Operator.CELLCARD)
    expected_balance = start.balance.minor - row.daily_spend_minor * 60_000 // 86_400
    assert abs(last.balance.minor - expected_balance) <= 1


async def test_drain_stops_when_validity_ends(carrier: SimulatedCarrier,
                                              clock: ManualClock) -> None:
    start = await carrier.set_validity(CELLCARD, Operator.CELLCARD, clock.now() + 2 * DAY)
    clock.advance(2 * DAY)
    at_end = await carrier.show(CELLCARD, Operator.CELLCARD)
    assert at_end.balance.minor < start.balance.minor
    assert at_end.data_mb < start.data_mb
    assert at_end.balance.minor > 0  # frozen credit, not drained away
    assert at_end.data_mb > 0
    for _ in range(3):
        clock.advance(10 * DAY)
        later = await carrier.show(CELLCARD, Operator.CELLCARD)
        assert later.balance == at_end.balance
        assert later.data_mb == at_end.data_mb


@pytest.mark.parametrize("operator", list(Operator))
async def test_status_active_then_expired_then_recycled(
        carrier: SimulatedCarrier, clock: ManualClock, operator: Operator) -> None:
    phone = PHONES[operator]
    created = clock.now()
    state = await carrier.show(phone, operator)
    assert state.status is SimLineStatus.ACTIVE
    recycle_at = created + RECYCLE_AFTER[operator]
    assert state.recycle_at == recycle_at
    assert state.validity_end < recycle_at

    clock.set(state.validity_end - timedelta(seconds=1))
    assert (await carrier.show(phone, operator)).status is SimLineStatus.ACTIVE
    clock.set(state.validity_end)
    assert (await carrier.show(phone, operator)).status is SimLineStatus.EXPIRED
    clock.set(recycle_at - timedelta(seconds=1))
    assert (await carrier.show(phone, operator)).status is SimLineStatus.EXPIRED
    clock.set(recycle_at)
    assert (await carrier.show(phone, operator)).status is SimLineStatus.RECYCLED


async def test_a_top_up_restarts_the_recycle_period(carrier: SimulatedCarrier,
                                                    clock: ManualClock) -> None:
    created = clock.now()
    state = await carrier.show(CELLCARD, Operator.CELLCARD)
    clock.advance(2 * DAY)
    topped = await carrier.top_up(req("ref-recycle", amount=usd(100)))
    assert topped.status is TopUpStatus.SUCCEEDED
    clock.set(created + RECYCLE_AFTER[Operator.CELLCARD])
    later = await carrier.show(CELLCARD, Operator.CELLCARD)
    assert later.validity_end == state.validity_end  # $1 buys 7 days, less than was left
    assert later.status is SimLineStatus.EXPIRED
    assert later.recycle_at == topped.at + RECYCLE_AFTER[Operator.CELLCARD]
    clock.set(later.recycle_at)
    assert (await carrier.show(CELLCARD, Operator.CELLCARD)).status is SimLineStatus.RECYCLED


# -- operator controls --------------------------------------------------------------------


async def test_set_balance(carrier: SimulatedCarrier, clock: ManualClock) -> None:
    state = await carrier.set_balance(CELLCARD, Operator.CELLCARD, usd(500))
    assert state.balance == usd(500)
    assert (await carrier.show(CELLCARD, Operator.CELLCARD)).balance == usd(500)
    assert (await carrier.set_balance(CELLCARD, Operator.CELLCARD, usd(0))).balance == usd(0)
    with pytest.raises(ValueError, match="USD"):
        await carrier.set_balance(CELLCARD, Operator.CELLCARD, Money(2_000_000, "KHR"))
    with pytest.raises(ValueError, match="USD"):
        await carrier.set_balance(CELLCARD, Operator.CELLCARD, usd(-1))
    assert (await carrier.show(CELLCARD, Operator.CELLCARD)).balance == usd(0)


async def test_use_data(carrier: SimulatedCarrier) -> None:
    before = await carrier.show(CELLCARD, Operator.CELLCARD)
    assert before.data_mb > 300
    after = await carrier.use_data(CELLCARD, Operator.CELLCARD, 300)
    assert after.data_mb == before.data_mb - 300
    assert after.balance == before.balance
    assert (await carrier.use_data(CELLCARD, Operator.CELLCARD, 10**6)).data_mb == 0
    for bad in (0, -5):
        with pytest.raises(ValueError, match="positive"):
            await carrier.use_data(CELLCARD, Operator.CELLCARD, bad)


async def test_set_validity(carrier: SimulatedCarrier, clock: ManualClock) -> None:
    far = clock.now() + timedelta(days=200)
    state = await carrier.set_validity(METFONE, Operator.METFONE, far)
    assert state.validity_end == far
    assert state.status is SimLineStatus.ACTIVE
    ended = await carrier.set_validity(METFONE, Operator.METFONE, clock.now())
    assert ended.status is SimLineStatus.EXPIRED
    assert (await carrier.show(METFONE, Operator.METFONE)).validity_end == clock.now()


# -- top-ups ------------------------------------------------------------------------------


async def test_top_up_by_amount_adds_balance_and_extends_validity(
        carrier: SimulatedCarrier, clock: ManualClock) -> None:
    before = await carrier.show(SMART, Operator.SMART)
    result = await carrier.top_up(req("ref-smart-5", SMART, Operator.SMART,
                                          amount=usd(500)))
    now = clock.now()
    assert result.status is TopUpStatus.SUCCEEDED
    assert result.reference == "ref-smart-5"
    assert result.amount == usd(500)
    assert result.provider_tx_id
    assert result.failure_reason is None
    assert result.balance_after == before.balance + usd(500)
    assert result.validity_end is not None
    assert result.validity_end >= now + timedelta(days=40)
    after = await carrier.show(SMART, Operator.SMART)
    assert after.balance == before.balance + usd(500)
    assert after.validity_end == result.validity_end
    assert after.last_topup_at == now
    assert [t.reference for t in after.recent_topups] == ["ref-smart-5"]
    assert await carrier.times_paid("ref-smart-5") == 1


@pytest.mark.parametrize(("operator", "cents", "days"), [
    (operator, cents, days) for operator in Operator for cents, days in VALIDITY_TIERS[operator]
] + [(Operator.SMART, 499, 16), (Operator.SEATEL, 150, 10)])
async def test_top_up_validity_follows_the_operator_tiers(
        carrier: SimulatedCarrier, clock: ManualClock, operator: Operator, cents: int,
        days: int) -> None:
    phone = PHONES[operator]
    await carrier.set_validity(phone, operator, clock.now())
    result = await carrier.top_up(req(f"ref-{cents}", phone, operator, amount=usd(cents)))
    assert result.validity_end == clock.now() + timedelta(days=days)


async def test_top_up_never_shortens_validity(carrier: SimulatedCarrier,
                                              clock: ManualClock) -> None:
    long = clock.now() + timedelta(days=100)
    await carrier.set_validity(SMART, Operator.SMART, long)
    result = await carrier.top_up(req("ref-short", SMART, Operator.SMART, amount=usd(100)))
    assert result.validity_end == long
    assert (await carrier.show(SMART, Operator.SMART)).validity_end == long


async def test_top_up_an_expired_line_reactivates_it(carrier: SimulatedCarrier,
                                                     clock: ManualClock) -> None:
    await carrier.set_validity(CELLCARD, Operator.CELLCARD, clock.now())
    clock.advance(5 * DAY)
    assert (await carrier.show(CELLCARD, Operator.CELLCARD)).status is SimLineStatus.EXPIRED
    await carrier.top_up(req("ref-revive", amount=usd(200)))
    state = await carrier.show(CELLCARD, Operator.CELLCARD)
    assert state.status is SimLineStatus.ACTIVE
    assert state.validity_end == clock.now() + timedelta(days=15)


async def test_top_up_by_airtime_product(carrier: SimulatedCarrier, clock: ManualClock) -> None:
    before = await carrier.show(SEATEL, Operator.SEATEL)
    result = await carrier.top_up(req("ref-air", SEATEL, Operator.SEATEL,
                                          product_id="seatel-air-1000"))
    assert result.status is TopUpStatus.SUCCEEDED
    assert result.product_id == "seatel-air-1000"
    assert result.amount == usd(1000)
    assert result.balance_after == before.balance + usd(1000)
    assert result.validity_end == clock.now() + timedelta(days=90)


async def test_top_up_by_data_product_adds_data_until_the_pack_expires(
        carrier: SimulatedCarrier, clock: ManualClock) -> None:
    product = next(p for p in CATALOG[Operator.METFONE]
                   if p.kind is ProductKind.DATA and p.validity_days == 7)
    assert product.data_mb is not None
    before = await carrier.show(METFONE, Operator.METFONE)
    result = await carrier.top_up(req("ref-data", METFONE, Operator.METFONE,
                                          product_id=product.id))
    now = clock.now()
    assert result.status is TopUpStatus.SUCCEEDED
    assert result.amount == product.price
    assert result.data_after_mb == before.data_mb + product.data_mb
    after = await carrier.show(METFONE, Operator.METFONE)
    assert after.data_mb == before.data_mb + product.data_mb
    assert after.data_expires_at == now + timedelta(days=product.validity_days)
    assert after.balance == before.balance  # a data pack buys no airtime
    assert after.validity_end == before.validity_end

    clock.set(now + timedelta(days=product.validity_days) - timedelta(seconds=1))
    assert (await carrier.show(METFONE, Operator.METFONE)).data_mb > 0
    clock.set(now + timedelta(days=product.validity_days))
    assert (await carrier.show(METFONE, Operator.METFONE)).data_mb == 0


# -- replays ------------------------------------------------------------------------------


async def test_same_reference_is_idempotent_by_default(carrier: SimulatedCarrier,
                                                       clock: ManualClock) -> None:
    before = await carrier.show(CELLCARD, Operator.CELLCARD)
    first = await carrier.top_up(req("ref-once", amount=usd(200)))
    clock.advance(timedelta(minutes=5))
    second = await carrier.top_up(req("ref-once", amount=usd(200)))
    assert second.provider_tx_id == first.provider_tx_id
    assert second.status is TopUpStatus.SUCCEEDED
    assert second.balance_after == first.balance_after
    assert await carrier.times_paid("ref-once") == 1
    clock.set(first.at)  # no drain: compare the balance at the moment it was paid
    assert (await carrier.show(CELLCARD, Operator.CELLCARD)).balance == \
        before.balance + usd(200)


async def test_reject_replay_raises_duplicate_reference(make_carrier: CarrierFactory) -> None:
    carrier = make_carrier(SimulatorKnobs(replay=ReplayBehaviour.REJECT))
    first = await carrier.top_up(req("ref-rej", amount=usd(100)))
    balance = (await carrier.show(CELLCARD, Operator.CELLCARD)).balance
    with pytest.raises(DuplicateReference):
        await carrier.top_up(req("ref-rej", amount=usd(100)))
    assert DuplicateReference.transient is False
    assert await carrier.times_paid("ref-rej") == 1
    assert (await carrier.show(CELLCARD, Operator.CELLCARD)).balance == balance
    looked = await carrier.lookup("ref-rej")
    assert looked is not None
    assert looked.provider_tx_id == first.provider_tx_id


async def test_pay_twice_replay_credits_twice(make_carrier: CarrierFactory) -> None:
    carrier = make_carrier(SimulatorKnobs(replay=ReplayBehaviour.PAY_TWICE))
    before = await carrier.show(CELLCARD, Operator.CELLCARD)
    first = await carrier.top_up(req("ref-twice", amount=usd(300)))
    second = await carrier.top_up(req("ref-twice", amount=usd(300)))
    assert first.status is second.status is TopUpStatus.SUCCEEDED
    assert second.provider_tx_id != first.provider_tx_id
    assert await carrier.times_paid("ref-twice") == 2
    assert (await carrier.show(CELLCARD, Operator.CELLCARD)).balance == \
        before.balance + usd(600)
    looked = await carrier.lookup("ref-twice")
    assert looked is not None
    assert looked.provider_tx_id == first.provider_tx_id  # the original, not the duplicate


# -- faults -------------------------------------------------------------------------------


async def test_timeout_before_apply_changes_nothing(make_carrier: CarrierFactory) -> None:
    carrier = make_carrier(SimulatorKnobs(timeout_rate=1))
    before = await carrier.show(CELLCARD, Operator.CELLCARD)
    with pytest.raises(GatewayTimeout):
        await carrier.top_up(req("ref-lost", amount=usd(500)))
    assert GatewayTimeout.transient is True
    assert await carrier.lookup("ref-lost") is None
    assert await carrier.times_paid("ref-lost") == 0
    after = await carrier.show(CELLCARD, Operator.CELLCARD)
    assert after.balance == before.balance
    assert after.validity_end == before.validity_end
    assert after.recent_topups == ()


async def test_lost_response_after_apply_can_be_looked_up(make_carrier: CarrierFactory,
                                                          clock: ManualClock) -> None:
    carrier = make_carrier(SimulatorKnobs(lost_response_rate=1))
    before = await carrier.show(CELLCARD, Operator.CELLCARD)
    with pytest.raises(GatewayTimeout):
        await carrier.top_up(req("ref-unknown", amount=usd(500)))
    looked = await carrier.lookup("ref-unknown")
    assert looked is not None
    assert looked.status is TopUpStatus.SUCCEEDED
    assert looked.balance_after == before.balance + usd(500)
    assert looked.validity_end == clock.now() + timedelta(days=35)
    assert await carrier.times_paid("ref-unknown") == 1
    assert (await carrier.show(CELLCARD, Operator.CELLCARD)).balance == \
        before.balance + usd(500)


async def test_decline_is_a_failed_result(make_carrier: CarrierFactory) -> None:
    carrier = make_carrier(SimulatorKnobs(decline_rate=1))
    before = await carrier.show(CELLCARD, Operator.CELLCARD)
    result = await carrier.top_up(req("ref-declined", amount=usd(500)))
    assert result.status is TopUpStatus.FAILED
    assert result.failure_reason == "declined_by_operator"
    assert result.balance_after is None
    assert result.validity_end is None
    assert await carrier.times_paid("ref-declined") == 0
    after = await carrier.show(CELLCARD, Operator.CELLCARD)
    assert after.balance == before.balance
    assert after.validity_end == before.validity_end
    assert after.last_topup_at is None
    looked = await carrier.lookup("ref-declined")
    assert looked is not None
    assert looked.status is TopUpStatus.FAILED


async def test_pending_settles_after_settle_seconds_on_lookup(
        make_carrier: CarrierFactory, clock: ManualClock) -> None:
    carrier = make_carrier(SimulatorKnobs(pending_rate=1, settle_seconds=30))
    before = await carrier.show(CELLCARD, Operator.CELLCARD)
    result = await carrier.top_up(req("ref-pending", amount=usd(500)))
    assert result.status is TopUpStatus.PENDING
    assert result.balance_after is None
    assert await carrier.times_paid("ref-pending") == 1  # accepted, counts as paid

    clock.advance(timedelta(seconds=29))
    still = await carrier.lookup("ref-pending")
    assert still is not None
    assert still.status is TopUpStatus.PENDING
    assert still.provider_tx_id == result.provider_tx_id
    assert (await carrier.show(CELLCARD, Operator.CELLCARD)).balance == before.balance

    clock.advance(timedelta(seconds=1))
    settled = await carrier.lookup("ref-pending")
    assert settled is not None
    assert settled.status is TopUpStatus.SUCCEEDED
    assert settled.provider_tx_id == result.provider_tx_id
    assert settled.balance_after is not None
    assert settled.at == clock.now()
    state = await carrier.show(CELLCARD, Operator.CELLCARD)
    assert state.balance == settled.balance_after
    assert state.balance.minor >= before.balance.minor + 500 - 1  # at most a cent drained
    assert state.validity_end == settled.validity_end
    assert await carrier.times_paid("ref-pending") == 1


async def test_show_settles_due_pending_top_ups(make_carrier: CarrierFactory,
                                                clock: ManualClock) -> None:
    carrier = make_carrier(SimulatorKnobs(pending_rate=1, settle_seconds=60))
    await carrier.set_balance(SEATEL, Operator.SEATEL, usd(100))
    await carrier.top_up(req("ref-show", SEATEL, Operator.SEATEL, amount=usd(200)))
    assert (await carrier.show(SEATEL, Operator.SEATEL)).balance == usd(100)
    clock.advance(timedelta(seconds=60))
    state = await carrier.show(SEATEL, Operator.SEATEL)
    assert state.balance.minor >= 300 - 1
    assert state.last_topup_at == clock.now()
    assert state.recent_topups[0].status == TopUpStatus.SUCCEEDED.value
    looked = await carrier.lookup("ref-show")
    assert looked is not None
    assert looked.status is TopUpStatus.SUCCEEDED
    assert looked.balance_after == state.balance
    assert (await carrier.show(SEATEL, Operator.SEATEL)).balance == state.balance  # once


async def test_pending_can_settle_as_refunded(make_carrier: CarrierFactory,
                                              clock: ManualClock) -> None:
    carrier = make_carrier(SimulatorKnobs(pending_rate=1, pending_failure_rate=1,
                                          settle_seconds=30))
    await carrier.set_balance(CELLCARD, Operator.CELLCARD, usd(100))
    before = await carrier.show(CELLCARD, Operator.CELLCARD)
    result = await carrier.top_up(req("ref-refund", amount=usd(500)))
    assert result.status is TopUpStatus.PENDING
    clock.advance(timedelta(seconds=30))
    settled = await carrier.lookup("ref-refund")
    assert settled is not None
    assert settled.status is TopUpStatus.FAILED
    assert settled.failure_reason == "refunded_by_operator"
    assert settled.balance_after is None
    assert await carrier.times_paid("ref-refund") == 0
    clock.set(result.at)
    after = await carrier.show(CELLCARD, Operator.CELLCARD)
    assert after.balance == before.balance
    assert after.validity_end == before.validity_end
    assert after.last_topup_at is None


@pytest.mark.parametrize(("top_up", "reason"), [
    (req("r", amount=usd(99)), "amount_below_minimum"),
    (req("r", amount=Money(2_000_000, "KHR")), "unsupported_currency"),
    (req("r", product_id="cellcard-air-777"), "unknown_product"),
    (req("r", product_id="smart-air-500"), "product_of_another_operator"),
    (req("r"), "no_amount"),
], ids=["below-1-usd", "khr", "unknown-product", "other-operator", "no-amount"])
async def test_refused_top_ups_fail_with_a_reason(carrier: SimulatedCarrier,
                                                  top_up: TopUpRequest, reason: str) -> None:
    before = await carrier.show(CELLCARD, Operator.CELLCARD)
    result = await carrier.top_up(top_up)
    assert result.status is TopUpStatus.FAILED
    assert result.failure_reason == reason
    assert result.balance_after is None
    assert await carrier.times_paid("r") == 0
    after = await carrier.show(CELLCARD, Operator.CELLCARD)
    assert after.balance == before.balance
    assert after.validity_end == before.validity_end
    assert after.data_mb == before.data_mb


async def test_one_dollar_is_enough(carrier: SimulatedCarrier) -> None:
    result = await carrier.top_up(req("r-min", amount=usd(100)))
    assert result.status is TopUpStatus.SUCCEEDED


# -- readings -----------------------------------------------------------------------------


async def test_read_returns_a_provider_reading(carrier: SimulatedCarrier,
                                               clock: ManualClock) -> None:
    clock.advance(timedelta(hours=3))
    reading = await carrier.read(METFONE, Operator.METFONE)
    state = await carrier.show(METFONE, Operator.METFONE)
    assert isinstance(reading, LineReading)
    assert reading.source is ReadingSource.PROVIDER
    assert reading.read_at == clock.now()
    assert reading.balance == state.balance
    assert reading.data_mb == state.data_mb
    assert reading.validity_end == state.validity_end
    assert all(carrier.can_read(operator) for operator in Operator)


async def test_read_timeout(make_carrier: CarrierFactory) -> None:
    carrier = make_carrier(SimulatorKnobs(read_timeout_rate=1))
    with pytest.raises(GatewayTimeout):
        await carrier.read(METFONE, Operator.METFONE)


async def test_fault_rates_between_zero_and_one_are_random_but_seeded(
        make_carrier: CarrierFactory) -> None:
    outcomes = []
    for _ in range(2):
        carrier = make_carrier(SimulatorKnobs(read_timeout_rate=0.5), seed=7)
        run = []
        for _ in range(40):
            try:
                await carrier.read(METFONE, Operator.METFONE)
                run.append(True)
            except GatewayTimeout:
                run.append(False)
        outcomes.append(run)
    assert outcomes[0] == outcomes[1]
    assert 5 < sum(outcomes[0]) < 35


# -- concurrency --------------------------------------------------------------------------


async def _concurrent_same_reference(carrier: SimulatedCarrier, reference: str) -> None:
    results = await asyncio.gather(*(carrier.top_up(req(reference, amount=usd(100)))
                                     for _ in range(20)))
    assert {r.provider_tx_id for r in results} == {results[0].provider_tx_id}
    assert all(r.status is TopUpStatus.SUCCEEDED for r in results)
    assert await carrier.times_paid(reference) == 1


async def test_concurrent_same_reference_pays_once(carrier: SimulatedCarrier,
                                                   clock: ManualClock) -> None:
    before = await carrier.show(CELLCARD, Operator.CELLCARD)
    await _concurrent_same_reference(carrier, "ref-race")
    assert (await carrier.show(CELLCARD, Operator.CELLCARD)).balance == \
        before.balance + usd(100)


async def test_concurrent_same_reference_on_a_new_line_pays_once(
        carrier: SimulatedCarrier) -> None:
    await _concurrent_same_reference(carrier, "ref-race-new")


async def test_a_read_sees_what_show_sees_without_writing(
        db: Database, cipher: FieldCipher, carrier: SimulatedCarrier,
        clock: ManualClock) -> None:
    await carrier.set_validity(CELLCARD, Operator.CELLCARD, clock.now() + 10 * DAY)
    before = await line_row(db, cipher, CELLCARD)
    clock.advance(timedelta(hours=30))

    read = await carrier.read(CELLCARD, Operator.CELLCARD)

    assert await line_row(db, cipher, CELLCARD) == before  # a read writes nothing back
    shown = await carrier.show(CELLCARD, Operator.CELLCARD)
    assert (read.balance, read.data_mb, read.validity_end) == (
        shown.balance, shown.data_mb, shown.validity_end)
    assert read.balance is not None and read.balance.minor < before.balance_minor


async def test_a_read_settles_a_due_pending_top_up_first(make_carrier: CarrierFactory,
                                                         clock: ManualClock) -> None:
    carrier = make_carrier(SimulatorKnobs(pending_rate=1, settle_seconds=60))
    await carrier.set_balance(SEATEL, Operator.SEATEL, usd(100))
    await carrier.top_up(req("ref-read", SEATEL, Operator.SEATEL, amount=usd(200)))
    assert (await carrier.read(SEATEL, Operator.SEATEL)).balance == usd(100)  # not yet due
    clock.advance(timedelta(seconds=60))

    reading = await carrier.read(SEATEL, Operator.SEATEL)

    assert reading.balance is not None and reading.balance.minor >= 300 - 1
    looked = await carrier.lookup("ref-read")
    assert looked is not None and looked.status is TopUpStatus.SUCCEEDED


# -- reads that arrive together -----------------------------------------------------------

NUMBERS = [f"+8551234560{n}" for n in range(6)]


def count_line_lookups(db: Database) -> list[str]:
    """The SELECTs on sim_lines from now on (a read's lookup; show() locks and writes)."""
    seen: list[str] = []

    @event.listens_for(db.engine.sync_engine, "before_cursor_execute")
    def count(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if statement.lstrip().upper().startswith("SELECT") and "FROM sim_lines" in statement:
            seen.append(statement)

    return seen


async def test_reads_that_arrive_together_share_one_lookup_and_each_gets_its_line(
        db: Database, carrier: SimulatedCarrier, clock: ManualClock) -> None:
    for n, number in enumerate(NUMBERS):
        await carrier.set_balance(number, Operator.CELLCARD, usd(100 * (n + 1)))
    clock.advance(timedelta(hours=5))
    lookups = count_line_lookups(db)

    readings = await asyncio.gather(*(carrier.read(number, Operator.CELLCARD)
                                      for number in [*NUMBERS, NUMBERS[2]]))

    assert len(lookups) == 1
    assert readings[-1] == readings[2]  # the same line asked twice in one batch
    for number, reading in zip(NUMBERS, readings, strict=False):
        shown = await carrier.show(number, Operator.CELLCARD)
        assert reading.read_at == clock.now()
        assert (reading.balance, reading.data_mb, reading.validity_end) == (
            shown.balance, shown.data_mb, shown.validity_end)
    assert len({r.balance for r in readings}) == len(NUMBERS)


async def test_a_batch_with_a_new_line_and_a_settling_top_up_reads_each_right(
        make_carrier: CarrierFactory, clock: ManualClock) -> None:
    carrier = make_carrier(SimulatorKnobs(pending_rate=1, settle_seconds=60))
    await carrier.set_balance(SEATEL, Operator.SEATEL, usd(100))
    await carrier.set_balance(SMART, Operator.SMART, usd(700))
    await carrier.top_up(req("ref-batch", SEATEL, Operator.SEATEL, amount=usd(200)))
    clock.advance(timedelta(seconds=60))

    settled, new, plain = await asyncio.gather(
        carrier.read(SEATEL, Operator.SEATEL), carrier.read(METFONE, Operator.METFONE),
        carrier.read(SMART, Operator.SMART))

    assert settled.balance is not None and settled.balance.minor >= 300 - 1
    looked = await carrier.lookup("ref-batch")
    assert looked is not None and looked.status is TopUpStatus.SUCCEEDED
    first_sight = await carrier.show(METFONE, Operator.METFONE)
    assert (new.balance, new.validity_end) == (first_sight.balance, first_sight.validity_end)
    assert plain.balance is not None and 0 < plain.balance.minor <= 700


async def test_a_failed_lookup_fails_every_read_in_it_and_the_next_read_asks_again(
        db: Database, carrier: SimulatedCarrier, monkeypatch: pytest.MonkeyPatch) -> None:
    for number in NUMBERS[:3]:
        await carrier.set_balance(number, Operator.CELLCARD, usd(500))
    real = SimCarrierRepository.lines_to_read
    calls = 0

    async def fail_once(self: SimCarrierRepository, numbers: list[str],
                        now: Any) -> dict[str, tuple[SimLineRow, bool]]:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise ConnectionError("database went away")
        return await real(self, numbers, now)

    monkeypatch.setattr(SimCarrierRepository, "lines_to_read", fail_once)

    outcomes = await asyncio.gather(*(carrier.read(number, Operator.CELLCARD)
                                      for number in NUMBERS[:3]), return_exceptions=True)
    assert all(isinstance(outcome, ConnectionError) for outcome in outcomes)

    again = await carrier.read(NUMBERS[0], Operator.CELLCARD)
    assert again.balance == usd(500)
    assert calls == 2


async def test_a_lookup_answers_at_most_read_batch_lines(
        db: Database, carrier: SimulatedCarrier, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(simulated_carrier, "READ_BATCH", 2)
    for number in NUMBERS[:5]:
        await carrier.set_balance(number, Operator.CELLCARD, usd(500))
    lookups = count_line_lookups(db)

    readings = await asyncio.gather(*(carrier.read(number, Operator.CELLCARD)
                                      for number in NUMBERS[:5]))

    assert len(lookups) == 3
    assert all(reading.balance == usd(500) for reading in readings)


def test_one_carrier_reads_from_one_event_loop_after_another(
        tmp_path: Path, cipher: FieldCipher, clock: ManualClock) -> None:
    """The CLI and tests run several loops in one process: reads batch per running loop."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'loops.db'}"
    db = Database(url)
    carrier = SimulatedCarrier(db, cipher, clock)

    async def read_then_close(first: bool) -> LineReading:
        if first:
            await migrate.upgrade(db)
            await carrier.set_balance(SMART, Operator.SMART, usd(250))
        try:
            return await carrier.read(SMART, Operator.SMART)
        finally:
            await db.dispose()

    assert asyncio.run(read_then_close(True)).balance == usd(250)
    assert asyncio.run(read_then_close(False)).balance == usd(250)
