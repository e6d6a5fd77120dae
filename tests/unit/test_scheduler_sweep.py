"""The balance sweep on every backend, with a scripted readings backend: what a tick claims
and leases, what it stores, when it looks again, how it backs off a line it cannot read,
and lines tracked only from the user's own reports."""

from __future__ import annotations

import time
from datetime import datetime, timedelta

from sqlalchemy import func, select

from bot.domain.charges import ChargeState
from bot.domain.money import Money
from bot.domain.readings import LineReading, ReadingSource
from bot.domain.rules import Trigger
from bot.services.scheduler import LINE_UNREADABLE, WARNING
from storage.lines import LinesRepository
from storage.readings import ReadingsRepository
from storage.tables import line_readings
from tests.unit.charging_world import ALICE, ALICE_NUMBER, BOB, BOB_NUMBER, World
from tests.unit.scheduler_world import (
    FakeReadings,
    add_rule,
    line,
    make_due,
    queued,
    scheduler,
    warn_below,
)

BACKOFF_MINUTES = (5, 10, 20, 40, 80)  # watch.FIRST_RETRY doubling


def within(actual: timedelta, expected: timedelta, spread: float = 0.1) -> bool:
    """``actual`` is ``expected`` give or take the sweep's jitter."""
    return expected * (1 - spread) <= actual <= expected * (1 + spread)


async def next_check_in(world: World, line_id: int) -> timedelta:
    checked = await line(world, line_id)
    assert checked.next_check_at is not None
    return checked.next_check_at - world.clock.now()


async def latest_reading(world: World, line_id: int) -> LineReading | None:
    async with world.db.read() as conn:
        return await ReadingsRepository(conn).latest(line_id)


async def readings_stored(world: World, line_id: int) -> int:
    async with world.db.read() as conn:
        return int((await conn.execute(
            select(func.count()).select_from(line_readings)
            .where(line_readings.c.line_id == line_id))).scalar_one())


async def failing_checks(world: World) -> dict[str, int]:
    async with world.db.read() as conn:
        return await LinesRepository(conn, world.cipher).failing_checks()


async def advance_to_next_check(world: World, line_id: int) -> None:
    checked = await line(world, line_id)
    assert checked.next_check_at is not None
    world.clock.set(checked.next_check_at)


async def test_a_tick_reads_each_due_line_once_and_stores_the_reading_with_its_source(
        world: World, fake: FakeReadings) -> None:
    alice, bob = world.lines[ALICE], world.lines[BOB]
    await warn_below(world, alice, 100)
    await warn_below(world, bob, 100)
    fake.script(ALICE_NUMBER.e164).balance_minor = 50
    fake.script(BOB_NUMBER.e164).balance_minor = 900
    sweep = scheduler(world, readings=fake)

    report = await sweep.check_lines()

    assert report.processed == 2
    assert fake.reads == {ALICE_NUMBER.e164: 1, BOB_NUMBER.e164: 1}
    stored = await latest_reading(world, alice)
    assert stored is not None
    assert (stored.source, stored.balance, stored.read_at) == (
        ReadingSource.PROVIDER, Money(50, "USD"), world.clock.now())
    # Low: looked at again within the half hour; healthy: in about six hours.
    assert within(await next_check_in(world, alice), timedelta(minutes=30))
    assert within(await next_check_in(world, bob), timedelta(hours=6))

    again = await sweep.check_lines()  # nothing is due yet: nothing is read
    assert again.processed == 0
    assert sum(fake.reads.values()) == 2

    world.clock.advance(timedelta(minutes=40))
    later = await sweep.check_lines()  # only the low line is due by now
    assert later.processed == 1
    assert fake.reads == {ALICE_NUMBER.e164: 2, BOB_NUMBER.e164: 1}
    assert await readings_stored(world, alice) == 2


