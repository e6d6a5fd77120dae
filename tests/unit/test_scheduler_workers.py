"""Two scheduler workers sweeping one PostgreSQL database at once, in small batches: every
due line is read exactly once and every due calendar run is charged exactly once (claims
with a lease and FOR UPDATE SKIP LOCKED)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from bot.clock import ManualClock
from bot.domain.phone import parse_cambodian_mobile
from bot.domain.rules import CalendarKind, Trigger
from bot.services.scheduler import SchedulerService
from storage.crypto import FieldCipher
from storage.db import Database
from storage.lines import LinesRepository
from storage.rules import RulesRepository
from storage.tables import lines
from storage.users import UsersRepository
from tests.unit.charging_world import World, check_invariants, make_world
from tests.unit.scheduler_world import FakeReadings, add_rule, scheduler

USERS, LINES_PER_USER, RULES = 100, 3, 100
FIRST_USER = 10_000
NOV_30 = datetime(2026, 11, 30, 2, 0, tzinfo=UTC)  # the first run of a rule on the 31st


@pytest.fixture
async def world(db: Database, cipher: FieldCipher, clock: ManualClock) -> World:
    if db.is_sqlite:
        pytest.skip("SQLite write transactions never overlap: one worker per database")
    return await make_world(db, cipher, clock)


async def add_many_lines(world: World) -> dict[int, list[int]]:
    """USERS users with LINES_PER_USER lines each, all due now: user -> line ids."""
    owned: dict[int, list[int]] = {}
    now = world.clock.now()
    async with world.db.write() as conn:
        for index in range(USERS * LINES_PER_USER):
            user_id = FIRST_USER + index // LINES_PER_USER
            await UsersRepository(conn).ensure(user_id, language="en", now=now)
            added = await LinesRepository(conn, world.cipher).add(
                owner_id=user_id, number=parse_cambodian_mobile(f"096{index:07d}"), now=now,
                verified_at=now)
            owned.setdefault(user_id, []).append(added.id)
    return owned


def two_workers(world: World, readings: FakeReadings | None = None,
                ) -> tuple[SchedulerService, SchedulerService]:
    return (scheduler(world, worker="worker-a", batch=20, readings=readings),
            scheduler(world, worker="worker-b", batch=20, readings=readings))


async def test_two_workers_read_every_due_line_exactly_once(world: World) -> None:
    await add_many_lines(world)
    fake = FakeReadings(world.clock)
    first, second = two_workers(world, readings=fake)

    async with asyncio.timeout(60):
        reports = await asyncio.gather(first.check_lines(), second.check_lines())

    every_line = USERS * LINES_PER_USER + len(world.lines)
    assert len(fake.reads) == every_line
    assert set(fake.reads.values()) == {1}
    assert sum(r.processed for r in reports) == every_line
    assert all(r.processed > 0 for r in reports)  # both took a share
    async with world.db.read() as conn:
        rows = (await conn.execute(select(lines.c.next_check_at, lines.c.check_claimed_until))
                ).all()
    assert len(rows) == every_line
    assert all(row.check_claimed_until is None for row in rows)  # every lease released
    assert all(row.next_check_at > world.clock.now() for row in rows)

    again = await asyncio.gather(first.check_lines(), second.check_lines())
    assert [r.processed for r in again] == [0, 0]


async def test_two_workers_charge_every_due_calendar_run_exactly_once(world: World) -> None:
    owned = await add_many_lines(world)
    rule_ids: list[int] = []
    for user_id, line_ids in list(owned.items())[:RULES]:
        await world.fund(user_id, 5000)
        added = await add_rule(world, line_ids[0], user_id, trigger=Trigger.CALENDAR,
                               calendar=CalendarKind.MONTHLY, calendar_value=31)
        assert added.next_run_at == NOV_30
        rule_ids.append(added.id)
    world.clock.set(NOV_30 + timedelta(minutes=1))
    first, second = two_workers(world)

    async with asyncio.timeout(120):
        reports = await asyncio.gather(first.run_calendar(), second.run_calendar())

    charges = await world.all_charges()
    assert sorted(c.rule_id for c in charges if c.rule_id is not None) == sorted(rule_ids)
    assert sorted(c.idempotency_key for c in charges) == sorted(
        f"rule:{rule_id}:2026-11-30" for rule_id in rule_ids)
    assert sum(r.charges for r in reports) == RULES
    assert sum(r.processed for r in reports) == RULES
    async with world.db.read() as conn:
        for rule_id in rule_ids:
            moved = await RulesRepository(conn).get(rule_id)
            assert moved is not None and moved.next_run_at == datetime(
                2026, 12, 31, 2, 0, tzinfo=UTC)
    for charge in charges:
        assert await world.carrier.times_paid(charge.reference) == 1
    await check_invariants(world, settled=True)
