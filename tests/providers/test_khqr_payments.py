"""KHQR payments are credited exactly once whatever dies when: the service with its real
Bakong adapter against the fake, on SQLite and (when available) PostgreSQL. The process is
killed inside the crediting transaction, after it committed, and between checks; a second
worker polls alongside; "I have paid" races the poller; Bakong answers 429 mid-round."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta

import pytest
from sqlalchemy import func, select

from bot.clock import ManualClock
from bot.domain.money import Money
from bot.domain.wallet import KhqrState
from bot.gateways.bakong import BakongGateway
from bot.services.charging import Checkpoint
from bot.services.khqr import LEASE, CheckOutcome, KhqrService
from bot.settings import BakongSettings
from storage.crypto import FieldCipher
from storage.db import Database
from storage.tables import khqr_invoices, ledger_entries, notifications, wallet_payments
from tests.fakes.bakong import FakeBakong
from tests.unit.charging_world import Crash, crash_at

FIVE = Money(500, "USD")


@pytest.fixture
def fake(clock: ManualClock) -> Iterator[FakeBakong]:
    with FakeBakong(clock=clock.now) as server:
        yield server


@pytest.fixture
async def gateway(fake: FakeBakong) -> AsyncIterator[BakongGateway]:
    async def no_sleep(_seconds: float) -> None:
        return None

    client = BakongGateway(fake.api_url, fake.token, sleep=no_sleep)
    yield client
    await client.aclose()


def settings(fake: FakeBakong) -> BakongSettings:
    return BakongSettings(_env_file=None, BAKONG_ACCOUNT_ID="topupbot@aclb",  # type: ignore[call-arg]
                          BAKONG_TOKEN=fake.token, BAKONG_MERCHANT_NAME="TopUp Bot",
                          BAKONG_API_URL=fake.api_url)


def service(db: Database, clock: ManualClock, cipher: FieldCipher, fake: FakeBakong,
            gateway: BakongGateway, checkpoint: Checkpoint | None = None) -> KhqrService:
    return KhqrService(db, clock, settings(fake), cipher, gateway, wallet_currency="USD",
                       admin_chat_ids=(4242,), checkpoint=checkpoint)


async def payload_of(db: Database, khqr_id: int) -> str:
    async with db.read() as conn:
        return str((await conn.execute(select(khqr_invoices.c.payload).where(
            khqr_invoices.c.id == khqr_id))).scalar_one())


async def counted(db: Database, table: object, *where: object) -> int:
    async with db.read() as conn:
        query = select(func.count()).select_from(table)  # type: ignore[arg-type]
        for condition in where:
            query = query.where(condition)  # type: ignore[arg-type]
        return int((await conn.execute(query)).scalar_one())


async def assert_credited_once(db: Database, khqr_ids: list[int]) -> None:
    """Each paid QR: one payment, one ledger entry, one receipt; the ledger sums up."""
    assert await counted(db, wallet_payments) == len(khqr_ids)
    assert await counted(db, ledger_entries) == len(khqr_ids)
    assert await counted(db, khqr_invoices, khqr_invoices.c.state == KhqrState.PAID.value) \
        == len(khqr_ids)
    assert await counted(db, notifications, notifications.c.kind == "khqr_receipt") \
        == len(khqr_ids)
    async with db.read() as conn:
        total = (await conn.execute(select(func.sum(ledger_entries.c.amount_minor)))).scalar()
    assert total == FIVE.minor * len(khqr_ids)


@pytest.mark.parametrize("point", ["credited", "settled"])
async def test_a_crash_while_crediting_then_a_restart_credits_exactly_once(
        db: Database, clock: ManualClock, cipher: FieldCipher, fake: FakeBakong,
        gateway: BakongGateway, point: str) -> None:
    dying = service(db, clock, cipher, fake, gateway, crash_at(point))
    issued = await dying.issue(555, FIVE)
    fake.pay(await payload_of(db, issued.khqr_id))
    clock.advance(timedelta(seconds=6))
    with pytest.raises(Crash):
        await dying.poll()
    if point == "credited":  # died inside the transaction: nothing of it stayed
        assert await counted(db, wallet_payments) == 0
    clock.advance(LEASE + timedelta(seconds=1))  # the dead worker's lease runs out
    restarted = service(db, clock, cipher, fake, gateway)
    for _ in range(3):
        await restarted.poll()
        clock.advance(timedelta(seconds=30))
    await assert_credited_once(db, [issued.khqr_id])


async def test_a_crash_between_checks_loses_no_qr(
        db: Database, clock: ManualClock, cipher: FieldCipher, fake: FakeBakong,
        gateway: BakongGateway) -> None:
    dying = service(db, clock, cipher, fake, gateway, crash_at("not_yet"))
    ids = [(await dying.issue(user, FIVE)).khqr_id for user in (1, 2, 3)]
    clock.advance(timedelta(seconds=6))
    with pytest.raises(Crash):
        await dying.poll()
    for khqr_id in ids:
        fake.pay(await payload_of(db, khqr_id))
    clock.advance(LEASE + timedelta(seconds=1))
    restarted = service(db, clock, cipher, fake, gateway)
    await restarted.poll()
    await assert_credited_once(db, ids)


async def test_two_workers_polling_together_credit_each_payment_once(
        db: Database, clock: ManualClock, cipher: FieldCipher, fake: FakeBakong,
        gateway: BakongGateway) -> None:
    one = service(db, clock, cipher, fake, gateway)
    two = service(db, clock, cipher, fake, gateway)
    ids = [(await one.issue(user, FIVE)).khqr_id for user in range(1, 121)]
    for khqr_id in ids:
        fake.pay(await payload_of(db, khqr_id))
    clock.advance(timedelta(seconds=6))
    first, second = await asyncio.gather(one.poll(), two.poll())
    assert first.paid + second.paid == len(ids)
    await assert_credited_once(db, ids)


async def test_i_have_paid_racing_the_poller_credits_once(
        db: Database, clock: ManualClock, cipher: FieldCipher, fake: FakeBakong,
        gateway: BakongGateway) -> None:
    khqr = service(db, clock, cipher, fake, gateway)
    issued = await khqr.issue(555, FIVE)
    fake.pay(await payload_of(db, issued.khqr_id))
    clock.advance(timedelta(seconds=6))
    status, _report = await asyncio.gather(khqr.check_now(555, issued.khqr_id), khqr.poll())
    assert status.outcome in (CheckOutcome.PAID, CheckOutcome.ALREADY_PAID)
    await assert_credited_once(db, [issued.khqr_id])


async def test_a_thousand_open_qrs_cost_twenty_bulk_calls_a_round(
        db: Database, clock: ManualClock, cipher: FieldCipher, fake: FakeBakong,
        gateway: BakongGateway) -> None:
    khqr = service(db, clock, cipher, fake, gateway)
    ids = [(await khqr.issue(user, FIVE)).khqr_id for user in range(1, 1001)]
    paid_ids = ids[::100]
    for khqr_id in paid_ids:
        fake.pay(await payload_of(db, khqr_id))
    clock.advance(timedelta(seconds=6))
    report = await khqr.poll()
    assert fake.calls("/v1/check_transaction_by_md5_list") == 20
    assert fake.calls("/v1/check_transaction_by_md5") == 0  # the list carried the details
    assert (report.checked, report.paid, report.calls) == (1000, 10, 20)
    await assert_credited_once(db, paid_ids)


async def test_429_pauses_polling_and_every_payment_is_still_credited_once(
        db: Database, clock: ManualClock, cipher: FieldCipher, fake: FakeBakong,
        gateway: BakongGateway) -> None:
    khqr = service(db, clock, cipher, fake, gateway)
    ids = [(await khqr.issue(user, FIVE)).khqr_id for user in range(1, 151)]
    for khqr_id in ids:
        fake.pay(await payload_of(db, khqr_id))
    fake.rate_limit = (2, 10)  # two calls per ten seconds: a round of three calls overruns
    clock.advance(timedelta(seconds=6))
    report = await khqr.poll()
    assert report.failures == {"rate_limited": 1} and report.paid == 100
    asked = fake.calls()
    clock.advance(timedelta(seconds=1))
    paused = await khqr.poll()  # Bakong is not asked while its Retry-After runs
    assert paused.paused and paused.calls == 0 and fake.calls() == asked
    for _ in range(5):
        clock.advance(timedelta(seconds=11))
        await khqr.poll()
    await assert_credited_once(db, ids)


async def test_a_qr_due_within_half_a_round_is_checked_in_this_round(
        db: Database, clock: ManualClock, cipher: FieldCipher, fake: FakeBakong,
        gateway: BakongGateway) -> None:
    # Rounds start a little early or late; a QR due 1 s after this round began must not wait
    # a whole round more. The first check of a new QR is due 5 s after it was issued.
    khqr = service(db, clock, cipher, fake, gateway)
    await khqr.issue(1, FIVE)
    clock.advance(timedelta(seconds=2))
    await khqr.issue(2, FIVE)
    clock.advance(timedelta(seconds=2))  # QR 1 is due in 1 s, QR 2 in 3 s (more than 2.5)
    report = await khqr.poll()
    assert report.checked == 1
    async with db.read() as conn:
        looked_at = dict((await conn.execute(select(
            khqr_invoices.c.user_id, khqr_invoices.c.last_checked_at))).all())
    assert looked_at[1] is not None and looked_at[2] is None


async def test_under_a_rate_limit_the_qrs_left_unasked_are_asked_first_next_time(
        db: Database, clock: ManualClock, cipher: FieldCipher, fake: FakeBakong,
        gateway: BakongGateway) -> None:
    khqr = service(db, clock, cipher, fake, gateway)
    for user in range(1, 151):
        await khqr.issue(user, FIVE)
    fake.rate_limit = (2, 10)  # two calls a round get an answer, the third a 429
    clock.advance(timedelta(seconds=6))
    first = await khqr.poll()
    assert (first.checked, first.failures) == (100, {"rate_limited": 1})
    clock.advance(timedelta(seconds=11))  # the pause is over: the next round asks again
    second = await khqr.poll()
    assert second.checked == 100
    async with db.read() as conn:
        never_asked = (await conn.execute(select(func.count()).where(
            khqr_invoices.c.last_checked_at.is_(None)))).scalar_one()
    assert never_asked == 0  # not the same first hundred twice


async def test_a_payment_made_before_expiry_and_found_after_it_is_paid_in_time(
        db: Database, clock: ManualClock, cipher: FieldCipher, fake: FakeBakong,
        gateway: BakongGateway) -> None:
    khqr = service(db, clock, cipher, fake, gateway)
    in_time = await khqr.issue(1, FIVE)
    late = await khqr.issue(2, FIVE)
    fake.pay(await payload_of(db, in_time.khqr_id),
             at=in_time.expires_at - timedelta(seconds=1))
    fake.pay(await payload_of(db, late.khqr_id), at=late.expires_at + timedelta(seconds=20))
    clock.advance(khqr.expiry + timedelta(seconds=30))  # no round ran in between
    report = await khqr.poll()
    assert report.paid == 2
    async with db.read() as conn:
        receipts = dict((await conn.execute(select(
            notifications.c.user_id, notifications.c.params).where(
            notifications.c.kind == "khqr_receipt"))).all())
        closed = (await conn.execute(select(notifications.c.user_id).where(
            notifications.c.kind == "khqr_closed"))).scalars().all()
    assert "paid_after" not in receipts[1]
    assert receipts[2]["paid_after"] == KhqrState.EXPIRED.value
    assert sorted(closed) == [1, 2]  # each QR's message edited once: to "paid"