async def test_a_claimed_line_is_leased_until_the_lease_runs_out(
        world: World, fake: FakeReadings) -> None:
    now = world.clock.now()
    lease = timedelta(minutes=2)
    async with world.db.write() as conn:  # a worker claims both lines, then dies
        claimed = await LinesRepository(conn, world.cipher).claim_due_checks(now, now + lease, 10)
    assert sorted(c.id for c in claimed) == sorted(world.lines.values())
    async with world.db.write() as conn:
        assert await LinesRepository(conn, world.cipher).claim_due_checks(
            now, now + lease, 10) == []
    sweep = scheduler(world, readings=fake, lease=lease)

    during = await sweep.check_lines()
    world.clock.advance(lease)
    after = await sweep.check_lines()

    assert during.processed == 0
    assert after.processed == 2
    assert sorted(fake.reads.values()) == [1, 1]
    for line_id in world.lines.values():
        assert await next_check_in(world, line_id) > timedelta(hours=5)


async def test_a_line_whose_gateway_keeps_failing_backs_off_and_the_user_is_told_once(
        world: World, fake: FakeReadings) -> None:
    alice = world.lines[ALICE]
    fake.script(ALICE_NUMBER.e164).fails = True
    sweep = scheduler(world, readings=fake)

    for attempt, minutes in enumerate(BACKOFF_MINUTES, start=1):
        report = await sweep.check_lines()
        assert report.failures["GatewayTimeout"] == 1, attempt
        checked = await line(world, alice)
        assert checked.check_failures == attempt
        assert within(await next_check_in(world, alice), timedelta(minutes=minutes)), attempt
        told = await queued(world, LINE_UNREADABLE)
        assert len(told) == (0 if attempt < 3 else 1), attempt
        assert checked.check_failure_told is (attempt >= 3)
        await advance_to_next_check(world, alice)

    [notice] = await queued(world, LINE_UNREADABLE)
    assert notice["user_id"] == ALICE
    params = notice["params"]
    assert isinstance(params, dict)
    assert (params["line_id"], params["error"]) == (alice, "GatewayTimeout")
    assert await latest_reading(world, alice) is None  # a failed read stores nothing
    assert await failing_checks(world) == {"GatewayTimeout": 1}

    fake.script(ALICE_NUMBER.e164).fails = False
    recovered = await sweep.check_lines()

    assert recovered.processed == 1 and not recovered.failures
    checked = await line(world, alice)
    assert (checked.check_failures, checked.check_failure_told) == (0, False)
    assert within(await next_check_in(world, alice), timedelta(hours=6))
    assert await failing_checks(world) == {}
    assert await latest_reading(world, alice) is not None

    # A new run of failures is a new outage: the user hears about it once more.
    fake.script(ALICE_NUMBER.e164).fails = True
    for _ in range(4):
        await advance_to_next_check(world, alice)
        await sweep.check_lines()
    assert (await line(world, alice)).check_failures == 4
    assert len(await queued(world, LINE_UNREADABLE)) == 2


async def test_a_read_that_hangs_past_the_read_timeout_counts_as_a_timeout(
        world: World, fake: FakeReadings) -> None:
    alice, bob = world.lines[ALICE], world.lines[BOB]
    fake.script(ALICE_NUMBER.e164).hangs = True
    fake.hang_seconds = 5.0
    sweep = scheduler(world, readings=fake, read_timeout=timedelta(milliseconds=50))

    began = time.monotonic()
    report = await sweep.check_lines()
    elapsed = time.monotonic() - began

    assert elapsed < 2.0  # the hanging read was cut off, not waited for
    assert report.processed == 2
    assert report.failures == {"timeout": 1}
    assert (await line(world, alice)).check_failures == 1
    assert within(await next_check_in(world, alice), timedelta(minutes=5))
    assert await failing_checks(world) == {"timeout": 1}
    assert await latest_reading(world, alice) is None
    assert await latest_reading(world, bob) is not None  # the other line was not held up
    assert (await line(world, bob)).check_failures == 0


