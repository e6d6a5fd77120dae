"""What the scheduler tests share: the charging world plus a SchedulerService over it."""

from __future__ import annotations

import random
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import select, update

from bot.domain.money import Money
from bot.domain.rules import Approval, CalendarKind, RuleSpec, RuleStatus, Trigger, first_run_at
from bot.services.scheduler import SchedulerService, SweepSettings
from storage.lines import LineRecord, LinesRepository
from storage.rules import RuleRecord, RulesRepository
from storage.tables import lines, notifications
from tests.unit.charging_world import ALICE_NUMBER, World, usd

ZONE = ZoneInfo("Asia/Phnom_Penh")


def scheduler(world: World, *, worker: str = "test", batch: int = 500,
              readings: object | None = None, **settings: object) -> SchedulerService:
    return SchedulerService(
        world.db, world.cipher, readings or world.carrier,  # type: ignore[arg-type]
        world.service(), world.clock, default_zone=ZONE,
        settings=SweepSettings(worker=worker, batch=batch, **settings),  # type: ignore[arg-type]
        rng=random.Random(1))


async def set_balance(world: World, cents: int) -> None:
    await world.carrier.set_balance(ALICE_NUMBER.e164, ALICE_NUMBER.operator, usd(cents))


async def warn_below(world: World, line_id: int, cents: int | None,
                     data_mb: int | None = None) -> None:
    async with world.db.write() as conn:
        await LinesRepository(conn, world.cipher).set_warnings(
            line_id, balance_minor=cents, data_mb=data_mb, now=world.clock.now())


async def line(world: World, line_id: int) -> LineRecord:
    async with world.db.read() as conn:
        found = await LinesRepository(conn, world.cipher).get(line_id)
    assert found is not None
    return found


async def make_due(world: World, line_id: int | None = None) -> None:
    """Every line (or one) due for a check now."""
    query = update(lines).values(next_check_at=world.clock.now())
    if line_id is not None:
        query = query.where(lines.c.id == line_id)
    async with world.db.write() as conn:
        await conn.execute(query)


async def add_rule(world: World, line_id: int, owner: int, *, trigger: Trigger,
                   approval: Approval = Approval.AUTO, cap: int = 2000, amount: int = 500,
                   threshold: int | None = None, days_before: int | None = None,
                   calendar: CalendarKind | None = None, calendar_value: int | None = None,
                   ) -> RuleRecord:
    spec = RuleSpec(trigger=trigger, monthly_cap=usd(cap), approval=approval,
                    amount=usd(amount), calendar=calendar, calendar_value=calendar_value,
                    threshold=Money(threshold, "USD") if threshold is not None else None,
                    days_before=days_before)
    async with world.db.write() as conn:
        return await RulesRepository(conn).add(
            line_id=line_id, owner_id=owner, spec=spec, now=world.clock.now(),
            status=RuleStatus.ACTIVE, next_run_at=first_run_at(spec, world.clock.now(), ZONE))


async def rule(world: World, rule_id: int) -> RuleRecord:
    async with world.db.read() as conn:
        found = await RulesRepository(conn).get(rule_id)
    assert found is not None
    return found


async def queued(world: World, kind: str) -> list[dict[str, object]]:
    async with world.db.read() as conn:
        rows = await conn.execute(select(notifications).where(notifications.c.kind == kind)
                                  .order_by(notifications.c.id))
        return [dict(row) for row in rows.mappings()]


def at(world: World, **delta: float) -> datetime:
    return world.clock.now() + timedelta(**delta)
