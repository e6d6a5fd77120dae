"""The daily reconciliation against the Reloadly fake: a day whose charges all match has no
difference; each kind of difference is found, printed and stored; a run again replaces the
day's run; the hourly job reconciles yesterday once, after 01:00."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import update

from bot.cli_providers import format_reconciliation
from bot.clock import ManualClock
from bot.domain.money import Money
from bot.domain.operators import Operator
from bot.gateways.topup import TopUpRequest
from bot.services.charging import Requested
from bot.services.reconciliation import ReconciliationService
from storage.crypto import FieldCipher
from storage.db import Database
from storage.reconciliation import ReconciliationRepository
from storage.tables import charges
from tests.fakes import reloadly
from tests.providers.backends import Backend, reloadly_fake
from tests.unit.charging_world import ALICE, World, make_world, usd

ZONE = ZoneInfo("Asia/Phnom_Penh")


@pytest.fixture
async def backend(clock: ManualClock) -> AsyncIterator[Backend]:
    clock.set(datetime(2026, 12, 6, 3, 0, tzinfo=UTC))  # 10:00 in Phnom Penh
    async with reloadly_fake(clock) as chosen:
        yield chosen


@pytest.fixture
async def world(db: Database, cipher: FieldCipher, clock: ManualClock,
                backend: Backend) -> World:
    made = await make_world(db, cipher, clock, provider=backend.provider,
                            times_paid=backend.times_paid)
    await made.fund(ALICE, 10_000)
    return made


def reconciler(world: World, backend: Backend) -> ReconciliationService:
    return ReconciliationService(world.db, world.cipher, backend.provider,  # type: ignore[arg-type]
                                 world.clock, backend="reloadly", zone=ZONE)


async def top_up(world: World, nonce: str, national: str) -> int:
    line = await world.add_line(ALICE, national)
    asked = await world.service().request_manual(ALICE, line, usd(500), None, nonce)
    assert isinstance(asked, Requested)
    await world.service().approve(ALICE, asked.charge.id)
    return asked.charge.id


async def test_a_day_that_matches_has_no_differences(world: World, backend: Backend) -> None:
    await top_up(world, "a", "010234501")
    await top_up(world, "b", "010234502")

    report = await reconciler(world, backend).reconcile(world.clock.now().astimezone(ZONE)
                                                        .date())

    assert (report.ours, report.theirs, report.differences) == (2, 2, [])


async def test_every_kind_of_difference_is_found_and_stored(
        world: World, backend: Backend, clock: ManualClock) -> None:
    fine = await top_up(world, "fine", "010234501")
    refunded = await top_up(world, "refunded", "010234502")
    dearer = await top_up(world, "dearer", "010234503")
    vanished = await top_up(world, "vanished", "010234504")
    fake = backend.fake
    assert isinstance(fake, reloadly.FakeReloadly)
    # Theirs without ours: someone used our account with a reference we never made.
    await backend.provider.top_up(TopUpRequest(
        reference="tb-not-ours", phone_e164="+85510234505", operator=Operator.SMART,
        amount=Money(200, "USD")))
    refund = fake.transaction_by_reference((await world.charge(refunded)).reference)
    assert refund is not None
    fake.settle(refund.id, "REFUNDED")  # succeeded here, refunded there
    async with world.db.write() as conn:  # ours says $7, theirs $5
        await conn.execute(update(charges).where(charges.c.id == dearer)
                           .values(amount_minor=700))
        await conn.execute(update(charges).where(charges.c.id == vanished)
                           .values(reference="tb-never-sent"))

    day = clock.now().astimezone(ZONE).date()
    report = await reconciler(world, backend).reconcile(day)

    kinds = sorted((d.kind, d.charge_id or 0) for d in report.differences)
    # The vanished charge's old reference is, at the provider, a top-up we no longer know.
    assert kinds == sorted([("unknown_to_us", 0), ("unknown_to_us", 0),
                            ("status_mismatch", refunded), ("amount_mismatch", dearer),
                            ("missing_at_provider", vanished)])
    assert fine not in {d.charge_id for d in report.differences}
    async with world.db.read() as conn:
        stored = await ReconciliationRepository(conn).run_for("reloadly", day.isoformat())
    assert stored is not None
    assert sorted((d.kind, d.charge_id or 0) for d in stored.differences) == kinds
    printed = "\n".join(format_reconciliation(report))
    assert "5 differences" in printed and "amount_mismatch" in printed and "7.00 USD" in printed

    # Fixed, and run again: the day's run is replaced.
    async with world.db.write() as conn:
        await conn.execute(update(charges).where(charges.c.id == dearer)
                           .values(amount_minor=500))
    again = await reconciler(world, backend).reconcile(day)
    assert len(again.differences) == 4
    async with world.db.read() as conn:
        stored = await ReconciliationRepository(conn).run_for("reloadly", day.isoformat())
    assert stored is not None and len(stored.differences) == 4


async def test_the_hourly_job_reconciles_yesterday_once_after_one_in_the_morning(
        world: World, backend: Backend, clock: ManualClock) -> None:
    await top_up(world, "yesterday", "010234501")
    service = reconciler(world, backend)
    clock.set(datetime(2026, 12, 6, 17, 30, tzinfo=UTC))  # 00:30 on the 7th, local
    assert await service.reconcile_yesterday_if_due() is None  # too early
    clock.advance(timedelta(hours=1))  # 01:30

    report = await service.reconcile_yesterday_if_due()

    assert report is not None and str(report.day) == "2026-12-06"
    assert (report.ours, report.theirs) == (1, 1)
    assert await service.reconcile_yesterday_if_due() is None  # done: stored