async def test_a_line_the_backend_cannot_read_is_judged_on_the_users_latest_report(
        world: World, fake: FakeReadings) -> None:
    alice = world.lines[ALICE]
    fake.unreadable = {ALICE_NUMBER.operator}
    world.clock.advance(timedelta(hours=1))
    reported_at: datetime = world.clock.now() - timedelta(minutes=10)
    async with world.db.write() as conn:
        await ReadingsRepository(conn).add(alice, LineReading(
            source=ReadingSource.USER, read_at=reported_at, balance=Money(30, "USD")),
            recorded_at=reported_at)
    await warn_below(world, alice, 100)
    sweep = scheduler(world, readings=fake)

    report = await sweep.check_lines()

    assert report.processed == 2
    assert ALICE_NUMBER.e164 not in fake.reads
    assert fake.reads == {BOB_NUMBER.e164: 1}
    [warning] = await queued(world, WARNING)
    params = warning["params"]
    assert isinstance(params, dict)
    assert (params["warning"], params["source"], params["read_at"], params["balance_minor"]) == (
        "low_balance", "user", reported_at.isoformat(), 30)
    assert warning["dedupe_key"] == f"warn:low_balance:{alice}:1"
    assert await readings_stored(world, alice) == 1  # the report is used, not copied
    assert within(await next_check_in(world, alice), timedelta(minutes=30))
    assert (await line(world, alice)).check_failures == 0


async def report_balance(world: World, line_id: int, cents: int, at: datetime) -> None:
    """The user types the balance the carrier's SMS told them."""
    async with world.db.write() as conn:
        await ReadingsRepository(conn).add(line_id, LineReading(
            source=ReadingSource.USER, read_at=at, balance=Money(cents, "USD")), recorded_at=at)


async def test_a_rule_on_a_line_the_backend_cannot_read_fires_on_the_users_report(
        world: World, fake: FakeReadings) -> None:
    alice = world.lines[ALICE]
    fake.unreadable = {ALICE_NUMBER.operator}
    await world.fund(ALICE, 5000)
    rule = await add_rule(world, alice, ALICE, trigger=Trigger.BALANCE_BELOW, threshold=100)
    sweep = scheduler(world, readings=fake)
    await sweep.check_lines()  # nothing known about the line yet: nothing to do
    assert await world.all_charges() == []

    world.clock.advance(timedelta(hours=1))
    await report_balance(world, alice, 40, world.clock.now())
    await make_due(world, alice)
    report = await sweep.check_lines()

    assert report.charges == 1
    [charge] = await world.all_charges()
    assert (charge.idempotency_key, charge.state) == (
        f"rule:{rule.id}:episode:1", ChargeState.SUCCEEDED)
    assert ALICE_NUMBER.e164 not in fake.reads


async def test_a_failed_read_decides_nothing_on_old_figures(
        world: World, fake: FakeReadings) -> None:
    alice = world.lines[ALICE]
    await world.fund(ALICE, 5000)
    await warn_below(world, alice, 100)
    await add_rule(world, alice, ALICE, trigger=Trigger.BALANCE_BELOW, threshold=100)
    sweep = scheduler(world, readings=fake)
    await sweep.check_lines()  # read fine: 1000, healthy
    world.clock.advance(timedelta(hours=1))
    await report_balance(world, alice, 40, world.clock.now())  # newer, and low
    fake.script(ALICE_NUMBER.e164).fails = True
    await make_due(world, alice)

    report = await sweep.check_lines()

    assert report.failures == {"GatewayTimeout": 1}
    assert (report.warnings, report.charges) == (0, 0)
    assert await queued(world, WARNING) == []
    assert await world.all_charges() == []
    checked = await line(world, alice)
    assert not checked.episodes.balance_low
    assert within(await next_check_in(world, alice), timedelta(minutes=5))
